//! The admission layer: refuses what must never reach the upstream
//! (`CONNECT`, absolute-form targets for another host, a Host not in
//! `listen.hosts`, denied paths, bodies
//! over `listen.max_request_body`, methods over 32 bytes, an `access_token`
//! in the query) and removes what a client must not pass
//! on (hop-by-hop fields, its own credentials, forwarding-identity fields
//! such as `X-Forwarded-For`). Runs before any waiting, so
//! a refused request costs neither a token fetch nor quota.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, EXPECT, HOST, TRANSFER_ENCODING};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Version};
use http_body::Frame;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::config::canonical_host;
use crate::error::BoxError;
use crate::error::ProxyError;
use crate::layers::access::REQUEST_ID;
use crate::layers::body_timeout::{BodyStalled, IdleTimeout, Side};
use crate::layers::hop_by_hop;
use crate::layers::paths::{PathRules, Refusal};

/// Longest method accepted. The longest registered method
/// (`UPDATEREDIRECTREF`, IANA's method registry) has 17 characters;
/// hyper takes a method of any length, which would otherwise be forwarded.
pub(crate) const MAX_METHOD_LEN: usize = 32;

/// What the guard checks against, built once from the config.
#[derive(Debug)]
pub struct Admission {
    pub rules: PathRules,
    pub upstream: Authority,
    pub upstream_scheme: Scheme,
    /// `listen.hosts`, canonical; empty: any Host.
    pub hosts: Vec<String>,
    pub max_request_body: u64,
    /// Longest wait for the next frame of the client's body
    /// (`listen.header_read_timeout`): a slow upload is cut off.
    pub body_idle_timeout: Duration,
}

#[derive(Clone)]
pub struct GuardLayer {
    admission: Arc<Admission>,
}

impl GuardLayer {
    pub fn new(admission: Admission) -> Self {
        GuardLayer {
            admission: Arc::new(admission),
        }
    }
}

impl<S> Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            admission: Arc::clone(&self.admission),
        }
    }
}

#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    admission: Arc<Admission>,
}

impl<S, B> Service<Request<B>> for Guard<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if let Err(refusal) = self.admission.check(&req) {
            return ResponseFuture::Refused {
                error: Some(refusal),
            };
        }
        let limit = self.admission.max_request_body;
        let (mut parts, body) = req.into_parts();
        // The request id is the proxy's own (access.rs set it): a client's
        // `Connection: x-request-id` must not strip it (hop-by-hop abuse).
        let request_id = parts.headers.get(REQUEST_ID).cloned();
        hop_by_hop::strip_hop_by_hop(&mut parts.headers);
        hop_by_hop::strip_client_credentials(&mut parts.headers);
        hop_by_hop::strip_forwarding_identity(&mut parts.headers);
        if let Some(id) = request_id {
            parts.headers.insert(REQUEST_ID, id);
        }
        // hyper already answered `Expect: 100-continue` toward the client.
        parts.headers.remove(EXPECT);
        let failure = Arc::new(BodyFailure::default());
        let idle = self.admission.body_idle_timeout;
        let body = IdleTimeout::new(body, idle, Side::Client);
        let body = limited(body, limit, Arc::clone(&failure));
        ResponseFuture::Admitted {
            inner: self.inner.call(Request::from_parts(parts, body)),
            failure,
            limit,
            idle,
        }
    }
}

impl Admission {
    fn check<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed(
                "CONNECT is not supported: this proxy forwards requests, not tunnels",
            ));
        }
        // A TRACE echo would show the proxy's Bearer token (RFC 9110 §9.3.8).
        if matches!(req.method().as_str(), "TRACE" | "TRACK") {
            return Err(ProxyError::MethodNotAllowed(
                "TRACE is not supported: its echo would reveal the proxy's credentials",
            ));
        }
        if req.method().as_str().len() > MAX_METHOD_LEN {
            return Err(ProxyError::BadRequest(
                "the method is longer than any HTTP method",
            ));
        }
        check_host(req)?;
        self.check_host_listed(req)?;
        check_transfer_encoding(req)?;
        check_query(req)?;
        self.check_target(req)?;
        match self.rules.check(req.uri().path()) {
            Ok(()) => {}
            Err(Refusal::Ambiguous(why)) => return Err(ProxyError::BadRequest(why)),
            Err(Refusal::NotForwarded) => {
                return Err(ProxyError::Forbidden(
                    "this path is not forwarded by the proxy",
                ))
            }
        }
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.max_request_body) {
            return Err(ProxyError::PayloadTooLarge {
                limit: self.max_request_body,
            });
        }
        Ok(())
    }

    /// With `listen.hosts` set, every name the request gives the proxy (its
    /// Host, and over HTTP/2 its `:authority`) must be listed: a browser led
    /// here by DNS rebinding names the attacker's host (CVE-2018-5702).
    /// A request that names nothing is not listed either.
    fn check_host_listed<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        // check_host already refused a Host that is not an authority.
        let header = req.headers().get(HOST);
        let header = header.and_then(|v| Authority::try_from(v.as_bytes()).ok());
        let authority = req
            .uri()
            .authority()
            .filter(|_| req.version() >= Version::HTTP_2);
        let names: Vec<String> = header
            .iter()
            .chain(authority)
            .map(|a| canonical_host(a.host()))
            .collect();
        if !names.is_empty() && names.iter().all(|name| self.hosts.contains(name)) {
            Ok(())
        } else {
            Err(ProxyError::Forbidden("the Host is not in listen.hosts"))
        }
    }

    /// HTTP/1 requests in absolute-form may only name the upstream itself.
    /// HTTP/2 always carries `:authority`, which names the proxy, so
    /// only its path is looked at.
    fn check_target<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        let uri = req.uri();
        if req.version() <= Version::HTTP_11 {
            if let Some(authority) = uri.authority() {
                if !same_authority(
                    authority,
                    uri.scheme(),
                    &self.upstream,
                    &self.upstream_scheme,
                ) {
                    return Err(ProxyError::BadRequest(
                        "the request target names another host",
                    ));
                }
            }
        }
        Ok(())
    }
}

/// RFC 9112 §3.2: an HTTP/1.1 request needs exactly one valid `Host`
/// (400 otherwise). The value is never forwarded; the check keeps the proxy
/// from reading a request differently than an RFC-strict server would.
fn check_host<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(ProxyError::BadRequest("more than one Host field"));
    }
    let Some(host) = first else {
        return if req.version() == Version::HTTP_11 {
            Err(ProxyError::BadRequest(
                "an HTTP/1.1 request needs a Host field",
            ))
        } else {
            Ok(())
        };
    };
    let valid = Authority::try_from(host.as_bytes()).is_ok_and(|a| {
        // `Authority` keeps a port it cannot read as u16; refuse those.
        let port = &a.as_str()[a.host().len()..];
        !a.host().is_empty()
            && !a.as_str().contains('@')
            && (port.is_empty() || port[1..].parse::<u16>().is_ok())
    });
    if valid {
        Ok(())
    } else {
        Err(ProxyError::BadRequest(
            "the Host field is not a valid host[:port]",
        ))
    }
}

/// A bearer token in the query (`access_token`, RFC 6750 §2.3) would let a
/// client act under another identity than the proxy's, and would end up
/// in logs along the way (RFC 6750 §5.3): 400, whatever its case or
/// percent-encoding.
fn check_query<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let Some(query) = req.uri().query() else {
        return Ok(());
    };
    let carries_token = query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or_default();
        if name.contains(['%', '+']) {
            let name = name.replace('+', " ");
            let name = percent_encoding::percent_decode_str(&name).decode_utf8_lossy();
            name.trim().eq_ignore_ascii_case("access_token")
        } else {
            name.eq_ignore_ascii_case("access_token")
        }
    });
    if carries_token {
        Err(ProxyError::BadRequest(
            "an access_token in the query is not accepted: the proxy supplies the credentials",
        ))
    } else {
        Ok(())
    }
}

/// Only a `Transfer-Encoding` of exactly `chunked` frames a request the
/// way every server reads it (RFC 9112 §6.1); hyper also takes lists such as
/// `gzip, chunked` or `chunked, chunked`, which the proxy refuses.
fn check_transfer_encoding<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let mut codings = req
        .headers()
        .get_all(TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|c| !c.is_empty());
    match (codings.next(), codings.next()) {
        (None, _) => Ok(()),
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => Ok(()),
        _ => Err(ProxyError::BadRequest(
            "Transfer-Encoding must be exactly \"chunked\"",
        )),
    }
}

/// Same host and port; a port left out is the scheme's default, so
/// `https://api.fitbit.com:443` names `https://api.fitbit.com`.
fn same_authority(
    a: &Authority,
    a_scheme: Option<&Scheme>,
    b: &Authority,
    b_scheme: &Scheme,
) -> bool {
    let port = |auth: &Authority, scheme: Option<&Scheme>| {
        auth.port_u16()
            .or_else(|| match scheme.map(Scheme::as_str) {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            })
    };
    a.host().eq_ignore_ascii_case(b.host()) && port(a, a_scheme) == port(b, Some(b_scheme))
}

/// How the client's own body failed, if it did: the upstream connection
/// may reset the stream and drop the body's error, so these flags are what
/// tell the answer apart from a 502 that is the upstream's fault.
#[derive(Default)]
struct BodyFailure {
    /// Past `listen.max_request_body` (413).
    over_limit: AtomicBool,
    /// Broken framing from the client: a bad chunk size, an over-long
    /// chunk extension or trailer section (400).
    malformed: AtomicBool,
    /// No body data for `listen.header_read_timeout` (408).
    stalled: AtomicBool,
    /// Any other error of the client's body: the client cut its upload
    /// short or its connection broke (400, never the upstream's 502).
    ended_early: AtomicBool,
}

/// The body, cut off with `payload_too_large` past the limit (for bodies
/// whose length was not declared up front), with its failures recorded in
/// `failure`. Trailers are dropped: they could carry fields (credentials,
/// framing) that the header checks above never saw.
fn limited<B>(body: B, limit: u64, failure: Arc<BodyFailure>) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    Body::new(
        Limited::new(DropTrailers { inner: body }, cap).map_err(move |err| {
            if err.is::<LengthLimitError>() {
                failure.over_limit.store(true, Ordering::Relaxed);
                Box::new(ProxyError::PayloadTooLarge { limit }) as BoxError
            } else {
                let flag = if err.is::<BodyStalled>() {
                    &failure.stalled
                } else if is_malformed(err.as_ref()) {
                    &failure.malformed
                } else {
                    &failure.ended_early
                };
                flag.store(true, Ordering::Relaxed);
                err
            }
        }),
    )
}

pin_project_lite::pin_project! {
    /// The client's body with any trailer section turned into an empty data
    /// frame. Unlike `BodyExt::map_frame` it keeps the size hint and
    /// end-of-stream, which the replay after a revoked token relies on.
    struct DropTrailers<B> {
        #[pin]
        inner: B,
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for DropTrailers<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(self.project().inner.poll_frame(cx));
        Poll::Ready(frame.map(|f| {
            f.map(|frame| match frame.into_data() {
                Ok(data) => Frame::data(data),
                Err(_trailers) => Frame::data(Bytes::new()),
            })
        }))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// hyper reports broken body framing (chunk sizes, extensions, trailers)
/// as an I/O error of kind `InvalidData` or `InvalidInput` behind its own
/// error; a client that merely went away gives other kinds.
fn is_malformed(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<std::io::Error>().is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::InvalidInput
            )
        }) {
            return true;
        }
        source = e.source();
    }
    false
}

pin_project_lite::pin_project! {
    #[project = Proj]
    pub enum ResponseFuture<F> {
        Refused { error: Option<ProxyError> },
        Admitted { #[pin] inner: F, failure: Arc<BodyFailure>, limit: u64, idle: Duration },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Proj::Refused { error } => {
                Poll::Ready(Err(error.take().expect("polled after completion").into()))
            }
            Proj::Admitted {
                inner,
                failure,
                limit,
                idle,
            } => match ready!(inner.poll(cx)) {
                Err(_) if failure.over_limit.load(Ordering::Relaxed) => {
                    Poll::Ready(Err(ProxyError::PayloadTooLarge { limit: *limit }.into()))
                }
                Err(_) if failure.malformed.load(Ordering::Relaxed) => Poll::Ready(Err(
                    ProxyError::BadRequest("the request body is malformed").into(),
                )),
                Err(_) if failure.stalled.load(Ordering::Relaxed) => {
                    Poll::Ready(Err(ProxyError::ClientTimeout(*idle).into()))
                }
                Err(_) if failure.ended_early.load(Ordering::Relaxed) => Poll::Ready(Err(
                    ProxyError::BadRequest("the request body ended early").into(),
                )),
                // The proxy never asks to switch protocols (Upgrade is
                // stripped): a 101 would hand the client a tunnel to U.
                Ok(res) if res.status() == http::StatusCode::SWITCHING_PROTOCOLS => {
                    Poll::Ready(Err(ProxyError::UpstreamUnreachable(
                        "the upstream switched protocols, which the proxy never asks for".into(),
                    )
                    .into()))
                }
                other => Poll::Ready(other),
            },
        }
    }
}
