//! The one retry the upstream service allows itself: a safe, bodiless
//! request that the upstream provably never processed — lost to the
//! keep-alive race on a reused HTTP/1 connection, or refused
//! by an HTTP/2 GOAWAY or REFUSED_STREAM — is sent again on a fresh
//! connection. The decision is a pure function; [`WireIo`] records whether
//! any byte of the current answer has arrived on an HTTP/1 connection.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::Body;

/// RFC 9110 §9.2.2: methods a proxy may repeat on its own.
pub(super) fn is_safe_to_repeat(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The same request with an empty body, for the one retry.
pub(super) fn bodiless_copy(req: &Request<Body>) -> Request<Body> {
    let mut copy = Request::new(Body::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// How an attempt on one upstream connection ended, as far as a retry cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// The connection had carried an earlier request and its answer.
    reused: bool,
    /// Some byte of this request's answer had arrived.
    answered: bool,
    /// The connection closed or reset under the request.
    closed: bool,
    /// HTTP/2: the upstream said it did not process the stream (a GOAWAY
    /// whose last stream id is below it, or REFUSED_STREAM).
    refused: bool,
}

/// Retry only what the upstream never processed, and so spent no quota on:
/// an HTTP/2 stream it refused (RFC 9113 §6.8, §8.7), or the keep-alive
/// race (RFC 9112 §9.3.1), where the upstream closed an idle pooled
/// connection just as it was reused. A fresh connection that closes, or
/// any answer begun, is final.
fn should_retry(attempt: Attempt) -> bool {
    attempt.refused || (attempt.reused && !attempt.answered && attempt.closed)
}

/// Whether the request that failed with `err` may be sent again: `reused`
/// and `answered` describe its HTTP/1 connection (both false on HTTP/2,
/// where only a refusal counts).
pub(super) fn never_processed(err: &hyper::Error, reused: bool, answered: bool) -> bool {
    should_retry(Attempt {
        reused,
        answered,
        closed: closed_under_request(err),
        refused: refused_by_h2(err),
    })
}

/// h2 reports a remote GOAWAY on exactly the streams above its last stream
/// id (and on requests not yet opened); REFUSED_STREAM means the same for
/// one stream.
pub(super) fn refused_by_h2(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<h2::Error>() {
            return e.is_remote()
                && (e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM));
        }
        source = e.source();
    }
    false
}

/// The connection ended (EOF or reset) while a request was in flight.
fn closed_under_request(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if let Some(e) = e.downcast_ref::<hyper::Error>() {
            if e.is_incomplete_message() || e.is_canceled() {
                return true;
            }
        }
        if let Some(e) = e.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe);
        }
        source = e.source();
    }
    false
}

/// Whether any byte of the current answer has arrived on one HTTP/1
/// connection; cleared as each request is sent.
#[derive(Debug, Default)]
pub(super) struct Wire {
    answered: AtomicBool,
}

impl Wire {
    /// A request is about to be sent: nothing of its answer yet.
    pub(super) fn begin(&self) {
        self.answered.store(false, Ordering::Relaxed);
    }

    pub(super) fn answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed)
    }
}

/// An upstream stream that keeps its [`Wire`] up to date (above TLS, so
/// only HTTP bytes count).
pub(super) struct WireIo<T> {
    inner: T,
    wire: Arc<Wire>,
}

impl<T> WireIo<T> {
    pub(super) fn new(inner: T, wire: Arc<Wire>) -> Self {
        WireIo { inner, wire }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WireIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.wire.answered.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WireIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_only_what_the_upstream_never_processed() {
        let race = Attempt {
            reused: true,
            answered: false,
            closed: true,
            refused: false,
        };
        let refused = Attempt {
            reused: false,
            answered: false,
            closed: false,
            refused: true,
        };
        let cases = [
            (race, true),
            (refused, true),
            (
                Attempt {
                    reused: false,
                    ..race
                },
                false,
            ),
            (
                Attempt {
                    answered: true,
                    ..race
                },
                false,
            ),
            (
                Attempt {
                    closed: false,
                    ..race
                },
                false,
            ),
        ];
        for (attempt, want) in cases {
            assert_eq!(should_retry(attempt), want, "{attempt:?}");
        }
    }

    #[test]
    fn only_safe_methods_are_repeated() {
        for (method, want) in [
            (Method::GET, true),
            (Method::HEAD, true),
            (Method::OPTIONS, true),
            (Method::POST, false),
            (Method::PUT, false),
            (Method::DELETE, false),
            (Method::PATCH, false),
        ] {
            assert_eq!(is_safe_to_repeat(&method), want, "{method}");
        }
    }
}
