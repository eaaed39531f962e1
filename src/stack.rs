//! The only place the layers are put together; their order is the order
//! below, outermost first. Every box of the diagram in `lib.rs` is one
//! `.layer(…)` line here.

use std::sync::Arc;

use tower::ServiceBuilder;

use crate::access::AccessLayer;
use crate::config::Config;
use crate::guard::{Admission, GuardLayer};
use crate::metrics::Metrics;
use crate::pacing::{Pacer, PacingLayer};
use crate::paths::PathRules;
use crate::respond::RespondLayer;
use crate::server::ConnectionService;
use crate::token::{AuthLayer, TokenSource};
use crate::upstream::{HttpClient, Upstream};

/// Builds the per-request stack. It is cloned for every request (hyper-util
/// does so), so everything requests share sits behind an `Arc` in a layer.
pub fn build(
    cfg: &Config,
    client: HttpClient,
    tokens: Arc<TokenSource>,
    pacer: Arc<Pacer>,
    metrics: Arc<Metrics>,
) -> impl ConnectionService {
    let admission = Admission {
        rules: PathRules::new(
            &cfg.upstream.deny_paths,
            cfg.upstream.allow_paths.as_deref(),
        ),
        upstream: cfg
            .upstream
            .url
            .authority()
            .cloned()
            .expect("config validated upstream.url has a host"),
        upstream_scheme: cfg
            .upstream
            .url
            .scheme()
            .cloned()
            .unwrap_or(http::uri::Scheme::HTTPS),
        hosts: cfg.listen.hosts.clone(),
        max_request_body: cfg.listen.max_request_body,
        body_idle_timeout: cfg.listen.header_read_timeout,
    };
    ServiceBuilder::new()
        // Request id, metrics and the access log, for every answer.
        .layer(AccessLayer::new(Arc::clone(&metrics)))
        // Errors from any layer below become Fitbit-shaped answers (SPEC §7).
        .layer(RespondLayer)
        // Refuse what must never leave; strip hop-by-hop and client credentials.
        .layer(GuardLayer::new(admission))
        // Attach the Bearer token, waiting only when none is valid.
        .layer(AuthLayer::new(tokens))
        // Wait for a pacing slot (or be refused at once); learn from the answer.
        // Inside auth, so a replay after a revoked token is paced too.
        .layer(PacingLayer::new(pacer, Arc::clone(&metrics)))
        // Send to upstream.url over the pooled client; stream the answer back.
        .service(Upstream::new(client, &cfg.upstream))
}
