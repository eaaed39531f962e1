//! fitbit-proxy: an authenticating, pacing reverse proxy for the Fitbit Web API.
//!
//! Internal services send plain HTTP to the proxy; it attaches an OAuth 2.0
//! access token obtained with the client-credentials grant, paces requests
//! to the application's quota, and forwards them to the upstream, streaming
//! the answer back. Each box below is the folder or file of that name.
//!
//! ```text
//!  client
//!    │
//!  inbound/          accept.rs: allow-list, max_connections, first-bytes deadline,
//!    │               h1 / h2c / TLS (tls.rs), draining; connection.rs: HTTP/1 parked
//!    │               between requests, HTTP/2 (rapid_reset.rs); deadline.rs: idle
//!    │               connections, clients that stop reading
//!    ▼
//!  stack.rs          the layer order, written once (and the allow-list refusal):
//!  ├─ layers/        access.rs: request id, metrics, access log
//!  │                 respond.rs: errors (error.rs) → the proxy's own answers
//!  │                 guard.rs: CONNECT, absolute-form, Host, paths (paths.rs), body
//!  │                 limit and idle bound (body_timeout.rs), hop-by-hop and client
//!  │                 credentials stripped (hop_by_hop.rs)
//!  ├─ token/         layer.rs: Bearer attach, one replay after a revoked token;
//!  │                 mod.rs: lock-free cache; refresh.rs: background refresher;
//!  │                 exchange.rs: the client-credentials request
//!  ├─ pacing/        layer.rs: wait for a slot or be refused, learn from answers;
//!  │                 pacer.rs: GCRA pace + FIFO line; budget.rs: the quota window;
//!  │                 dialect.rs: rate-limit headers; clock.rs: tokio-time clock
//!  └─ upstream/      mod.rs: authority rewrite; client.rs: per-origin connections,
//!    │               driven on the request's own task (conn.rs), idle ones in
//!    │               pool.rs; retry.rs: one retry of a stale connection;
//!    │               answer.rs: checks on the answer
//!    ▼
//!  upstream API
//!
//!  beside the stack:
//!  config/           proxy.toml → validated Config, every problem at once
//!  profile/          what one API's conventions decide (fitbit.rs: header names,
//!                    token lifetimes, error shape)
//!  ops/              admin.rs: /healthz /readyz /metrics; metrics.rs; logging.rs;
//!                    supervise.rs: restarts the token refresher after a panic
//!  sim/              the simulated Fitbit API for tests, `demo` (demo.rs), `simulate`
//!  body.rs           the one body type of both directions
//! ```
//!
//! [`run`] puts the boxes together: it builds the upstream client, the token
//! source and its refresher, the pacer and the admin listener, then serves
//! the stack until shutdown.

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
