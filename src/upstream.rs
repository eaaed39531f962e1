//! The innermost service: sends the request to `upstream.url` over a pooled
//! keep-alive client (rustls, ALPN h2 + http/1.1), with the authority
//! rewritten, the response's hop-by-hop fields removed, and the response body
//! streamed back. The same client fetches tokens. A request lost to the
//! keep-alive race (the upstream closed a pooled connection as it was
//! reused) is sent once more on a fresh connection when that is safe.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{AUTHORIZATION, HOST};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Extensions, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::body::{Body, BoxError};
use crate::config::UpstreamConfig;
use crate::deadline::{IdleTimeout, Side};
use crate::respond::{describe_chain, ProxyError};
use crate::{fitbit, headers};

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
        .set_host(true);
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
pub type UpstreamIo = TokioIo<Tracked<TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>>>;

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
                Ok(result) => result.map(|io| TokioIo::new(Tracked::new(TokioIo::new(io)))),
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
                Some(again) if lost_to_keep_alive_race(&err) => {
                    tracing::debug!(error = %describe_chain(&err), "reused upstream connection closed unanswered; retrying once on a fresh one");
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
            headers::strip_hop_by_hop(res.headers_mut());
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
            // bound (catalog 3.06): the client sees a reset, and the
            // upstream connection is dropped rather than pooled.
            Ok(res.map(|body| Body::new(IdleTimeout::new(body, timeout, Side::Upstream))))
        })
    }
}

/// An answer whose framing the proxy must not pass on (RFC 9112 §6.3):
/// both framings at once (a smuggling attempt, or a broken upstream), a
/// transfer coding other than plain `chunked` (hyper would leave it applied
/// to a body the client could no longer decode once the hop-by-hop
/// `Transfer-Encoding` is stripped), or a `101` nobody asked for (the proxy
/// never forwards `Upgrade`, RFC 9110 §15.2.2).
fn bad_framing(status: http::StatusCode, headers: &http::HeaderMap) -> Option<&'static str> {
    if status == http::StatusCode::SWITCHING_PROTOCOLS {
        return Some("the upstream switched protocols unasked");
    }
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if headers.contains_key(http::header::CONTENT_LENGTH) {
        return Some("the upstream answered with both Transfer-Encoding and Content-Length");
    }
    let only_chunked = codings.next().is_none()
        && first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    (!only_chunked).then_some("the upstream answered with a transfer coding other than chunked")
}

/// Catalog 2.09: an upstream that echoes the request (a debug endpoint, a
/// misconfigured error page) must not hand the proxy's bearer token to the
/// client. Removes every field with a value that contains the token sent
/// (`credential` is the `Authorization` value, `Bearer <token>`); returns
/// how many fields went. A token echoed in the body is not caught.
fn drop_echoed_token(headers: &mut http::HeaderMap, credential: &http::HeaderValue) -> usize {
    let Some(token) = credential.as_bytes().strip_prefix(b"Bearer ") else {
        return 0;
    };
    // Short values would match too much by chance; real tokens are long.
    if token.len() < 16 {
        return 0;
    }
    let echoed: Vec<http::HeaderName> = headers
        .iter()
        .filter(|(_, v)| v.as_bytes().windows(token.len()).any(|w| w == token))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &echoed {
        headers.remove(name);
    }
    echoed.len()
}

/// RFC 9110 §9.2.2: methods a proxy may repeat on its own.
fn is_safe_to_repeat(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The same request with an empty body, for the one retry.
fn bodiless_copy(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// How an attempt on one upstream connection ended, as far as a retry cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// The connection had carried an earlier request and its answer.
    reused: bool,
    /// Some byte of this request's answer had arrived.
    answered: bool,
    /// The connection closed or reset under the request.
    closed: bool,
}

/// The keep-alive race (RFC 9112 §9.3.1): the upstream closed an idle
/// pooled connection just as it was reused, so it never read the request
/// and spent no quota on it. Only then is a (safe, bodiless) request sent
/// again; a fresh connection that closes, or any answer begun, is final.
fn should_retry(attempt: Attempt) -> bool {
    attempt.reused && !attempt.answered && attempt.closed
}

fn lost_to_keep_alive_race(err: &hyper_util::client::legacy::Error) -> bool {
    if err.is_connect() {
        return false;
    }
    let Some(connected) = err.connect_info() else {
        return false;
    };
    let mut extras = Extensions::new();
    connected.get_extras(&mut extras);
    let Some(wire) = extras.get::<Arc<Wire>>() else {
        return false;
    };
    // HTTP/2 multiplexes, so turns mean nothing there; hyper-util already
    // resends what a GOAWAY refused before it was written.
    let attempt = Attempt {
        reused: !connected.is_negotiated_h2() && wire.turns.load(Ordering::Relaxed) > 1,
        answered: wire.answered.load(Ordering::Relaxed),
        closed: closed_under_request(err),
    };
    should_retry(attempt)
}

/// The connection ended (EOF or reset) while a request was in flight.
fn closed_under_request(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            if e.is_incomplete_message() || e.is_canceled() {
                return true;
            }
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe);
        }
        source = e.source();
    }
    false
}

/// What one HTTP/1 connection has carried: request/response turns begun
/// (a write after a read starts a new one) and whether the current turn has
/// read any answer yet. Shared with the client through `Connected::extra`.
#[derive(Debug, Default)]
struct Wire {
    turns: AtomicU32,
    answered: AtomicBool,
}

impl Wire {
    /// A write after an answer (or the first write) begins a new turn.
    fn wrote(&self) {
        if self.answered.swap(false, Ordering::Relaxed) || self.turns.load(Ordering::Relaxed) == 0 {
            self.turns.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An upstream stream that keeps its [`Wire`] up to date (above TLS, so
/// only HTTP bytes count).
pub struct Tracked<T> {
    inner: T,
    wire: Arc<Wire>,
}

impl<T> Tracked<T> {
    fn new(inner: T) -> Self {
        Tracked {
            inner,
            wire: Arc::default(),
        }
    }
}

impl<T: Connection> Connection for Tracked<T> {
    fn connected(&self) -> Connected {
        self.inner.connected().extra(Arc::clone(&self.wire))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.wire.answered.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.wire.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.wire.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_the_keep_alive_race() {
        let race = Attempt {
            reused: true,
            answered: false,
            closed: true,
        };
        let cases = [
            (race, true),
            (
                Attempt {
                    reused: false,
                    ..race
                },
                false,
            ),
            (
                Attempt {
                    answered: true,
                    ..race
                },
                false,
            ),
            (
                Attempt {
                    closed: false,
                    ..race
                },
                false,
            ),
        ];
        for (attempt, want) in cases {
            assert_eq!(should_retry(attempt), want, "{attempt:?}");
        }
    }

    #[test]
    fn framing_the_proxy_will_not_pass_on() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("content-length", "5")], false),
            (&[("transfer-encoding", "chunked")], false),
            (&[("transfer-encoding", "Chunked ")], false),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "5")],
                true,
            ),
            (&[("transfer-encoding", "chunked, gzip")], true),
            (&[("transfer-encoding", "gzip, chunked")], true),
            (
                &[
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked"),
                ],
                true,
            ),
            (&[("transfer-encoding", "identity")], true),
        ];
        for (fields, bad) in cases {
            let mut headers = http::HeaderMap::new();
            for (name, value) in *fields {
                headers.append(*name, value.parse().unwrap());
            }
            assert_eq!(
                bad_framing(http::StatusCode::OK, &headers).is_some(),
                *bad,
                "{fields:?}"
            );
        }
        let switching = http::StatusCode::SWITCHING_PROTOCOLS;
        assert!(bad_framing(switching, &http::HeaderMap::new()).is_some());
    }

    #[test]
    fn fields_echoing_the_token_are_dropped() {
        let token = "TOKEN_0123456789abcdef";
        let credential = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let cases: &[(&str, bool)] = &[
            ("Bearer TOKEN_0123456789abcdef", true),
            ("TOKEN_0123456789abcdef", true),
            ("x=TOKEN_0123456789abcdef;y", true),
            ("TOKEN_0123456789abcde", false),
            ("Bearer something-else-entirely", false),
            ("", false),
        ];
        for (value, dropped) in cases {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-echo", value.parse().unwrap());
            headers.insert("x-kept", "1".parse().unwrap());
            assert_eq!(
                drop_echoed_token(&mut headers, &credential),
                usize::from(*dropped),
                "{value}"
            );
            assert_eq!(headers.contains_key("x-echo"), !dropped, "{value}");
            assert!(headers.contains_key("x-kept"));
        }
        let mut headers = http::HeaderMap::new();
        headers.insert("x-echo", "abc".parse().unwrap());
        let short = http::HeaderValue::from_static("Bearer abc");
        assert_eq!(
            drop_echoed_token(&mut headers, &short),
            0,
            "short tokens are not matched"
        );
    }

    #[test]
    fn only_safe_methods_are_repeated() {
        for (method, want) in [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::OPTIONS, true),
            (Method::POST, false),
            (Method::PUT, false),
            (Method::DELETE, false),
            (Method::PATCH, false),
        ] {
            assert_eq!(is_safe_to_repeat(&method), want, "{method}");
        }
    }
}
