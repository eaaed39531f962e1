//! The auth layer: attaches the current token as `Authorization: Bearer …`
//! (marked sensitive), and handles an upstream `401` that says the token
//! was revoked or expired: that token is invalidated, and the request
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
use crate::body::Body;
use crate::error::BoxError;
use crate::error::ProxyError;
use crate::profile::fitbit;

/// Bodies up to this size are kept so that the request can be replayed
/// with a new token; larger or unsized bodies stream and are not replayed.
pub(crate) const MAX_REPLAY_BODY: u64 = 64 * 1024;

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
    type Future = ResponseFuture<S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> ResponseFuture<S> {
        // A token at hand and no body (nearly every request): sent from
        // here, with no box; only a 401 goes on to the async path. The
        // request can still be replayed: its head is kept, its body is empty.
        if is_empty(req.body()) {
            if let Some(token) = self.tokens.valid() {
                let head = copy_head(&req);
                let sending = self.inner.call(with_token(req, &token));
                return ResponseFuture {
                    state: State::Sent {
                        sending,
                        replay: Some(Replay {
                            tokens: Arc::clone(&self.tokens),
                            inner: self.inner.clone(),
                            token,
                            head,
                        }),
                    },
                };
            }
        }
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture {
            state: State::Boxed {
                inner: Box::pin(authorize(Arc::clone(&self.tokens), inner, req)),
            },
        }
    }
}

/// What a request sent on the fast path needs to be replayed after a 401.
struct Replay<S> {
    tokens: Arc<TokenSource>,
    inner: S,
    token: Arc<Token>,
    head: http::request::Parts,
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
        .map(|bytes| (copy_head_of(&parts), bytes.clone()));
    let body = kept.map_or_else(|b| b, Body::full);
    let res = inner
        .call(with_token(Request::from_parts(parts, body), &token))
        .await?;
    if res.status() != StatusCode::UNAUTHORIZED {
        return Ok(res);
    }
    after_401(tokens, inner, token, replay, res).await
}

/// An upstream 401: if it says the token was revoked or expired, that
/// token is invalidated and the request replayed once (when it was kept).
async fn after_401<S>(
    tokens: Arc<TokenSource>,
    mut inner: S,
    token: Arc<Token>,
    replay: Option<(http::request::Parts, Bytes)>,
    res: Response<Body>,
) -> Result<Response<Body>, BoxError>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send,
    S::Future: Send,
{
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

/// Known to be empty and ended: nothing to read or keep.
fn is_empty(body: &Body) -> bool {
    body.size_hint().exact() == Some(0) && body.is_end_stream()
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
        // Nothing to read: no collecting, no allocation.
        Some(0) if body.is_end_stream() => Ok(Ok(Bytes::new())),
        Some(len) if len <= MAX_REPLAY_BODY => Ok(Ok(body.collect().await?.to_bytes())),
        _ => Ok(Err(body)),
    }
}

/// The request head again, for a replay (extensions are not carried).
fn copy_head(req: &Request<Body>) -> http::request::Parts {
    let mut head = Request::new(()).into_parts().0;
    head.method = req.method().clone();
    head.uri = req.uri().clone();
    head.version = req.version();
    head.headers = req.headers().clone();
    head
}

fn copy_head_of(parts: &http::request::Parts) -> http::request::Parts {
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

pin_project_lite::pin_project! {
    /// The auth layer's future: sent at once (a 401 then goes on boxed), or
    /// boxed from the start when it must wait for a token or keep a body.
    pub struct ResponseFuture<S: Service<Request<Body>>> {
        #[pin]
        state: State<S>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<Body>>> {
        Sent {
            #[pin]
            sending: S::Future,
            replay: Option<Replay<S>>,
        },
        Boxed {
            inner: BoxFuture<'static, Result<Response<Body>, BoxError>>,
        },
    }
}

impl<S> Future for ResponseFuture<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Output = Result<Response<Body>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Sent { sending, replay } => {
                    let res = std::task::ready!(sending.poll(cx))?;
                    if res.status() != StatusCode::UNAUTHORIZED {
                        return Poll::Ready(Ok(res));
                    }
                    let Replay {
                        tokens,
                        inner,
                        token,
                        head,
                    } = replay.take().expect("polled after completion");
                    let replay = Some((head, Bytes::new()));
                    Box::pin(after_401(tokens, inner, token, replay, res))
                }
                StateProj::Boxed { inner } => return inner.as_mut().poll(cx),
            };
            this.state.set(State::Boxed { inner: next });
        }
    }
}
