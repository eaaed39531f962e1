//! The admission layer: refuses what must never reach the upstream
//! (`CONNECT`, absolute-form targets for another host, denied paths, bodies
//! over `listen.max_request_body`) and removes what a client must not pass
//! on (hop-by-hop fields, its own credentials). Runs before any waiting, so
//! a refused request costs neither a token fetch nor quota.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::uri::Authority;
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{Body, BoxError};
use crate::headers;
use crate::paths::PathRules;
use crate::respond::ProxyError;

/// What the guard checks against, built once from the config.
#[derive(Debug)]
pub struct Admission {
    pub rules: PathRules,
    pub upstream: Authority,
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
        let body = limited(body, limit);
        ResponseFuture::Admitted {
            inner: self.inner.call(Request::from_parts(parts, body)),
        }
    }
}

impl Admission {
    fn check<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        if req.method() == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        self.check_target(req)?;
        if !self.rules.permits(req.uri().path()) {
            return Err(ProxyError::Forbidden(
                "this path is not forwarded by the proxy",
            ));
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
                if !same_authority(authority, &self.upstream) {
                    return Err(ProxyError::BadRequest(
                        "the request target names another host",
                    ));
                }
            }
        }
        if !uri.path().starts_with('/') {
            return Err(ProxyError::BadRequest(
                "the request target must be a path starting with /",
            ));
        }
        Ok(())
    }
}

fn same_authority(a: &Authority, b: &Authority) -> bool {
    a.host().eq_ignore_ascii_case(b.host()) && a.port_u16() == b.port_u16()
}

/// The body, cut off with `payload_too_large` past the limit (for bodies
/// whose length was not declared up front).
fn limited<B>(body: B, limit: u64) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    Body::new(Limited::new(body, cap).map_err(move |err| {
        if err.is::<LengthLimitError>() {
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
        Admitted { #[pin] inner: F },
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
            Proj::Admitted { inner } => inner.poll(cx),
        }
    }
}
