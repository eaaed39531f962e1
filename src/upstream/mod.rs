//! The innermost service: sends the request to `upstream.url` with the
//! authority rewritten, the response's hop-by-hop fields removed, and the
//! response body streamed back. The same client fetches tokens. The
//! request's own task does the upstream half too: it takes an idle
//! connection from the pool (pool.rs) or opens one (conn.rs) and drives it
//! itself until the answer's body has ended (client.rs). A request lost to
//! the keep-alive race (the upstream closed an idle connection as it was
//! reused) is sent once more on a fresh connection when that is safe
//! (retry.rs).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{Request, Response};
use http_body::Body as _;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tower_service::Service;

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::error::{BoxError, ProxyError};
use crate::layers::body_timeout::{IdleTimeout, Side};
use crate::layers::hop_by_hop;
use crate::profile::fitbit;

mod answer;
mod client;
mod conn;
mod pool;
mod retry;

use answer::{bad_framing, drop_echoed_token};
pub use client::HttpClient;
use client::Origin;
pub use conn::ConnectTimedOut;
use retry::{bodiless_copy, is_safe_to_repeat};

/// Read buffer limit of an HTTP/1 upstream connection (hyper's minimum is
/// 8 KiB); see `max_buf_size` below.
const UPSTREAM_H1_MAX_BUF_SIZE: usize = 64 * 1024;

/// TCP keep-alive probes on upstream sockets, to notice silent peers.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("upstream.ca_file {path}: {source}")]
    CaFile {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("upstream.ca_file {path}: {source}")]
    BadCa { path: String, source: rustls::Error },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a request got no answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect error")]
    Connect(#[source] BoxError),
    #[error("the connection closed before the request was sent")]
    ClosedBeforeSending,
    #[error("request failed")]
    Request(#[source] hyper::Error),
    #[error("the request has no authority to send it to")]
    NoAuthority,
}

/// Builds the client: web PKI roots plus `upstream.ca_file`, ALPN h2 and
/// http/1.1, and one deadline over DNS, TCP connect, the TLS handshake and
/// the HTTP/2 handshake.
pub fn build_client(cfg: &UpstreamConfig) -> Result<HttpClient, ClientBuildError> {
    let tls = tls_config(cfg)?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    let mut h1 = http1::Builder::new();
    // An answer's body is read into a buffer of at most this size
    // (hyper's default grows to ~400 KiB per connection while a long
    // body streams): the inbound side's H1_MAX_BUF_SIZE.
    h1.max_buf_size(UPSTREAM_H1_MAX_BUF_SIZE);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new());
    Ok(HttpClient::new(conn::Connector {
        tls: https,
        timeout: cfg.connect_timeout,
        h1,
        h2,
    }))
}

fn tls_config(cfg: &UpstreamConfig) -> Result<ClientConfig, ClientBuildError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = &cfg.ca_file {
        let shown = path.display().to_string();
        for cert in
            CertificateDer::pem_file_iter(path).map_err(|source| ClientBuildError::CaFile {
                path: shown.clone(),
                source,
            })?
        {
            let cert = cert.map_err(|source| ClientBuildError::CaFile {
                path: shown.clone(),
                source,
            })?;
            roots.add(cert).map_err(|source| ClientBuildError::BadCa {
                path: shown.clone(),
                source,
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The terminal service of the stack.
#[derive(Clone)]
pub struct Upstream {
    origin: Arc<Origin>,
    request_timeout: Duration,
}

impl Upstream {
    pub fn new(client: HttpClient, cfg: &UpstreamConfig) -> Self {
        Upstream {
            origin: client
                .origin(&cfg.url)
                .expect("config validated upstream.url has a host"),
            request_timeout: cfg.request_timeout,
        }
    }
}

impl Service<Request<Body>> for Upstream {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let req = self.origin.outgoing(req);
        let again = (is_safe_to_repeat(req.method()) && req.body().is_end_stream())
            .then(|| bodiless_copy(&req));
        let credential = req.headers().get(AUTHORIZATION).cloned();
        let origin = Arc::clone(&self.origin);
        let timeout = self.request_timeout;
        Box::pin(async move {
            let mut res = match tokio::time::timeout(timeout, origin.send(req, again)).await {
                Err(_) => return Err(ProxyError::UpstreamTimeout(timeout).into()),
                Ok(Err(err)) => return Err(err.into()),
                Ok(Ok(res)) => res,
            };
            if let Some(problem) = bad_framing(res.status(), res.headers()) {
                return Err(ProxyError::UpstreamUnreachable(problem.into()).into());
            }
            hop_by_hop::strip_hop_by_hop(res.headers_mut());
            if let Some(credential) = &credential {
                let dropped = drop_echoed_token(res.headers_mut(), credential);
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "dropped response fields that echoed the access token"
                    );
                }
            }
            // Only the proxy's own answers may carry its error marker.
            res.headers_mut().remove(fitbit::PROXY_ERROR_HEADER);
            // An upstream that stalls its body is cut off after the same
            // bound: the client sees a reset, and the
            // upstream connection is closed rather than pooled.
            Ok(res.map(|body| Body::new(IdleTimeout::new(body, timeout, Side::Upstream))))
        })
    }
}
