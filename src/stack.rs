//! The only place the layers are put together; their order is the order
//! below, outermost first. Every box of the diagram in `lib.rs` is one
//! `.layer(…)` line here.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;

use http::header::CONNECTION;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use tower::layer::util::{Identity, Stack};
use tower::{Service, ServiceBuilder};

use crate::body::Body;
use crate::config::Config;
use crate::error::ProxyError;
use crate::inbound::ConnectionService;
use crate::layers::access::AccessLayer;
use crate::layers::caller::Identify;
use crate::layers::guard::{Admission, GuardLayer};
use crate::layers::paths::PathRules;
use crate::layers::respond::{self, Answers, RespondLayer};
use crate::ops::metrics::Metrics;
use crate::pacing::{Pacer, PacingLayer};
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
    layers(cfg, tokens, pacer, metrics)
        // Send to upstream.url over the pooled client; stream the answer back.
        .service(Upstream::new(client, &cfg.upstream))
}

/// Every layer of the stack, outermost first, in front of any innermost
/// service (the upstream client; an in-memory one in the benches).
pub type Layers = Stack<
    PacingLayer,
    Stack<AuthLayer, Stack<GuardLayer, Stack<RespondLayer, Stack<AccessLayer, Identity>>>>,
>;

/// The layers of [`build`], in their order, without the upstream.
pub fn layers(
    cfg: &Config,
    tokens: Arc<TokenSource>,
    pacer: Arc<Pacer>,
    metrics: Arc<Metrics>,
) -> ServiceBuilder<Layers> {
    ServiceBuilder::new()
        // Request id, the caller (its header taken off), metrics and the
        // access log, for every answer.
        .layer(AccessLayer::new(Arc::clone(&metrics)).identifying(Identify::of(&cfg.callers)))
        // Errors from any layer below become the proxy's own answers.
        .layer(RespondLayer::new(Answers::of(cfg)))
        // Refuse what must never leave; strip hop-by-hop and client credentials.
        .layer(GuardLayer::new(admission(cfg)))
        // Attach the Bearer token, waiting only when none is valid.
        .layer(AuthLayer::new(tokens))
        // Wait for a pacing slot (or be refused at once); learn from the answer.
        // Inside auth, so a replay after a revoked token is paced too.
        .layer(PacingLayer::new(pacer, metrics))
}

/// What the guard checks requests against.
fn admission(cfg: &Config) -> Admission {
    Admission {
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
    }
}

/// The stack for requests from a source outside `listen.allow`: refused
/// with 403 and `Connection: close`, and like every other answer given a
/// request id, counted and logged by the access layer.
pub fn refusal(metrics: Arc<Metrics>) -> impl ConnectionService {
    refusal_in(Answers::default(), metrics)
}

/// [`refusal`] in the shape `answers` gives the proxy's own answers.
pub fn refusal_in(answers: Answers, metrics: Arc<Metrics>) -> impl ConnectionService {
    ServiceBuilder::new()
        .layer(AccessLayer::new(metrics))
        .service_fn(move |req| refuse_source(req, answers))
}

fn refuse_source(
    _req: Request<Incoming>,
    answers: Answers,
) -> std::future::Ready<Result<Response<Body>, Infallible>> {
    let mut res = respond::answer(
        &ProxyError::Forbidden("this source address is not in listen.allow"),
        answers,
    );
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    std::future::ready(Ok(res))
}

/// The stack as last built: a reload builds a new one and stores it in the
/// cell; every request takes the one current when it arrives (on open
/// connections too), and a request under way keeps the one it started
/// with. `arc-swap` makes the per-request read a few atomic operations,
/// never a lock.
pub struct Current<S> {
    cell: Arc<ArcSwap<S>>,
    /// The stack `poll_ready` was asked of, for the `call` that follows.
    ready: Option<S>,
}

impl<S> Current<S> {
    pub fn new(cell: Arc<ArcSwap<S>>) -> Self {
        Current { cell, ready: None }
    }
}

impl<S> Clone for Current<S> {
    fn clone(&self) -> Self {
        Current::new(Arc::clone(&self.cell))
    }
}

impl<S, Req> Service<Req> for Current<S>
where
    S: Service<Req> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let cell = &self.cell;
        self.ready
            .get_or_insert_with(|| S::clone(&cell.load()))
            .poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        let mut stack = self
            .ready
            .take()
            .unwrap_or_else(|| S::clone(&self.cell.load()));
        stack.call(req)
    }
}
