//! The innermost service: sends the request to `upstream.url` over a pooled
//! keep-alive client (rustls, ALPN h2 + http/1.1), with the authority
//! rewritten, the response's hop-by-hop fields removed, and the response body
//! streamed back. The same client fetches tokens. A request lost to the
//! keep-alive race (the upstream closed a pooled connection as it was
//! reused) is sent once more on a fresh connection when that is safe.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::Body;
use crate::config::UpstreamConfig;
use crate::error::BoxError;
use crate::error::{describe_chain, ProxyError};
use crate::layers::body_timeout::{IdleTimeout, Side};
use crate::layers::hop_by_hop;
use crate::profile::fitbit;

mod answer;
mod retry;

use answer::{bad_framing, drop_echoed_token};
pub use retry::WireIo;
use retry::{bodiless_copy, is_safe_to_repeat, never_processed};

/// The pooled client shared by forwarding and the token exchange, plus an
/// unpooled twin over the same connector for the one retry that must not
/// land on another stale pooled connection.
#[derive(Clone)]
pub struct HttpClient {
    pooled: Client<Connector, Body>,
    fresh: Client<Connector, Body>,
}

impl HttpClient {
    /// Sends `req` over a pooled connection.
    pub fn request(&self, req: Request<Body>) -> ResponseFuture {
        self.pooled.request(req)
    }
}

/// Idle upstream connections are kept this long: long enough to carry a
/// steady trickle of paced requests, short enough to drop dead peers.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Read buffer limit of an HTTP/1 upstream connection (hyper's minimum is
/// 8 KiB); see `http1_max_buf_size` below.
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

/// Builds the client: web PKI roots plus `upstream.ca_file`, ALPN h2 and
/// http/1.1, and one deadline over DNS, TCP connect and the TLS handshake.
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
    let connector = Connector {
        inner: https,
        timeout: cfg.connect_timeout,
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        // A request queued for a pooled connection that closed before the
        // request was written is sent on another one. The default, pinned.
        .retry_canceled_requests(true)
        // Derive Host from the rewritten URI (the client's Host is removed
        // first: hyper-util only adds one when it is missing). The default,
        // pinned.
        .set_host(true)
        // An answer's body is read into a buffer of at most this size
        // (hyper's default grows to ~400 KiB per connection while a long
        // body streams): the inbound side's H1_MAX_BUF_SIZE.
        .http1_max_buf_size(UPSTREAM_H1_MAX_BUF_SIZE);
    let pooled = builder.build(connector.clone());
    let fresh = builder.pool_max_idle_per_host(0).build(connector);
    Ok(HttpClient { pooled, fresh })
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

/// hyper-rustls' connector under one deadline: hyper-util's own
/// `connect_timeout` covers only the TCP connect, not DNS or TLS.
#[derive(Clone)]
pub struct Connector {
    inner: HttpsConnector<HttpConnector>,
    timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {0:?} (DNS, TCP and TLS together)")]
pub struct ConnectTimedOut(Duration);

/// An upstream connection as the client sees it.
pub type UpstreamIo = TokioIo<WireIo<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>>;

type ConnectFuture = Pin<Box<dyn Future<Output = Result<UpstreamIo, BoxError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = UpstreamIo;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> ConnectFuture {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map(|io| TokioIo::new(WireIo::new(TokioIo::new(io)))),
                Err(_) => Err(ConnectTimedOut(timeout).into()),
            }
        })
    }
}

/// Where requests go: `upstream.url`'s scheme and authority.
#[derive(Debug)]
struct Target {
    scheme: Scheme,
    authority: Authority,
    request_timeout: Duration,
}

/// The terminal service of the stack.
#[derive(Clone)]
pub struct Upstream {
    client: HttpClient,
    target: Arc<Target>,
}

impl Upstream {
    pub fn new(client: HttpClient, cfg: &UpstreamConfig) -> Self {
        let parts = cfg.url.clone().into_parts();
        Upstream {
            client,
            target: Arc::new(Target {
                scheme: parts.scheme.unwrap_or(Scheme::HTTPS),
                authority: parts
                    .authority
                    .expect("config validated upstream.url has a host"),
                request_timeout: cfg.request_timeout,
            }),
        }
    }

    /// The request as it leaves: absolute upstream URI (hyper-util derives
    /// `Host` for HTTP/1 and `:authority` for HTTP/2 from it), the client's
    /// `Host` dropped, and the version left to the upstream connection.
    fn rewrite(&self, req: Request<Body>) -> Request<Body> {
        let (mut parts, body) = req.into_parts();
        let path_and_query = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::from_parts({
            let mut uri = http::uri::Parts::default();
            uri.scheme = Some(self.target.scheme.clone());
            uri.authority = Some(self.target.authority.clone());
            uri.path_and_query = Some(path_and_query);
            uri
        })
        .expect("scheme, authority and path are each valid");
        parts.version = Version::HTTP_11;
        parts.headers.remove(HOST);
        Request::from_parts(parts, body)
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
        let req = self.rewrite(req);
        let retry = (is_safe_to_repeat(req.method()) && req.body().is_end_stream())
            .then(|| bodiless_copy(&req));
        let client = self.client.clone();
        let credential = req.headers().get(AUTHORIZATION).cloned();
        let sending = async move {
            let err = match client.pooled.request(req).await {
                Ok(res) => return Ok(res),
                Err(err) => err,
            };
            match retry {
                Some(again) if never_processed(&err) => {
                    tracing::debug!(error = %describe_chain(&err), "the upstream never processed the request; retrying once on a fresh connection");
                    client.fresh.request(again).await
                }
                _ => Err(err),
            }
        };
        let timeout = self.target.request_timeout;
        Box::pin(async move {
            let mut res = match tokio::time::timeout(timeout, sending).await {
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
            // upstream connection is dropped rather than pooled.
            Ok(res.map(|body| Body::new(IdleTimeout::new(body, timeout, Side::Upstream))))
        })
    }
}
