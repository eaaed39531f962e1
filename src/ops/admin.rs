//! The admin listener (`admin.addr`): `/healthz`, `/readyz` and
//! `/metrics` on a port of their own, beside the proxy rather than in its
//! stack, so that probes and scrapes never touch the quota or the token.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::body::Body;
use crate::config::AdminConfig;
use crate::ops::metrics::{self, Metrics};
use crate::shared::Shared;
use crate::token::{FetchError, Status, TokenSource};

/// Admin connections served at once; more wait in the accept backlog.
const MAX_CONNECTIONS: usize = 64;
/// A probe that has not sent its request head by then is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `admin.addr` could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind admin.addr {addr}: {source}")]
pub struct AdminBindError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Binds `admin.addr`; `None` when the admin listener is disabled.
pub(crate) async fn bind(cfg: &AdminConfig) -> Result<Option<TcpListener>, AdminBindError> {
    let Some(addr) = cfg.addr else {
        return Ok(None);
    };
    TcpListener::bind(addr)
        .await
        .map(Some)
        .map_err(|source| AdminBindError { addr, source })
}

/// What readiness depends on: the token, and whether the proxy is draining.
/// It also reports the shared state, which never makes a replica unready
/// (a Redis outage must not pull every replica at once).
pub(crate) struct Health {
    tokens: Arc<TokenSource>,
    shared: Shared,
    draining: AtomicBool,
}

impl Health {
    pub(crate) fn new(tokens: Arc<TokenSource>, shared: Shared) -> Arc<Health> {
        Arc::new(Health {
            tokens,
            shared,
            draining: AtomicBool::new(false),
        })
    }

    /// `shutdown`, marking the proxy as draining the moment it resolves:
    /// that is the moment the accept loop stops.
    pub(crate) fn drain_on(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> impl Future<Output = ()> {
        let health = Arc::clone(self);
        async move {
            shutdown.await;
            health.draining.store(true, Ordering::SeqCst);
        }
    }

    /// `Err(reason)` when the proxy should not be sent traffic.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        match not_ready_reason(
            self.draining.load(Ordering::SeqCst),
            self.tokens.valid().is_some(),
            &self.tokens.status(),
        ) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Readiness: a valid token held and not draining. The
/// reason names what an operator should look at.
pub(crate) fn not_ready_reason(draining: bool, has_token: bool, status: &Status) -> Option<String> {
    if draining {
        return Some("draining".to_owned());
    }
    if has_token {
        return None;
    }
    Some(match status.failure.as_ref().map(|f| &f.error) {
        Some(FetchError::Rejected { error, status }) => match error {
            Some(e) => format!("credentials rejected: {}", e.error_type),
            None => format!("credentials rejected: HTTP {status}"),
        },
        Some(other) => format!("token endpoint failing: {other}"),
        None => "no token yet".to_owned(),
    })
}

/// What the admin handlers read.
struct Admin {
    health: Arc<Health>,
    metrics: Arc<Metrics>,
}

/// Serves the admin endpoints on `listener` until the returned task is
/// aborted (which also closes its open connections).
pub(crate) fn spawn(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening (/healthz /readyz /metrics)");
    }
    let admin = Arc::new(Admin { health, metrics });
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            // Reap finished connections; wait for one when at the limit.
            while conns.try_join_next().is_some() {}
            if conns.len() >= MAX_CONNECTIONS {
                conns.join_next().await;
                continue;
            }
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::debug!(error = %err, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let admin = Arc::clone(&admin);
            conns.spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = Arc::clone(&admin);
                    async move { Ok::<_, Infallible>(admin.answer(&req)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                if let Err(err) = conn.await {
                    tracing::debug!(%peer, error = %err, "admin connection ended with an error");
                }
            });
        }
    })
}

impl Admin {
    fn answer(&self, req: &Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return plain(StatusCode::NOT_FOUND, "not found\n");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut res = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            res.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return res;
        }
        match path {
            "/healthz" => plain(StatusCode::OK, "ok\n"),
            "/readyz" => self.readyz(),
            _ => self.metrics(),
        }
    }

    fn readyz(&self) -> Response<Body> {
        let (status, mut body) = match self.health.readiness() {
            Ok(()) => (StatusCode::OK, serde_json::json!({ "ready": true })),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "ready": false, "reason": reason }),
            ),
        };
        let shared = self.health.shared.state();
        body["shared"] = shared.as_str().into();
        if let Some(reason) = shared.reason() {
            body["shared_reason"] = reason.into();
        }
        respond(status, "application/json", body.to_string())
    }

    fn metrics(&self) -> Response<Body> {
        let expires_in = self.health.tokens.valid().map(|t| {
            t.expires_at()
                .saturating_duration_since(tokio::time::Instant::now())
        });
        let text = self.metrics.render(expires_in);
        respond(StatusCode::OK, metrics::CONTENT_TYPE, text)
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    respond(status, "text/plain; charset=utf-8", text.to_owned())
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut res = Response::new(Body::full(body));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Probes must see the state now, never a cached one.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::fitbit::ApiError;
    use crate::token::Failure;

    fn failed(error: FetchError) -> Status {
        Status {
            fetching: false,
            failure: Some(Failure {
                error,
                retry_at: tokio::time::Instant::now(),
            }),
        }
    }

    #[test]
    fn readiness_reasons() {
        let fetching = Status {
            fetching: true,
            failure: None,
        };
        let rejected = failed(FetchError::Rejected {
            status: 401,
            error: Some(ApiError {
                error_type: "invalid_client".into(),
                message: "Invalid client credentials".into(),
            }),
        });
        let rejected_bare = failed(FetchError::Rejected {
            status: 400,
            error: None,
        });
        let down = failed(FetchError::Timeout(Duration::from_secs(5)));
        // (draining, token held, status, reason)
        let cases: Vec<(bool, bool, &Status, Option<&str>)> = vec![
            (false, true, &fetching, None),
            (false, true, &down, None),
            (true, true, &fetching, Some("draining")),
            (true, false, &rejected, Some("draining")),
            (false, false, &fetching, Some("no token yet")),
            (
                false,
                false,
                &rejected,
                Some("credentials rejected: invalid_client"),
            ),
            (
                false,
                false,
                &rejected_bare,
                Some("credentials rejected: HTTP 400"),
            ),
            (
                false,
                false,
                &down,
                Some("token endpoint failing: token endpoint did not answer within 5s"),
            ),
        ];
        for (draining, has_token, status, want) in cases {
            assert_eq!(
                not_ready_reason(draining, has_token, status).as_deref(),
                want,
                "{draining} {has_token} {status:?}"
            );
        }
    }
}
