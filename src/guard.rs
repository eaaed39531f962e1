//! The admission layer: refuses what must never reach the upstream
//! (`CONNECT`, absolute-form targets for another host, denied paths, bodies
//! over `listen.max_request_body`) and removes what a client must not pass
//! on (hop-by-hop fields, its own credentials). Runs before any waiting, so
//! a refused request costs neither a token fetch nor quota.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, EXPECT};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{Body, BoxError};
use crate::headers;
use crate::paths::{PathRules, Refusal};
use crate::respond::ProxyError;

/// What the guard checks against, built once from the config.
#[derive(Debug)]
pub struct Admission {
    pub rules: PathRules,
    pub upstream: Authority,
    pub upstream_scheme: Scheme,
    pub max_request_body: u64,
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
        headers::strip_hop_by_hop(&mut parts.headers);
        headers::strip_client_credentials(&mut parts.headers);
        // hyper already answered `Expect: 100-continue` toward the client.
        parts.headers.remove(EXPECT);
        let over_limit = Arc::new(AtomicBool::new(false));
        let body = limited(body, limit, Arc::clone(&over_limit));
        ResponseFuture::Admitted {
            inner: self.inner.call(Request::from_parts(parts, body)),
            over_limit,
            limit,
        }
    }
}

impl Admission {
    fn check<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
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

    /// HTTP/1 requests in absolute-form may only name the upstream itself
    /// (F1). HTTP/2 always carries `:authority`, which names the proxy, so
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

/// The body, cut off with `payload_too_large` past the limit (for bodies
/// whose length was not declared up front). `over_limit` is raised too:
/// an HTTP/2 upstream connection resets the stream and drops the body's
/// own error, so the flag is what tells the answer apart from a 502.
fn limited<B>(body: B, limit: u64, over_limit: Arc<AtomicBool>) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    Body::new(Limited::new(body, cap).map_err(move |err| {
        if err.is::<LengthLimitError>() {
            over_limit.store(true, Ordering::Relaxed);
            Box::new(ProxyError::PayloadTooLarge { limit }) as BoxError
        } else {
            err
        }
    }))
}

pin_project_lite::pin_project! {
    #[project = Proj]
    pub enum ResponseFuture<F> {
        Refused { error: Option<ProxyError> },
        Admitted { #[pin] inner: F, over_limit: Arc<AtomicBool>, limit: u64 },
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
                over_limit,
                limit,
            } => match ready!(inner.poll(cx)) {
                Err(_) if over_limit.load(Ordering::Relaxed) => {
                    Poll::Ready(Err(ProxyError::PayloadTooLarge { limit: *limit }.into()))
                }
                other => Poll::Ready(other),
            },
        }
    }
}
