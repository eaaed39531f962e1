//! The one body type that travels through the stack, in both directions:
//! client uploads (size-limited), upstream downloads (streamed), and the
//! proxy's own small answers. A named type rather than an alias, so that
//! services generic over it stay `Send` in async code (rust#102211).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Errors that cross layer boundaries inside the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body.
pub struct Body(UnsyncBoxBody<Bytes, BoxError>);

impl Body {
    pub fn empty() -> Body {
        Body(Empty::new().map_err(|never| match never {}).boxed_unsync())
    }

    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Body(
            Full::new(bytes.into())
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
    }

    /// Wraps any body whose error converts into `BoxError`.
    pub fn new<B>(body: B) -> Body
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(body.map_err(Into::into).boxed_unsync())
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}
