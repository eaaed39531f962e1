//! Deadlines on the client's side of a connection that hyper has no knob
//! for (accept.rs hooks them in around each connection):
//!
//! - idle: a connection with no open request for
//!   `listen.header_read_timeout` is closed gracefully, on HTTP/2 with
//!   GOAWAY, even if it answers every PING. On HTTP/1
//!   hyper's head timer, which also runs between keep-alive requests, does
//!   the same.
//! - send: a client that takes no response bytes for `listen.send_timeout`
//!   is cut off; its requests are dropped, and with them their upstream
//!   side. A slow reader that keeps taking bytes is not cut.
//!
//! [`Activity`] is shared by [`TrackIo`] (bytes the client's socket took,
//! HTTP/1 only: on HTTP/2, PING and SETTINGS frames are bytes too),
//! [`Track`] (open requests, and response bodies waiting for hyper to pull
//! again) and [`supervise`], which drives the connection and checks both
//! bounds.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tower_service::Service;

use crate::body::Body;
use crate::error::BoxError;

/// What one connection is doing, in milliseconds since it started.
pub(crate) struct Activity {
    origin: Instant,
    /// When the client last took response bytes, or a response became
    /// ready to send.
    progress: AtomicU64,
    /// When the last open request ended (or the connection started).
    idle_since: AtomicU64,
    open: AtomicUsize,
    /// Response bodies that yielded a frame (or none yet) and wait for
    /// hyper to pull again: hyper pulls when the client has taken enough.
    waiting: AtomicUsize,
    /// The last write hyper attempted was refused (HTTP/1 only): its write
    /// buffer still holds bytes.
    write_blocked: AtomicBool,
}

/// Why [`supervise`] ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Idle,
    Stalled,
}

impl Activity {
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            origin: Instant::now(),
            progress: AtomicU64::new(0),
            idle_since: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            write_blocked: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Whether hyper's last write on this HTTP/1 connection was refused
    /// (connection.rs parks only when it was not).
    pub(crate) fn write_blocked(&self) -> bool {
        self.write_blocked.load(Ordering::Relaxed)
    }

    fn note_write_blocked(&self, blocked: bool) {
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
    }

    /// When the last open request ended (or the connection started).
    pub(crate) fn idle_since(&self) -> Instant {
        self.origin + Duration::from_millis(self.idle_since.load(Ordering::Relaxed))
    }

    fn progressed(&self) {
        self.progress.store(self.now(), Ordering::Relaxed);
    }

    /// A verdict, or the next moment worth checking again.
    fn check(&self, idle_after: Duration, send_timeout: Duration) -> Result<Instant, Verdict> {
        let now = self.now();
        let (since, bound, verdict) = if self.waiting.load(Ordering::Acquire) > 0 {
            let since = self.progress.load(Ordering::Relaxed);
            (since, send_timeout, Verdict::Stalled)
        } else if self.open.load(Ordering::Acquire) == 0 {
            let since = self.idle_since.load(Ordering::Relaxed);
            (since, idle_after, Verdict::Idle)
        } else {
            // Requests under way but nothing to send yet (waiting for a
            // pacing slot or the upstream, each bounded elsewhere): look
            // again later, as requests run on other tasks under HTTP/2.
            (now, idle_after.min(send_timeout), Verdict::Idle)
        };
        let due = since.saturating_add(bound.as_millis() as u64);
        if now >= due {
            return Err(verdict);
        }
        Ok(self.origin + Duration::from_millis(due))
    }
}

/// Where the listener is in its life, as each connection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Serving,
    /// Close gracefully: finish what is under way, take nothing new.
    Draining,
    /// `shutdown_grace` is over: drop the connection now.
    Cutting,
}

/// The bounds [`supervise`] applies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// No open request for this long: close (HTTP/2 GOAWAY).
    pub(crate) idle: Duration,
    /// No response bytes taken for this long while some wait: cut off.
    pub(crate) send: Duration,
}

/// Drives `conn` to its end. `graceful` starts a graceful close (GOAWAY
/// on HTTP/2): on draining, and once the connection has been idle for
/// `bounds.idle`. A client that takes no response bytes for `bounds.send`
/// has its connection dropped at once; so has an idle connection still not
/// closed `bounds.send` after its graceful close (HTTP/1 flushing the tail
/// of an answer to a client that stopped reading: the body is done, so it
/// no longer counts as waiting), and every connection once the phase is
/// [`Phase::Cutting`].
pub(crate) async fn supervise<C, E>(
    conn: Pin<&mut C>,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Activity,
    bounds: Bounds,
    phase: watch::Receiver<Phase>,
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    Supervisor::new(bounds, phase)
        .supervise(conn, graceful, activity)
        .await
}

/// [`supervise`]'s timer and view of the listener's phase, kept across
/// the requests of a parked HTTP/1 connection (connection.rs), so that each
/// request does not set up a timer and a watch of its own.
pub(crate) struct Supervisor {
    bounds: Bounds,
    phase: watch::Receiver<Phase>,
    listening: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Supervisor {
    pub(crate) fn new(bounds: Bounds, phase: watch::Receiver<Phase>) -> Self {
        Supervisor {
            bounds,
            phase,
            listening: true,
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        }
    }

    /// A parked HTTP/1 connection waits for its next request on this
    /// supervisor's timer: set to the idle bound from the connection's
    /// last request (part of which it may have spent before it parked).
    pub(crate) fn park(&mut self, activity: &Activity) {
        self.timer
            .as_mut()
            .reset(activity.idle_since() + self.bounds.idle);
    }

    /// Ready when a parked connection has waited out its idle bound.
    pub(crate) fn poll_parked(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.timer.as_mut().poll(cx)
    }

    /// The next request came: the timer is set back to the next moment
    /// worth checking `activity` (now, if a bound is already over).
    pub(crate) fn unpark(&mut self, activity: &Activity) {
        let next = activity
            .check(self.bounds.idle, self.bounds.send)
            .unwrap_or_else(|_| Instant::now());
        self.timer.as_mut().reset(next);
    }

    /// [`supervise`], with this supervisor's timer and phase.
    pub(crate) async fn supervise<C, E>(
        &mut self,
        mut conn: Pin<&mut C>,
        graceful: impl Fn(Pin<&mut C>),
        activity: &Activity,
    ) -> Result<(), E>
    where
        C: Future<Output = Result<(), E>>,
    {
        let Supervisor {
            bounds,
            phase,
            listening,
            timer,
        } = self;
        let bounds = *bounds;
        let mut closing = false;
        let mut idle_close: Option<Instant> = None;
        loop {
            tokio::select! {
                result = conn.as_mut() => return result,
                changed = phase.changed(), if *listening => {
                    *listening = changed.is_ok();
                    match *phase.borrow_and_update() {
                        Phase::Serving => {}
                        Phase::Draining => {
                            if !std::mem::replace(&mut closing, true) {
                                graceful(conn.as_mut());
                            }
                        }
                        Phase::Cutting => return Ok(()),
                    }
                }
                () = timer.as_mut() => match activity.check(bounds.idle, bounds.send) {
                    Ok(next) => timer.as_mut().reset(next),
                    Err(Verdict::Stalled) => {
                        tracing::info!(after = ?bounds.send, "the client took no response bytes; connection closed (listen.send_timeout)");
                        return Ok(());
                    }
                    Err(Verdict::Idle) => {
                        let since = *idle_close.get_or_insert_with(Instant::now);
                        if !std::mem::replace(&mut closing, true) {
                            tracing::debug!("idle connection closed");
                            graceful(conn.as_mut());
                        }
                        if since.elapsed() >= bounds.send {
                            tracing::info!(after = ?bounds.send, "the client took no response bytes; connection closed (listen.send_timeout)");
                            return Ok(());
                        }
                        // Still watch for a stall while the close completes.
                        timer.as_mut().reset(Instant::now() + bounds.send.min(bounds.idle));
                    }
                },
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The client's socket; each write it takes counts as progress.
    pub(crate) struct TrackIo<T> {
        #[pin]
        inner: T,
        activity: Option<Arc<Activity>>,
    }
}

impl<T> TrackIo<T> {
    /// `activity` is `None` on HTTP/2, whose control frames are writes too.
    pub(crate) fn new(inner: T, activity: Option<Arc<Activity>>) -> Self {
        TrackIo { inner, activity }
    }

    pub(crate) fn into_inner(self) -> T {
        self.inner
    }
}

fn note_written(activity: &Option<Arc<Activity>>, written: &Poll<io::Result<usize>>) {
    if let Some(activity) = activity {
        if let Poll::Ready(Ok(1..)) = written {
            activity.progressed();
        }
        activity.note_write_blocked(written.is_pending());
    }
}

impl<T: AsyncRead> AsyncRead for TrackIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.project().inner.poll_read(cx, buf)
    }
}

impl<T: AsyncWrite> AsyncWrite for TrackIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = this.inner.poll_write(cx, buf);
        note_written(this.activity, &written);
        written
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = this.inner.poll_write_vectored(cx, bufs);
        note_written(this.activity, &written);
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let flushed = this.inner.poll_flush(cx);
        if let Some(activity) = this.activity {
            activity.note_write_blocked(flushed.is_pending());
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// The served stack, counting open requests and their response bodies.
#[derive(Clone)]
pub(crate) struct Track<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Track<S> {
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Track { inner, activity }
    }
}

impl<S> Service<Request<Incoming>> for Track<S>
where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.activity.open.fetch_add(1, Ordering::AcqRel);
        TrackFuture {
            inner: self.inner.call(req),
            open: Some(Open {
                activity: Arc::clone(&self.activity),
                waiting: false,
            }),
        }
    }
}

/// One open request; dropping it (with its response body, or earlier)
/// closes it.
struct Open {
    activity: Arc<Activity>,
    /// This body is counted in `Activity::waiting`.
    waiting: bool,
}

impl Open {
    fn set_waiting(&mut self, waiting: bool) {
        if self.waiting == waiting {
            return;
        }
        self.waiting = waiting;
        if waiting {
            self.activity.waiting.fetch_add(1, Ordering::AcqRel);
        } else {
            self.activity.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.set_waiting(false);
        let activity = &self.activity;
        activity.idle_since.store(activity.now(), Ordering::Relaxed);
        activity.open.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct TrackFuture<F> {
        #[pin]
        inner: F,
        open: Option<Open>,
    }
}

impl<F> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<TrackedBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(res) = std::task::ready!(this.inner.poll(cx));
        let mut open = this.open.take().expect("polled after completion");
        // The answer is ready: from now on the client must take it.
        open.activity.progressed();
        open.set_waiting(true);
        Poll::Ready(Ok(res.map(|inner| TrackedBody { inner, open })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts as waiting between its frames, until
    /// hyper pulls again.
    pub(crate) struct TrackedBody {
        #[pin]
        inner: Body,
        open: Open,
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        if this.open.waiting {
            this.open.activity.progressed();
            this.open.set_waiting(false);
        }
        let frame = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &frame {
            this.open.set_waiting(true);
        }
        frame
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

    const IDLE: Duration = Duration::from_secs(10);
    const SEND: Duration = Duration::from_secs(60);

    /// An idle connection whose graceful close never completes (a client
    /// that does not read the tail of its last answer) is dropped
    /// `send_timeout` after the close began.
    #[tokio::test(start_paused = true)]
    async fn an_idle_close_that_never_completes_is_cut_after_send_timeout() {
        let a = Activity::new();
        let closed = std::sync::atomic::AtomicBool::new(false);
        let (_phase, rx) = watch::channel(Phase::Serving);
        let never = std::pin::pin!(std::future::pending::<Result<(), ()>>());
        let bounds = Bounds {
            idle: IDLE,
            send: SEND,
        };
        let started = Instant::now();
        let graceful = |_: Pin<&mut _>| closed.store(true, Ordering::SeqCst);
        let cut = tokio::time::timeout(IDLE + SEND * 2, supervise(never, graceful, &a, bounds, rx));
        assert_eq!(cut.await, Ok(Ok(())), "supervise gave up");
        assert!(
            closed.load(Ordering::SeqCst),
            "the graceful close came first"
        );
        let took = started.elapsed();
        assert!(
            took >= IDLE + SEND && took <= IDLE + SEND + IDLE,
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_after_the_bound_with_nothing_open() {
        let a = Activity::new();
        assert!(a.check(IDLE, SEND).is_ok());
        tokio::time::advance(IDLE).await;
        assert_eq!(a.check(IDLE, SEND), Err(Verdict::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_request_is_not_idle_and_a_waiting_body_stalls_after_send_timeout() {
        let a = Activity::new();
        let mut open = Open {
            activity: Arc::clone(&a),
            waiting: false,
        };
        a.open.fetch_add(1, Ordering::AcqRel);
        tokio::time::advance(IDLE * 3).await;
        assert!(a.check(IDLE, SEND).is_ok(), "waiting on the upstream");
        a.progressed();
        open.set_waiting(true);
        tokio::time::advance(SEND - Duration::from_millis(1)).await;
        assert!(a.check(IDLE, SEND).is_ok());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(a.check(IDLE, SEND), Err(Verdict::Stalled));
        drop(open);
        assert_eq!(a.waiting.load(Ordering::Acquire), 0);
        assert_eq!(a.open.load(Ordering::Acquire), 0);
        assert!(a.check(IDLE, SEND).is_ok(), "idle starts when it closed");
    }
}
