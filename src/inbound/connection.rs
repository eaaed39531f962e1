//! One accepted connection after its first bytes: h2 (prior knowledge, or
//! after TLS) handed to hyper's HTTP/2 server for its whole life; HTTP/1
//! served by a hyper connection that is *parked* once the client has sent
//! nothing for a second ([`PARK_AFTER`]), or at once when [`WARM_LIMIT`]
//! connections already hold one.
//!
//! Why parked: hyper keeps an HTTP/1 connection's 8 KiB read buffer, its
//! 8 KiB write buffer and its dispatcher state for as long as the connection
//! is open, so thousands of idle keep-alive clients (the normal state of a
//! gateway in front of pooled service clients) cost ~26 KB each. A parked
//! connection is only the socket, a small task and a handle on the stack
//! (~1.2 KB measured, with 5,000 idle: the task's ~600-byte future, tokio's
//! socket registration, the connection's small shared state), as nginx
//! frees its request buffers on idle connections. Why only after a second:
//! a new hyper connection per request costs ~1 µs of CPU and five
//! allocations, which a busy connection (one request after another) would
//! pay on every request. With glibc's allocator the buffers freed a second
//! late, between long-lived allocations, stayed resident (18 KB per idle
//! connection); jemalloc (src/main.rs) gives them back.
//!
//! A request ends its hyper connection only when reusing the socket is
//! certainly what hyper itself would do: HTTP/1.1 without `Connection`
//! tokens other than `keep-alive`, no `Upgrade`, no request body, and no
//! `Connection: close` in the answer. Anything else (bodies, `close`, HTTP/1.0,
//! errors) is left to hyper's own keep-alive logic on the same connection, so
//! the bytes of an unread body are never parsed as a next request.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, Request, Version};
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Duration, Sleep};
use tokio_rustls::server::TlsStream;

use super::deadline::{self, Activity, Phase, Supervisor, Track, TrackIo};
use super::linger::Linger;
use super::observe::{Observe, Protocol, WithClient};
use super::rapid_reset::{ResetLimit, Resets};
use super::refusal::{Exchanges, HeldIo};
use super::rewind::Rewind;
use super::watch::{Watch, Watched, Watching};
use super::ConnectionService;

/// A parked TLS connection reads the next request's first bytes into a
/// buffer this large (rustls holds its own record buffers regardless).
const TLS_PARKED_READ: usize = 1024;

/// An HTTP/1 connection whose last answer went out this long ago, with no
/// new request since, is parked (its hyper connection given up); sooner
/// when idle connections are kept less than twice as long, so that the
/// idle bound is still the parked wait's (hyper's own head timer, which
/// would also run between requests, never fires first).
const PARK_AFTER: Duration = Duration::from_secs(1);

/// HTTP/1 connections that may keep their hyper connection while idle
/// (with `PARK_AFTER`), over all serving threads; past that an idle one is
/// parked at once. It bounds what waiting costs (~26 KB each) when many
/// clients send one request and stay: the buffers of a burst of thousands,
/// freed a second later, would leave a few MiB of pages behind, as their
/// frees fall between other allocations that live on.
const WARM_LIMIT: usize = 256;

/// The two protocol builders, configured once by the listener.
pub(crate) struct Protocols {
    pub(crate) h1: http1::Builder,
    pub(crate) h2: http2::Builder<TokioExecutor>,
    /// Idle connections and clients that stop reading (deadline.rs); a
    /// parked connection waits for its next request `bounds.idle` at most.
    pub(crate) bounds: deadline::Bounds,
    /// Open connections by protocol, the peer's address on each request,
    /// and hyper's own refusals (observe.rs, refusal.rs).
    pub(crate) observe: Observe,
    /// HTTP/1 connections holding a hyper connection now ([`WARM_LIMIT`]).
    pub(crate) warm: AtomicUsize,
}

/// A transport a connection can be parked on: it waits for the next
/// request's first bytes holding as little memory as it can, polled in
/// place rather than through a future of its own (a parked connection's
/// task is the state it keeps).
pub(crate) trait Park: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready when the peer sent something (or closed): the bytes it had
    /// to read to find out, possibly none.
    fn poll_next_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>>;
}

impl Park for TcpStream {
    /// Readiness only: the bytes stay in the kernel until hyper reads them.
    fn poll_next_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        self.poll_read_ready(cx).map_ok(|()| Bytes::new())
    }
}

impl Park for TlsStream<TcpStream> {
    /// Into a buffer on the stack, copied out only once bytes came.
    fn poll_next_bytes(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let mut buf = [0u8; TLS_PARKED_READ];
        let mut read = ReadBuf::new(&mut buf);
        Pin::new(self)
            .poll_read(cx, &mut read)
            .map_ok(|()| Bytes::copy_from_slice(read.filled()))
    }
}

/// Serves an HTTP/2 connection whose `prefix` was already read.
pub(crate) async fn serve_h2<I: Park, S: ConnectionService>(
    protocols: &Protocols,
    io: I,
    prefix: Bytes,
    service: Arc<S>,
    phase: watch::Receiver<Phase>,
    peer: SocketAddr,
) -> hyper::Result<()> {
    // HTTP/2's control frames are writes too: there only response bodies
    // pulled count as the client's progress.
    let _open = protocols.observe.open(Protocol::H2);
    let activity = Activity::new();
    // Closed lingering: the client's last window updates must not reset
    // the connection before it has read the last frames.
    let io = TrackIo::new(Linger::new(Rewind::new(prefix, io)), None);
    let resets = Arc::new(Resets::default());
    let service = Watched {
        inner: tracked(&service, peer, &activity),
        watch: Arc::clone(&resets),
    };
    let conn = ResetLimit::new(
        protocols
            .h2
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service)),
        |conn| conn.graceful_shutdown(),
        resets,
        peer,
    );
    let conn = std::pin::pin!(conn);
    deadline::supervise(
        conn,
        ResetLimit::graceful_shutdown,
        &activity,
        protocols.bounds,
        phase,
    )
    .await
}

/// Serves an HTTP/1 connection whose `prefix` was already read: a hyper
/// connection while requests come, parked when they pause.
///
/// An async block rather than an async fn: its captures are its only copy
/// of the arguments, where an async fn's state keeps them twice, in every
/// parked connection's task.
#[allow(clippy::manual_async_fn)]
pub(crate) fn serve_h1<I: Park, S: ConnectionService>(
    protocols: &Protocols,
    mut io: I,
    mut prefix: Bytes,
    service: Arc<S>,
    phase: watch::Receiver<Phase>,
    peer: SocketAddr,
) -> impl Future<Output = hyper::Result<()>> + Send + '_ {
    async move {
        let _open = protocols.observe.open(Protocol::Http1);
        let exchanges = Exchanges::new(
            peer,
            Arc::clone(&protocols.observe.metrics),
            protocols.observe.answers,
        );
        let activity = Activity::new();
        let mut supervisor = Supervisor::new(protocols.bounds, phase.clone());
        let turn = Arc::new(Turn::default());
        let mut drain = Drain::new(phase.clone());
        loop {
            // One hyper connection, in a block of its own: none of its state
            // stays in the task while parked.
            (io, prefix) = {
                turn.reset();
                let observed = Watched {
                    inner: Watched {
                        inner: tracked(&service, peer, &activity),
                        watch: Arc::clone(&turn),
                    },
                    // What hyper writes while no request is open is its own
                    // refusal, replaced by the proxy's answer (refusal.rs).
                    watch: Arc::clone(&exchanges),
                };
                let io_tracked = TrackIo::new(
                    HeldIo::new(Rewind::new(prefix, io), &exchanges),
                    Some(Arc::clone(&activity)),
                );
                let mut one = HyperConn::<I, S> {
                    warm: Warm::new(&protocols.warm),
                    conn: protocols.h1.serve_connection(
                        TokioIo::new(io_tracked),
                        TowerToHyperService::new(observed),
                    ),
                    turn: Arc::clone(&turn),
                    activity: Arc::clone(&activity),
                    ending: false,
                    finished: false,
                    park_after: PARK_AFTER.min(protocols.bounds.idle / 2),
                    park_timer: None,
                };
                // hyper's connection and its supervision, in one box: allocated
                // while requests come, freed while parked (and laid out in the
                // task not at all).
                let (supervisor, tracking) = (&mut supervisor, &*activity);
                let (served, one) = Box::pin(async move {
                    let served = supervisor
                        .supervise(Pin::new(&mut one), |one| one.get_mut().end(), tracking)
                        .await;
                    (served, one)
                })
                .await;
                served?;
                // Cut (shutdown, send_timeout) before hyper was done, done for
                // good, or draining: closed.
                if !one.finished || !turn.reusable() || *phase.borrow() != Phase::Serving {
                    return Ok(());
                }
                let parts = one.conn.into_parts();
                let (rest, inner) = parts.io.into_inner().into_inner().into_inner().into_parts();
                (inner, join(parts.read_buf, rest))
            };
            if prefix.is_empty() {
                // Parked until the connection has been idle as long as one is
                // kept, on the supervisor's timer: the wait keeps no timer or
                // future of its own in the task.
                supervisor.park(&activity);
                let next = poll_fn(|cx| {
                    if drain.poll_started(cx) || supervisor.poll_parked(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    io.poll_next_bytes(cx).map(Result::ok)
                });
                match next.await {
                    Some(bytes) => prefix = bytes,
                    None => return Ok(()),
                }
                supervisor.unpark(&activity);
            }
        }
    }
}

/// A request's copy of the stack: given the peer's address, and tracked
/// for the connection's deadlines.
fn tracked<S: Clone>(
    service: &Arc<S>,
    peer: SocketAddr,
    activity: &Arc<Activity>,
) -> Track<WithClient<S>> {
    let inner = WithClient {
        inner: S::clone(service),
        peer,
    };
    Track::new(inner, Arc::clone(activity))
}

/// hyper's unread bytes, then the rest of the replayed prefix, in a buffer
/// of their own: a `Bytes` sliced from hyper's read buffer, even an empty
/// one, would keep all 8 KiB of it alive while parked.
fn join(read_ahead: Bytes, rest: Bytes) -> Bytes {
    match (read_ahead.is_empty(), rest.is_empty()) {
        (true, true) => Bytes::new(),
        (true, false) => rest,
        (false, _) => [read_ahead, rest].concat().into(),
    }
}

type H1Connection<I, S> = http1::Connection<
    TokioIo<TrackIo<HeldIo<Rewind<I>>>>,
    TowerToHyperService<Watched<Watched<Track<WithClient<S>>, Arc<Turn>>, Arc<Exchanges>>>,
>;

/// A hyper connection, as a future that ends when hyper stops without
/// shutting the transport down (parked, or ended by the supervisor), so
/// that the transport can be taken back.
struct HyperConn<'p, I, S: ConnectionService> {
    /// Counted among the connections holding hyper's buffers.
    warm: Warm<'p>,
    conn: H1Connection<I, S>,
    turn: Arc<Turn>,
    /// Tells whether hyper's last write was refused (bytes still buffered).
    activity: Arc<Activity>,
    ending: bool,
    finished: bool,
    /// Parked this long after the last request ended, if hyper is idle
    /// holding no bytes and that request was reusable ([`PARK_AFTER`]).
    park_after: Duration,
    /// Wakes the connection to park it; set when first needed, moved on
    /// (not reset per request) when a request came in between.
    park_timer: Option<Pin<Box<Sleep>>>,
}

impl<I: Park, S: ConnectionService> HyperConn<'_, I, S> {
    /// hyper finishes what it is doing, then stops (an idle connection at
    /// its next poll).
    fn end(&mut self) {
        if !std::mem::replace(&mut self.ending, true) {
            Pin::new(&mut self.conn).graceful_shutdown();
        }
    }

    /// Whether the connection, parkable now, has had no request for
    /// `park_after`; if not, the timer wakes it then. The timer is moved
    /// only when it fires early (requests came meanwhile), at most once a
    /// `park_after`, not for every request.
    fn park_due(&mut self, cx: &mut Context<'_>) -> bool {
        if self.warm.many() {
            return true;
        }
        let due = self.activity.idle_since() + self.park_after;
        let timer = self
            .park_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        while timer.as_mut().poll(cx).is_ready() {
            if timer.deadline() >= due {
                return true;
            }
            timer.as_mut().reset(due);
        }
        false
    }
}

impl<I: Park, S: ConnectionService> Future for HyperConn<'_, I, S> {
    type Output = hyper::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        let this = self.get_mut();
        loop {
            let polled = this.conn.poll_without_shutdown(cx);
            // Once a reusable request's answer is encoded to its end and
            // hyper's last write was not refused, hyper is idle and holds no
            // bytes: stop it there, to park, if no request came for a while.
            if polled.is_pending()
                && !this.ending
                && this.turn.can_park()
                && !this.activity.write_blocked()
                && this.park_due(cx)
            {
                this.end();
                continue;
            }
            this.finished = polled.is_ready();
            return polled;
        }
    }
}

/// One HTTP/1 connection holding a hyper connection, counted while it
/// lives.
struct Warm<'p>(&'p AtomicUsize);

impl<'p> Warm<'p> {
    fn new(count: &'p AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Warm(count)
    }

    /// More than [`WARM_LIMIT`] hold one: park as soon as idle.
    fn many(&self) -> bool {
        self.0.load(Ordering::Relaxed) > WARM_LIMIT
    }
}

impl Drop for Warm<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The listener's drain signal, registered once per connection.
struct Drain {
    waiting: Pin<Box<dyn Future<Output = ()> + Send>>,
    started: bool,
}

impl Drain {
    fn new(mut signal: watch::Receiver<Phase>) -> Self {
        Drain {
            waiting: Box::pin(async move {
                // A closed channel (the listener gone) counts as draining.
                let _ = signal.wait_for(|phase| *phase != Phase::Serving).await;
            }),
            started: false,
        }
    }

    /// True once draining started (and from then on); registers `cx` for it
    /// before that.
    fn poll_started(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.started && self.waiting.as_mut().poll(cx).is_ready() {
            self.started = true;
        }
        self.started
    }
}

/// What the driver learns of the current request from the service, the
/// answer's body and the transport.
#[derive(Default)]
struct Turn {
    flags: AtomicU8,
}

const STARTED: u8 = 1;
const REUSABLE: u8 = 2;
/// The answer's body reached its end (hyper has encoded all of it).
const ANSWERED: u8 = 4;

impl Turn {
    fn reset(&self) {
        self.flags.store(0, Ordering::Relaxed);
    }

    /// The request was reusable and its answer was encoded to the end.
    fn can_park(&self) -> bool {
        self.flags.load(Ordering::Relaxed) == STARTED | REUSABLE | ANSWERED
    }

    fn answered(&self) {
        self.flags.fetch_or(ANSWERED, Ordering::Relaxed);
    }

    fn reusable(&self) -> bool {
        self.flags.load(Ordering::Relaxed) & REUSABLE != 0
    }

    fn start(&self, reusable: bool) {
        let flags = if reusable {
            STARTED | REUSABLE
        } else {
            STARTED
        };
        self.flags.store(flags, Ordering::Relaxed);
    }

    fn not_reusable(&self) {
        self.flags.fetch_and(!REUSABLE, Ordering::Relaxed);
    }
}

/// Each request the HTTP/1 driver serves starts a new [`Turn`]: whether
/// it leaves the connection reusable, and when hyper has its whole answer.
impl Watch for Arc<Turn> {
    type Each = Arc<Turn>;

    fn taken(&self, req: &Request<Incoming>) -> Arc<Turn> {
        self.start(request_keeps_connection(req));
        Arc::clone(self)
    }
}

impl Watching for Arc<Turn> {
    fn head(&self, headers: &HeaderMap) {
        if !only_keep_alive(headers) {
            self.not_reusable();
        }
    }

    fn ended(&self, to_its_end: bool) {
        if to_its_end {
            self.answered();
        }
    }
}

/// HTTP/1.1, no body, no `Upgrade`, and no `Connection` tokens but
/// `keep-alive`: the only requests after which the driver reuses the socket
/// itself.
fn request_keeps_connection(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.body().is_end_stream()
        && !req.headers().contains_key(UPGRADE)
        && only_keep_alive(req.headers())
}

fn only_keep_alive(headers: &HeaderMap) -> bool {
    headers.get_all(CONNECTION).iter().all(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .all(|token| token.trim_ascii().eq_ignore_ascii_case(b"keep-alive"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keep_alive_tokens_leave_the_connection_to_the_driver() {
        let mut headers = HeaderMap::new();
        assert!(only_keep_alive(&headers));
        headers.insert(CONNECTION, "keep-alive".parse().unwrap());
        assert!(only_keep_alive(&headers));
        headers.insert(CONNECTION, "Keep-Alive , keep-alive".parse().unwrap());
        assert!(only_keep_alive(&headers));
        headers.insert(CONNECTION, "close".parse().unwrap());
        assert!(!only_keep_alive(&headers));
        headers.insert(CONNECTION, "keep-alive, close".parse().unwrap());
        assert!(!only_keep_alive(&headers));
        headers.insert(CONNECTION, "x-request-id".parse().unwrap());
        assert!(!only_keep_alive(&headers));
    }

    #[test]
    fn join_keeps_order() {
        let a = Bytes::from_static(b"GET / HT");
        let b = Bytes::from_static(b"TP/1.1\r\n");
        assert_eq!(join(a.clone(), b), &b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(join(a.clone(), Bytes::new()), a);
        assert_eq!(join(Bytes::new(), a.clone()), a);
    }
}
