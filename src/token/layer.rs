//! The auth layer: attaches the current token as `Authorization: Bearer …`
//! (marked sensitive), and handles an upstream `401` that says the token
//! was revoked or expired (T6): that token is invalidated, and the request
//! is replayed once with the next one when its body could be kept.

use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use tower_layer::Layer;
use tower_service::Service;

use super::{Token, TokenSource, Unavailable};
use crate::body::{Body, BoxError};
use crate::fitbit;
use crate::respond::ProxyError;

/// Bodies up to this size are kept so that the request can be replayed
/// with a new token; larger or unsized bodies stream and are not replayed.
pub const MAX_REPLAY_BODY: u64 = 64 * 1024;

/// A 401 body larger than this is not a token error; it is passed on unread.
const MAX_401_BODY: u64 = 64 * 1024;

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
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture {
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture {
            inner: Box::pin(authorize(Arc::clone(&self.tokens), inner, req)),
        }
    }
}

async fn authorize<S>(
    tokens: Arc<TokenSource>,
    mut inner: S,
    req: Request<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send,
    S::Future: Send,
{
    let token = tokens.acquire().await.map_err(unavailable)?;
    let (parts, body) = req.into_parts();
    let kept = keep_if_small(body).await?;
    let replay = kept
        .as_ref()
        .ok()
        .map(|bytes| (copy_head(&parts), bytes.clone()));
    let body = kept.map_or_else(|b| b, Body::full);
    let res = inner
        .call(with_token(Request::from_parts(parts, body), &token))
        .await?;
    if res.status() != StatusCode::UNAUTHORIZED {
        return Ok(res);
    }
    let (res, revoked) = read_401(res).await?;
    if !revoked {
        return Ok(res);
    }
    tokens.invalidate(&token);
    let Some((head, bytes)) = replay else {
        tracing::debug!("token revoked; request body not kept, so the 401 goes back to the client");
        return Ok(res);
    };
    let fresh = tokens.acquire().await.map_err(unavailable)?;
    let again = Request::from_parts(head, Body::full(bytes));
    // Ready the clone again: tower services must be polled before each call.
    std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(with_token(again, &fresh)).await
}

fn with_token(mut req: Request<Body>, token: &Token) -> Request<Body> {
    req.headers_mut()
        .insert(AUTHORIZATION, token.header().clone());
    req
}

/// `Ok(Ok(bytes))` when the body is known to be at most
/// [`MAX_REPLAY_BODY`] and was read whole; `Ok(Err(body))` to stream it.
async fn keep_if_small(body: Body) -> Result<Result<Bytes, Body>, BoxError> {
    match body.size_hint().exact() {
        // Nothing to read (most requests): no collecting, no allocation.
        Some(0) if body.is_end_stream() => Ok(Ok(Bytes::new())),
        Some(len) if len <= MAX_REPLAY_BODY => Ok(Ok(body.collect().await?.to_bytes())),
        _ => Ok(Err(body)),
    }
}

/// The request head again, for a replay (extensions are not carried).
fn copy_head(parts: &http::request::Parts) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// Reads a small 401 body to see whether it says the token was revoked or
/// expired; returns the response rebuilt around the bytes it read.
async fn read_401(res: Response<Body>) -> Result<(Response<Body>, bool), BoxError> {
    if res.body().size_hint().lower() > MAX_401_BODY {
        return Ok((res, false));
    }
    let (parts, body) = res.into_parts();
    let bytes = Limited::new(body, MAX_401_BODY as usize)
        .collect()
        .await?
        .to_bytes();
    let revoked =
        fitbit::parse_error(&bytes).is_some_and(|e| fitbit::is_token_rejection(&e.error_type));
    Ok((Response::from_parts(parts, Body::full(bytes)), revoked))
}

fn unavailable(err: Unavailable) -> ProxyError {
    ProxyError::TokenUnavailable {
        retry_after: err.retry_after(),
        reason: err.to_string(),
    }
}

/// The auth layer's future: waiting for a token, the upstream, and perhaps
/// a replay, boxed once per request.
pub struct ResponseFuture {
    inner: BoxFuture<'static, Result<Response<Body>, BoxError>>,
}

impl Future for ResponseFuture {
    type Output = Result<Response<Body>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}
