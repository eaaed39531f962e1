//! The one body type that travels through the stack, in both directions:
//! client uploads (size-limited), upstream downloads (streamed), and the
//! proxy's own small answers. A named type rather than an alias, so that
//! services generic over it stay `Send` in async code (rust#102211).

use std::any::Any;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::error::BoxError;

/// A streaming body: the common kinds inline (no allocation, no dynamic
/// call), anything else boxed.
pub struct Body(Kind);

enum Kind {
    Empty,
    Full(Full<Bytes>),
    /// Straight from hyper (an upstream answer).
    Incoming(Incoming),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    pub fn empty() -> Body {
        Body(Kind::Empty)
    }

    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body(Kind::Full(Full::new(bytes.into())))
    }

    /// Wraps any body whose error converts into `BoxError`; a hyper
    /// `Incoming` or a `Body` is kept as is, anything else boxed.
    pub fn new<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut slot = Some(body);
        let any = &mut slot as &mut dyn Any;
        if let Some(incoming) = any.downcast_mut::<Option<Incoming>>() {
            return Body(Kind::Incoming(incoming.take().expect("just put there")));
        }
        if let Some(body) = any.downcast_mut::<Option<Body>>() {
            return body.take().expect("just put there");
        }
        let body = slot.take().expect("just put there");
        Body(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Body")
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Kind::Incoming(incoming) => Pin::new(incoming).poll_frame(cx).map_err(Into::into),
            Kind::Boxed(boxed) => Pin::new(boxed).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Empty => true,
            Kind::Full(full) => full.is_end_stream(),
            Kind::Incoming(incoming) => incoming.is_end_stream(),
            Kind::Boxed(boxed) => boxed.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(full) => full.size_hint(),
            Kind::Incoming(incoming) => incoming.size_hint(),
            Kind::Boxed(boxed) => boxed.size_hint(),
        }
    }
}
