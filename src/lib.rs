//! fitbit-proxy: an authenticating, pacing reverse proxy for the Fitbit Web API
//! and any other OAuth 2.0 client-credentials API with a request quota.
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
//!    │               connections, clients that stop reading; observe.rs: open
//!    │               connections, each request's peer; refusal.rs: the proxy's
//!    │               answer to HTTP/1 heads the parser refuses; workers.rs: the
//!    │               serving threads, one current-thread runtime each
//!    ▼
//!  stack.rs          the layer order, written once (and the allow-list refusal):
//!  ├─ layers/        access.rs: request id, caller (caller.rs), metrics, access log
//!  │                 respond.rs: errors (error.rs) → the proxy's own answers
//!  │                 guard.rs: CONNECT, absolute-form, Host, paths (paths.rs), body
//!  │                 limit and idle bound (body_timeout.rs), hop-by-hop and client
//!  │                 credentials stripped (hop_by_hop.rs)
//!  ├─ token/         layer.rs: Bearer attach, one replay after a revoked token;
//!  │                 mod.rs: lock-free cache; refresh.rs: background refresher;
//!  │                 exchange.rs: the client-credentials request
//!  ├─ pacing/        layer.rs: wait for a slot or be refused, learn from answers;
//!  │                 pacer.rs: GCRA pace, a line in weighted fair order among
//!  │                 callers (fair.rs); budgets.rs: one budget per
//!  │                 quota policy (budget.rs: a window of any length; sliding.rs:
//!  │                 without quota headers); dialect/: the rate-limit headers of
//!  │                 each dialect, and the proxy's own (own.rs); clock.rs, wallclock.rs:
//!  │                 tokio-time clocks
//!  └─ upstream/      mod.rs: authority rewrite; client.rs: per-origin connections,
//!    │               driven on the request's own task (conn.rs), idle ones in
//!    │               pool.rs; retry.rs: one retry of a stale connection;
//!    │               answer.rs: checks on the answer
//!    ▼
//!  upstream API
//!
//!  beside the stack:
//!  config/           proxy.toml → validated Config, every problem at once
//!  profile/          what one API's conventions decide: URLs, token lifetimes,
//!                    header dialect, error shape (fitbit.rs, the default;
//!                    generic.rs: problem details)
//!  ops/              admin.rs: the admin port (/healthz /readyz /metrics, the status
//!                    page of status/ and /status.json); health.rs: readiness;
//!                    metrics.rs (+ callers.rs: the callers with their own series,
//!                    history.rs: sends per minute, process.rs: the
//!                    process_* metrics); logging.rs (+ log_line.rs: the access
//!                    line written by hand); reload.rs: SIGHUP and secret or
//!                    TLS files changed on disk reload the config in place;
//!                    supervise.rs: restarts the token refresher after a panic;
//!                    failpoints.rs: fault injection for the tests (the
//!                    `failpoints` feature only)
//!  shared/           Redis, for replicas on one client id: token.rs: one token for
//!                    all (asked by token/refresh.rs before it fetches); client.rs:
//!                    connection, timeouts, breaker.rs; seal.rs; scripts.rs (Lua);
//!                    budget/: one paced budget for all (the pacer's `Remote`), its
//!                    Lua (lua.rs) and the fallback share (state.rs)
//!  sim/              the simulated API (every dialect) for tests, `demo` (demo.rs),
//!                    `simulate`
//!  body.rs           the one body type of both directions
//! ```
//!
//! [`run`] puts the boxes together: it builds the upstream client, the token
//! source and its refresher, the pacer and the admin listener, then serves
//! the stack until shutdown; a reload (`ops/reload.rs`) hands a new config
//! to the same parts without stopping any of them.

mod body;
pub mod config;
mod error;
pub mod inbound;
pub mod layers;
pub mod ops;
pub mod pacing;
pub mod profile;
pub mod shared;
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
use ops::{admin, health, metrics, status};
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

/// [`run`] that also reloads the config on every message of `reloads`
/// (the binary sends one per SIGHUP), with the connections served on
/// `workers` (`None`: on the runtime this runs on).
pub async fn run_with_reloads(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::Receiver<()>,
    workers: Option<Arc<inbound::Workers>>,
) -> Result<(), RunError> {
    let admin = admin::bind(&config.admin).await?;
    run_reloading(listener, admin, config, shutdown, reloads, workers).await
}

/// [`run`] with the admin listener bound by the caller (`None`: disabled).
pub async fn run_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    // No one sends: the config is reloaded only when a file it names
    // changes on disk.
    let (_no_signals, reloads) = tokio::sync::mpsc::channel(1);
    run_reloading(listener, admin, config, shutdown, reloads, None).await
}

/// [`run_with_admin`] that also reloads the config file on every message
/// of `reloads` (the binary sends one per SIGHUP; see `ops::reload`), with
/// the connections served on `workers` (`None`: on this runtime).
pub async fn run_reloading(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
    reloads: tokio::sync::mpsc::Receiver<()>,
    workers: Option<Arc<inbound::Workers>>,
) -> Result<(), RunError> {
    let metrics = Arc::new(metrics::Metrics::with_max_callers(
        config.callers.max_callers,
    ));
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
    let (shared, connector) = shared::Shared::start(&config, Arc::clone(&metrics));
    let refresher = AbortOnDrop(tokens.spawn_shared_refresher(
        exchange,
        margin,
        Arc::clone(&metrics),
        shared.tokens(),
    ));
    let pacer = shared.pacer(&config.rate_limit);
    let health = health::Health::new(Arc::clone(&tokens), shared);
    let shutdown = health.drain_on(shutdown);
    let status = Arc::new(status::Sources {
        health,
        metrics: Arc::clone(&metrics),
        pacer: Arc::clone(&pacer),
        started: tokio::time::Instant::now(),
        about: arc_swap::ArcSwap::from_pointee(status::About::of(&config)),
    });
    let plans = AbortOnDrop(tokio::spawn(Arc::clone(&status).sample_plans()));
    let admin = admin.map(|l| AbortOnDrop(admin::spawn(l, Arc::clone(&status))));
    // The stack and the refusal stack as last built; a reload builds new
    // ones, which the next request takes.
    let build = {
        let (tokens, pacer, metrics) = (Arc::clone(&tokens), pacer, Arc::clone(&metrics));
        move |cfg: &Config, client: &upstream::HttpClient| {
            let service = stack::build(
                cfg,
                client.clone(),
                Arc::clone(&tokens),
                Arc::clone(&pacer),
                Arc::clone(&metrics),
            );
            let refused = stack::refusal_in(layers::Answers::of(cfg), Arc::clone(&metrics));
            (service, refused)
        }
    };
    let (service, refused) = build(&config, &client);
    let service = Arc::new(arc_swap::ArcSwap::from_pointee(service));
    let refused = Arc::new(arc_swap::ArcSwap::from_pointee(refused));
    let rebuild = {
        let (service, refused) = (Arc::clone(&service), Arc::clone(&refused));
        move |cfg: &Config, client: &upstream::HttpClient| {
            let (s, r) = build(cfg, client);
            service.store(Arc::new(s));
            refused.store(Arc::new(r));
        }
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, upstream = %config.upstream.url, "proxy listening");
    }
    let answers = layers::Answers::of(&config);
    let (settings, watched) = tokio::sync::watch::channel(inbound::Settings {
        listen: config.listen.clone(),
        tls: inbound_tls,
        answers,
    });
    let serving = inbound::Serving {
        service: stack::Current::new(service),
        refused: stack::Current::new(refused),
        metrics: Arc::clone(&metrics),
        answers,
        workers,
    };
    let reloader = ops::reload::Reloader::new(
        config,
        ops::reload::Parts {
            metrics,
            tokens,
            pacer: Arc::clone(&status.pacer),
            status,
            listener: settings,
            stack: Box::new(rebuild),
            client,
        },
    );
    let reloader = AbortOnDrop(tokio::spawn(
        reloader.run(reloads, ops::reload::poll_interval()),
    ));
    inbound::serve_watched(listener, serving, watched, shutdown).await;
    drop(reloader);
    drop(refresher);
    drop(connector);
    drop(admin);
    drop(plans);
    Ok(())
}
