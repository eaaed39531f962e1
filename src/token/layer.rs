//! The auth layer: attaches the current token as `Authorization: Bearer …`
//! (marked sensitive). Requests wait only when no valid token is held, and
//! then all share one fetch; a failed fetch becomes 503 `token_unavailable`.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::{Fetch, FetchError, TokenSource};
use crate::body::{Body, BoxError};
use crate::respond::ProxyError;

/// How long a client is told to wait after the credentials were refused,
/// and after any other failure to get a token.
const RETRY_AFTER_REJECTED: Duration = Duration::from_secs(60);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct AuthLayer {
    tokens: Arc<TokenSource>,
}

impl AuthLayer {
    pub fn new(tokens: Arc<TokenSource>) -> Self {
        AuthLayer { tokens }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;
    fn layer(&self, inner: S) -> Auth<S> {
        Auth {
            inner,
            tokens: Arc::clone(&self.tokens),
        }
    }
}

#[derive(Clone)]
pub struct Auth<S> {
    inner: S,
    tokens: Arc<TokenSource>,
}

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture<S, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The common case: a valid token is held, nothing to wait for.
        if let Some(token) = self.tokens.valid() {
            req.headers_mut()
                .insert(AUTHORIZATION, token.header().clone());
            return ResponseFuture::Calling {
                inner: self.inner.call(req),
            };
        }
        let clone = self.inner.clone();
        ResponseFuture::Waiting {
            fetch: self.tokens.fetch(),
            service: Some(mem::replace(&mut self.inner, clone)),
            req: Some(req),
        }
    }
}

fn unavailable(err: FetchError) -> ProxyError {
    let retry_after = match err {
        FetchError::Rejected { .. } => RETRY_AFTER_REJECTED,
        _ => RETRY_AFTER_FAILURE,
    };
    ProxyError::TokenUnavailable {
        reason: err.to_string(),
        retry_after,
    }
}

pin_project_lite::pin_project! {
    /// Either waiting for the shared token fetch (then calling the inner
    /// service it holds, already ready), or calling it.
    #[project = Proj]
    pub enum ResponseFuture<S, F> {
        Waiting { fetch: Fetch, service: Option<S>, req: Option<Request<Body>> },
        Calling { #[pin] inner: F },
    }
}

impl<S> Future for ResponseFuture<S, S::Future>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError>,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let (mut service, mut req, token) = match self.as_mut().project() {
                Proj::Calling { inner } => return inner.poll(cx),
                Proj::Waiting {
                    fetch,
                    service,
                    req,
                } => match ready!(Pin::new(fetch).poll(cx)) {
                    Err(err) => return Poll::Ready(Err(unavailable(err).into())),
                    Ok(token) => (
                        service.take().expect("polled after completion"),
                        req.take().expect("polled after completion"),
                        token,
                    ),
                },
            };
            req.headers_mut()
                .insert(AUTHORIZATION, token.header().clone());
            self.set(ResponseFuture::Calling {
                inner: service.call(req),
            });
        }
    }
}

