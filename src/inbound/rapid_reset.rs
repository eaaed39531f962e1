//! HTTP/2 Rapid Reset after acceptance (CVE-2023-44487): an h2 connection
//! whose client resets most of the streams the service took, before their
//! answers were complete, is sent GOAWAY and then closed.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use http::Request;
use hyper::body::Incoming;

use super::watch::{Watch, Watching};

/// Rapid Reset after acceptance (CVE-2023-44487): hyper bounds streams
/// reset *before* the service takes them (accept.rs), not those reset while
/// they wait for a pacing slot or the upstream. Like Envoy 1.27.1, an h2
/// connection is closed (GOAWAY, then a close) once at least this many of
/// its streams were reset before their answer was complete and they are
/// more than half of the streams it opened. Envoy waits for 500 streams; a
/// stream here can hold a pacing-queue place, so fewer.
pub(crate) const H2_PREMATURE_RESETS_MIN: u32 = 100;

/// The streams of one HTTP/2 connection that the service took, and those
/// the client reset before their answer was complete: it cancelled them
/// while they waited for a pacing slot or the upstream, or while their body
/// was sent (hyper then drops the request's future or its response body).
#[derive(Default)]
pub(crate) struct Resets {
    opened: AtomicU32,
    premature: AtomicU32,
    /// The connection's task, woken when the limit is passed.
    conn_task: AtomicWaker,
}

impl Resets {
    /// The premature resets, once they are at least
    /// [`H2_PREMATURE_RESETS_MIN`] and more than half the streams opened.
    fn over_limit(&self) -> Option<u32> {
        let premature = self.premature.load(Ordering::Relaxed);
        let opened = self.opened.load(Ordering::Relaxed);
        (premature >= H2_PREMATURE_RESETS_MIN && u64::from(premature) * 2 > u64::from(opened))
            .then_some(premature)
    }
}

/// One stream's end: counted as premature when dropped before its answer
/// was complete.
pub(crate) struct StreamEnd {
    resets: Arc<Resets>,
    complete: AtomicBool,
}

impl Drop for StreamEnd {
    fn drop(&mut self) {
        if self.complete.load(Ordering::Relaxed) {
            return;
        }
        self.resets.premature.fetch_add(1, Ordering::Relaxed);
        if self.resets.over_limit().is_some() {
            self.resets.conn_task.wake();
        }
    }
}

/// Each stream the service takes is counted; its [`StreamEnd`] counts it
/// as premature if dropped before its answer was complete.
impl Watch for Arc<Resets> {
    type Each = StreamEnd;

    fn taken(&self, _req: &Request<Incoming>) -> StreamEnd {
        self.opened.fetch_add(1, Ordering::Relaxed);
        StreamEnd {
            resets: Arc::clone(self),
            complete: AtomicBool::new(false),
        }
    }
}

/// An answer's body that ended, to its end or with an error (that reset is
/// the proxy's, not the client's), is complete.
impl Watching for StreamEnd {
    fn ended(&self, _to_its_end: bool) {
        self.complete.store(true, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// An HTTP/2 connection closed for Rapid Reset after acceptance
    /// ([`H2_PREMATURE_RESETS_MIN`]): gracefully (GOAWAY) when
    /// its client passes the limit, then at once if it goes on resetting
    /// as many streams again (a client that does not answer the GOAWAY's
    /// PING keeps its streams accepted).
    pub(crate) struct ResetLimit<C> {
        #[pin]
        conn: C,
        graceful: fn(Pin<&mut C>),
        resets: Arc<Resets>,
        goaway_at: Option<u32>,
        peer: SocketAddr,
    }
}

impl<C> ResetLimit<C> {
    /// Watches `conn`, whose streams `resets` counts; `graceful` starts its
    /// graceful shutdown (GOAWAY).
    pub(crate) fn new(
        conn: C,
        graceful: fn(Pin<&mut C>),
        resets: Arc<Resets>,
        peer: SocketAddr,
    ) -> Self {
        ResetLimit {
            conn,
            graceful,
            resets,
            goaway_at: None,
            peer,
        }
    }

    /// Starts the watched connection's graceful shutdown (GOAWAY).
    pub(crate) fn graceful_shutdown(self: Pin<&mut Self>) {
        let this = self.project();
        (this.graceful)(this.conn);
    }
}

impl<C: Future<Output = hyper::Result<()>>> Future for ResetLimit<C> {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        let mut this = self.project();
        this.resets.conn_task.register(cx.waker());
        if let Some(premature) = this.resets.over_limit() {
            let peer = *this.peer;
            match *this.goaway_at {
                None => {
                    let opened = this.resets.opened.load(Ordering::Relaxed);
                    tracing::warn!(%peer, premature, opened, "HTTP/2 client reset most of its streams before their answer (Rapid Reset, CVE-2023-44487); GOAWAY");
                    *this.goaway_at = Some(premature);
                    (this.graceful)(this.conn.as_mut());
                }
                Some(at) if premature - at >= H2_PREMATURE_RESETS_MIN => {
                    tracing::debug!(%peer, premature, "HTTP/2 client still resetting streams after GOAWAY; connection closed");
                    return Poll::Ready(Ok(()));
                }
                Some(_) => {}
            }
        }
        this.conn.poll(cx)
    }
}
