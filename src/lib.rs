//! fitbit-proxy: an authenticating, pacing reverse proxy for the Fitbit Web API.
//!
//! Internal services send plain HTTP to the proxy; it attaches an OAuth 2.0
//! access token obtained with the client-credentials grant, paces requests
//! to the application's quota, and forwards them to the upstream, streaming
//! the answer back.
//!
//! ```text
//!  client ──► server.rs        allow-list, max_connections, TLS (tls.rs), first-bytes
//!                              deadline, HTTP/1.1 + HTTP/2 (hyper-util auto), draining;
//!             io_deadline.rs   idle connections, clients that stop reading
//!             stack.rs         the layer order, written once:
//!             ├─ access.rs     x-request-id, request metrics, access log
//!             ├─ respond.rs    errors → Fitbit-shaped 4xx/5xx + x-fitbit-proxy-error
//!             ├─ guard.rs      CONNECT, absolute-form, deny/allow paths (paths.rs),
//!             │                body limit and idle timeout (deadline.rs), hop-by-hop,
//!             │                client credentials, forwarding-identity fields (headers.rs)
//!             ├─ token/        Bearer attach + replay after a revoked token (layer.rs),
//!             │                lock-free cache (mod.rs), background refresher
//!             │                (refresh.rs), client-credentials exchange (exchange.rs)
//!             ├─ pacing/       slot wait or refusal, learning from answers (layer.rs),
//!             │                GCRA pace + FIFO line (pacer.rs), budget (budget.rs),
//!             │                rate-limit headers (headers.rs), tokio clock (clock.rs)
//!             └─ upstream.rs   pooled rustls client, authority rewrite, response body
//!                              idle timeout (deadline.rs) ──► upstream
//! ```
//!
//! `config/` turns `proxy.toml` into a validated [`Config`]; `fitbit.rs`
//! holds everything Fitbit-specific; `sim/` is the simulated Fitbit API used
//! by the tests and the `demo` and `simulate` commands. Beside the stack,
//! `admin.rs` serves `/healthz`, `/readyz` and `/metrics` (`metrics.rs`) on
//! `admin.addr`; `supervise.rs` restarts the token refresher should it panic.

mod body;
pub mod config;
mod error;
pub mod inbound;
pub mod layers;
pub mod ops;
pub mod pacing;
pub mod profile;
pub mod sim;
pub mod stack;
pub mod token;
pub mod upstream;

pub use body::Body;
pub use error::{BoxError, ProxyError};

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use config::Config;

use ops::supervise::AbortOnDrop;
use ops::{admin, metrics};
use token::{Exchange, TokenSource};

/// Why the proxy could not run (as opposed to a bad config, caught earlier).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] upstream::ClientBuildError),
    #[error(transparent)]
    Tls(#[from] inbound::tls::TlsError),
    #[error(transparent)]
    AdminBind(#[from] admin::AdminBindError),
}

/// Runs the proxy on `listener` until `shutdown` resolves, then drains.
/// Binds `admin.addr` itself; failing that is an error.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let admin = admin::bind(&config.admin).await?;
    run_with_admin(listener, admin, config, shutdown).await
}

/// [`run`] with the admin listener bound by the caller (`None`: disabled).
pub async fn run_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(metrics::Metrics::new());
    let client = upstream::build_client(&config.upstream)?;
    let inbound_tls = config
        .listen
        .tls
        .as_ref()
        .map(inbound::tls::acceptor)
        .transpose()?;
    // One bound for a token fetch and for a request waiting on one.
    let fetch_timeout = config.upstream.request_timeout;
    let exchange = Exchange::new(client.clone(), &config.credentials, fetch_timeout);
    let tokens = TokenSource::new(fetch_timeout);
    let margin = config.credentials.refresh_before_expiry;
    let refresher = AbortOnDrop(tokens.spawn_refresher(exchange, margin, Arc::clone(&metrics)));
    let health = admin::Health::new(Arc::clone(&tokens));
    let admin =
        admin.map(|l| AbortOnDrop(admin::spawn(l, Arc::clone(&health), Arc::clone(&metrics))));
    let shutdown = health.drain_on(shutdown);
    let pacer = pacing::Pacer::new(&config.rate_limit);
    let refused = stack::refusal(Arc::clone(&metrics));
    let service = stack::build(&config, client, tokens, pacer, metrics);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, upstream = %config.upstream.url, "proxy listening");
    }
    inbound::serve(
        listener,
        service,
        refused,
        &config.listen,
        inbound_tls,
        shutdown,
    )
    .await;
    drop(refresher);
    drop(admin);
    Ok(())
}
