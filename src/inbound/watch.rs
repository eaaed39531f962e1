//! How a connection's driver sees the requests its service takes and the
//! end of their answers' bodies: the HTTP/1 driver to know when a connection
//! may be parked, the HTTP/2 driver to count streams reset early.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use tower_service::Service;

/// What a connection's driver learns of the requests its service takes:
/// one [`Watching`] per request, which sees the answer's head and is told
/// when hyper has taken the answer's body to its end.
pub(crate) trait Watch {
    type Each: Watching;

    fn taken(&self, req: &Request<Incoming>) -> Self::Each;
}

pub(crate) trait Watching: Send + Sync + 'static {
    /// The answer's head, before hyper encodes it.
    fn head(&self, _headers: &HeaderMap) {}

    /// The answer's body ended: to its end, or with an error.
    fn ended(&self, to_its_end: bool);
}

/// The stack, seen by a connection's driver through a [`Watch`].
#[derive(Clone)]
pub(crate) struct Watched<S, W> {
    pub(crate) inner: S,
    pub(crate) watch: W,
}

impl<S, B, W> Service<Request<Incoming>> for Watched<S, W>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = std::convert::Infallible>,
    W: Watch,
{
    type Response = Response<WatchedBody<B, W::Each>>;
    type Error = std::convert::Infallible;
    type Future = WatchedFuture<S::Future, W::Each>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let each = self.watch.taken(&req);
        WatchedFuture {
            inner: self.inner.call(req),
            each: Some(each),
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct WatchedFuture<F, E> {
        #[pin]
        inner: F,
        each: Option<E>,
    }
}

impl<F, B, E: Watching> Future for WatchedFuture<F, E>
where
    F: Future<Output = Result<Response<B>, std::convert::Infallible>>,
{
    type Output = Result<Response<WatchedBody<B, E>>, std::convert::Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(res) = std::task::ready!(this.inner.poll(cx));
        let each = this.each.take().expect("polled after completion");
        each.head(res.headers());
        Poll::Ready(Ok(res.map(|body| WatchedBody { body, each })))
    }
}

pin_project_lite::pin_project! {
    /// An answer's body, telling its [`Watching`] when hyper has all of it.
    pub(crate) struct WatchedBody<B, E> {
        #[pin]
        body: B,
        each: E,
    }
}

impl<B: http_body::Body, E: Watching> http_body::Body for WatchedBody<B, E> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.each.ended(true),
            Poll::Ready(Some(Err(_))) => this.each.ended(false),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.is_end_stream();
        if end {
            self.each.ended(true);
        }
        end
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
