//! An idle timeout between the frames of a body, for both directions: a
//! client that stops sending its upload (a slow POST) and an
//! upstream that sends its headers and then stalls the body.
//!
//! The clock runs only while the body's reader is waiting on it: time spent
//! by the reader elsewhere (a pacing slot, a slow upstream that does not
//! pull the upload, a slow client that does not read the answer) is not the
//! body's fault and is not counted. Once the bound passes with no frame,
//! the body ends with an error naming the direction; the reader then aborts
//! (the upstream request is dropped, or the client's connection is reset).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::error::BoxError;

/// Which side went quiet, for the error and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client's request body (`listen.header_read_timeout`).
    Client,
    /// The upstream's response body (`upstream.request_timeout`).
    Upstream,
}

/// The body went `after` without a frame.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} sent no body data for {after:?}", match .side { Side::Client => "the client", Side::Upstream => "the upstream" })]
pub(crate) struct BodyStalled {
    pub side: Side,
    pub after: Duration,
}

pin_project_lite::pin_project! {
    /// `inner`, failing with [`BodyStalled`] once it has been waited on for
    /// `after` without yielding a frame.
    pub struct IdleTimeout<B> {
        #[pin]
        inner: B,
        after: Duration,
        side: Side,
        // Allocated on the first wait only; re-armed in place afterwards.
        sleep: Option<Pin<Box<Sleep>>>,
        armed: bool,
    }
}

impl<B> IdleTimeout<B> {
    pub(crate) fn new(inner: B, after: Duration, side: Side) -> Self {
        IdleTimeout {
            inner,
            after,
            side,
            sleep: None,
            armed: false,
        }
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            *this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = Instant::now() + *this.after;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !*this.armed {
            sleep.as_mut().reset(deadline);
            *this.armed = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let stalled = BodyStalled {
                    side: *this.side,
                    after: *this.after,
                };
                // A client's stall is answered (408) and logged with the
                // answer; an upstream's ends a response already under way.
                if stalled.side == Side::Upstream {
                    tracing::warn!("{stalled}: response aborted");
                }
                Poll::Ready(Some(Err(Box::new(stalled))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>;

    fn channel() -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>,
        StreamBody<tokio_stream_shim::Rx>,
    ) {
        let (tx, rx): (_, Frames) = tokio::sync::mpsc::channel(4);
        (tx, StreamBody::new(tokio_stream_shim::Rx(rx)))
    }

    /// A `Stream` over an mpsc receiver, without pulling in tokio-stream.
    mod tokio_stream_shim {
        use super::*;
        pub(super) struct Rx(pub(super) Frames);
        impl futures_util::Stream for Rx {
            type Item = Result<Frame<Bytes>, std::io::Error>;
            fn poll_next(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                self.0.poll_recv(cx)
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn frames_within_the_bound_pass_and_a_stall_ends_the_body() {
        let (tx, body) = channel();
        let mut body = IdleTimeout::new(body, Duration::from_secs(10), Side::Client);
        let feeder = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(9)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .unwrap();
            }
            // Then nothing, with the sender kept open.
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let start = Instant::now();
        for _ in 0..5 {
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        let err = body.frame().await.unwrap().unwrap_err();
        let stalled = err.downcast_ref::<BodyStalled>().expect("a BodyStalled");
        assert_eq!(stalled.side, Side::Client);
        assert_eq!(start.elapsed(), Duration::from_secs(45 + 10));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_reader_spends_elsewhere_is_not_counted() {
        let (tx, body) = channel();
        let mut body = IdleTimeout::new(body, Duration::from_secs(10), Side::Upstream);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        // The reader is away for longer than the bound: the frame was
        // already there, so nothing fires.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(body.frame().await.unwrap().is_ok());
        drop(tx);
        assert!(body.frame().await.is_none());
    }
}
