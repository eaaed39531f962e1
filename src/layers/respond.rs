//! The outermost layer: every error raised inside the stack becomes one of
//! the proxy's own answers, its body in the configured profile's error
//! shape (Fitbit's, or RFC 9457 problem details), always with
//! `x-fitbit-proxy-error`, and on a 429 the proxy's view of the quota in
//! the configured dialect's headers. The only place that inspects errors.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Request, Response, Version};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::Body;
use crate::config::{Config, Dialect};
use crate::error::BoxError;
use crate::error::{describe_chain, retry_after_secs, ProxyError};
use crate::pacing::dialect::own;
use crate::profile::{Profile, PROXY_ERROR_HEADER};

/// How the proxy's own answers look: the profile's error body, the
/// dialect's quota headers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Answers {
    pub profile: Profile,
    pub headers: Dialect,
}

impl Answers {
    pub fn of(cfg: &Config) -> Self {
        Answers {
            profile: cfg.profile,
            headers: cfg.rate_limit.headers,
        }
    }
}

/// The proxy's own answer for `err`: its status, a body in the profile's
/// error shape, and `x-fitbit-proxy-error` naming the kind.
pub(crate) fn answer(err: &ProxyError, answers: Answers) -> Response<Body> {
    let (parts, body) = answer_parts(err, answers);
    Response::from_parts(parts, Body::full(body))
}

/// [`answer`]'s head and body, for a connection driver that writes the
/// answer itself (`inbound/refusal.rs`).
pub(crate) fn answer_parts(err: &ProxyError, answers: Answers) -> (http::response::Parts, Bytes) {
    let (status, code) = err.status_and_code();
    let (content_type, body) = answers.profile.error_body(status, code, &err.to_string());
    let body = Bytes::from(body);
    let (mut parts, ()) = Response::new(()).into_parts();
    parts.status = status;
    let headers = &mut parts.headers;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(PROXY_ERROR_HEADER, HeaderValue::from_static(code));
    if let Some(after) = err.retry_after() {
        headers.insert(RETRY_AFTER, retry_after_value(after));
    }
    if let ProxyError::RateLimited { view, .. } = err {
        own::write(answers.headers, view, headers);
    }
    (parts, body)
}

/// `Retry-After` in whole seconds, rounded up so a client never comes back early.
pub(crate) fn retry_after_value(after: Duration) -> HeaderValue {
    HeaderValue::from(retry_after_secs(after))
}

/// Finds a `ProxyError` anywhere in an error's source chain.
fn find_proxy_error(err: BoxError) -> ProxyError {
    let err = match err.downcast::<ProxyError>() {
        Ok(e) => return *e,
        Err(other) => other,
    };
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = source {
        if let Some(pe) = e.downcast_ref::<ProxyError>() {
            return pe.clone();
        }
        source = e.source();
    }
    ProxyError::UpstreamUnreachable(describe_chain(err.as_ref()))
}

#[derive(Debug, Clone, Default)]
pub struct RespondLayer {
    answers: Answers,
}

impl RespondLayer {
    pub fn new(answers: Answers) -> Self {
        RespondLayer { answers }
    }
}

impl<S> Layer<S> for RespondLayer {
    type Service = Respond<S>;
    fn layer(&self, inner: S) -> Respond<S> {
        Respond {
            inner,
            answers: self.answers,
            not_ready: None,
        }
    }
}

#[derive(Debug)]
pub struct Respond<S> {
    inner: S,
    answers: Answers,
    /// An error from the inner `poll_ready`, answered by the next call:
    /// this layer itself is always ready, since it answers every error.
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for Respond<S> {
    fn clone(&self) -> Self {
        Respond {
            inner: self.inner.clone(),
            answers: self.answers,
            not_ready: None,
        }
    }
}

impl<S, B> Service<Request<B>> for Respond<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.not_ready.is_none() {
            if let Err(err) = std::task::ready!(self.inner.poll_ready(cx)) {
                self.not_ready = Some(err);
            }
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let close_after = request_may_leave_body_unread(&req);
        let state = match self.not_ready.take() {
            Some(err) => State::Failed { error: Some(err) },
            None => State::Running {
                inner: self.inner.call(req),
            },
        };
        ResponseFuture {
            state,
            close_after,
            answers: self.answers,
        }
    }
}

/// An HTTP/1 request with a body that a refusal leaves unread: its connection
/// is closed after the answer, so the unread bytes are never parsed as a
/// next request.
fn request_may_leave_body_unread<B>(req: &Request<B>) -> bool {
    req.version() <= Version::HTTP_11
        && (req.headers().contains_key(http::header::TRANSFER_ENCODING)
            || req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .is_some_and(|v| v.as_bytes() != b"0"))
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
        close_after: bool,
        answers: Answers,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] inner: F },
        Failed { error: Option<BoxError> },
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, BoxError>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.state.project() {
            StateProj::Running { inner } => std::task::ready!(inner.poll(cx)),
            StateProj::Failed { error } => Err(error.take().expect("polled after completion")),
        };
        let err = match result {
            Ok(res) => return Poll::Ready(Ok(res)),
            Err(err) => find_proxy_error(err),
        };
        let (status, code) = err.status_and_code();
        // A token outage is logged by the refresher once per attempt, and
        // pacing refusals are counted: neither needs a line per request.
        let quiet = matches!(
            err,
            ProxyError::TokenUnavailable { .. } | ProxyError::QueueFull { .. }
        );
        if status.is_server_error() && !quiet {
            tracing::warn!(status = status.as_u16(), error = code, "{err}");
        } else {
            tracing::debug!(status = status.as_u16(), error = code, "{err}");
        }
        let mut res = answer(&err, *this.answers);
        if *this.close_after {
            res.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(res))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cause_maps_to_its_spec_row() {
        let table: Vec<(ProxyError, u16, &str)> = vec![
            (ProxyError::BadRequest("x"), 400, "bad_request"),
            (ProxyError::Forbidden("x"), 403, "forbidden"),
            (ProxyError::MethodNotAllowed("x"), 405, "method_not_allowed"),
            (ProxyError::UriTooLong, 414, "uri_too_long"),
            (ProxyError::HeadTooLarge, 431, "header_too_large"),
            (
                ProxyError::ClientTimeout(Duration::from_secs(1)),
                408,
                "request_timeout",
            ),
            (
                ProxyError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                ProxyError::TokenUnavailable {
                    reason: "x".into(),
                    retry_after: Duration::from_millis(1500),
                },
                503,
                "token_unavailable",
            ),
            (
                ProxyError::UpstreamUnreachable("x".into()),
                502,
                "upstream_unreachable",
            ),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                504,
                "upstream_timeout",
            ),
        ];
        for (err, status, code) in table {
            let res = answer(&err, Answers::default());
            assert_eq!(res.status().as_u16(), status);
            assert_eq!(res.headers()[PROXY_ERROR_HEADER], code);
            assert_eq!(res.headers()[CONTENT_TYPE], "application/json");
            if code == "token_unavailable" {
                assert_eq!(res.headers()[RETRY_AFTER], "2");
            }
        }
    }

    #[test]
    fn finds_a_cause_behind_other_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("wrapper")]
        struct Wrapper(#[source] ProxyError);
        let err: BoxError = Box::new(Wrapper(ProxyError::PayloadTooLarge { limit: 5 }));
        assert!(matches!(
            find_proxy_error(err),
            ProxyError::PayloadTooLarge { limit: 5 }
        ));
        let other: BoxError = "boom".into();
        assert!(matches!(
            find_proxy_error(other),
            ProxyError::UpstreamUnreachable(_)
        ));
    }
}
