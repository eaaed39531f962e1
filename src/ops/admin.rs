//! The admin listener (`admin.addr`): `/healthz`, `/readyz` and
//! `/metrics` on a port of their own, beside the proxy rather than in its
//! stack, so that probes and scrapes never touch the quota or the token.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    ALLOW, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY,
    X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::metrics;
use super::status::{self, Page};
use crate::body::Body;
use crate::config::AdminConfig;

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

/// What the admin handlers read.
struct Admin {
    status: Arc<status::Sources>,
    page: Page,
}

/// Serves the admin endpoints on `listener` until the returned task is
/// aborted (which also closes its open connections).
pub(crate) fn spawn(
    listener: TcpListener,
    status: Arc<status::Sources>,
) -> tokio::task::JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin listening (/ /status.json /healthz /readyz /metrics)");
    }
    let admin = Arc::new(Admin {
        status,
        page: Page::new(),
    });
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
        if !matches!(
            path,
            "/" | "/status.json" | "/healthz" | "/readyz" | "/metrics"
        ) {
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
            "/metrics" => self.metrics(),
            "/status.json" => respond(
                StatusCode::OK,
                "application/json",
                serde_json::to_string(&self.status.snapshot())
                    .expect("the status always serialises"),
            ),
            _ => self.page(),
        }
    }

    fn readyz(&self) -> Response<Body> {
        let (status, mut body) = match self.status.health.readiness() {
            Ok(()) => (StatusCode::OK, serde_json::json!({ "ready": true })),
            Err(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "ready": false, "reason": reason }),
            ),
        };
        let shared = self.status.health.shared();
        body["shared"] = shared.as_str().into();
        if let Some(reason) = shared.reason() {
            body["shared_reason"] = reason.into();
        }
        if let Some(mode) = self.status.health.shared_budget() {
            body["shared_budget"] = mode.as_str().into();
        }
        respond(status, "application/json", body.to_string())
    }

    fn metrics(&self) -> Response<Body> {
        let expires_in = self.status.health.tokens().valid().map(|t| {
            t.expires_at()
                .saturating_duration_since(tokio::time::Instant::now())
        });
        let metrics = &self.status.metrics;
        metrics.show_quota(self.status.pacer.view());
        let text = metrics.render(expires_in);
        respond(StatusCode::OK, metrics::CONTENT_TYPE, text)
    }

    /// The status page, under a policy that lets it run only its own
    /// script and fetch only from this port.
    fn page(&self) -> Response<Body> {
        let mut res = respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            self.page.html.clone(),
        );
        let headers = res.headers_mut();
        if let Ok(csp) = HeaderValue::from_str(&self.page.csp) {
            headers.insert(CONTENT_SECURITY_POLICY, csp);
        }
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        res
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
