//! The accept loop: `listen.allow`, `listen.max_connections`, inbound TLS,
//! a deadline on the first bytes of every connection, HTTP/1.1 and HTTP/2
//! on one port (h2c by its preface, over TLS by ALPN), and graceful
//! draining.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::util::Either;

use super::connection::{self, Protocols};
use super::deadline::{Bounds, Phase};
use super::observe::Observe;
use super::workers::Workers;
use super::ConnectionService;
use crate::config::ListenConfig;
use crate::layers::Answers;
use crate::ops::logging::Throttle;
use crate::ops::metrics::Metrics;

/// The HTTP/2 connection preface; enough of it tells h2c from HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// After an accept error that means resources ran out (EMFILE…), pause
/// instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Refused connections are logged at most this often.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// HTTP/2 limits pinned here rather than left to library defaults.
const H2_MAX_CONCURRENT_STREAMS: u32 = 200;
const H2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// Response bytes buffered per h2 stream before backpressure (hyper's
/// default, pinned so an upgrade cannot silently change it).
const H2_MAX_SEND_BUF_SIZE: usize = 400 * 1024;
/// HTTP/1 head limits: 100 fields and a read buffer of 64 KiB (hyper's is
/// ~400 KiB), which bounds the whole head: larger heads get 431. Four times
/// the h2 header-list limit, so h1 is not the easier way to send a huge
/// head. The 100 fields are hyper's own default, left implicit on purpose:
/// given explicitly, hyper fills two 100-entry arrays for every request it
/// parses instead of leaving them uninitialised (tests/security_framing.rs
/// holds the limit at 100).
const H1_MAX_BUF_SIZE: usize = 64 * 1024;

/// What every connection task needs, built once.
struct Listener {
    /// HTTP/1 and HTTP/2. Over TLS, HTTP/2 is chosen by ALPN only (RFC 9113
    /// §3.2), never by sniffing the preface; h2c by its preface.
    protocols: Protocols,
    tls: Option<TlsAcceptor>,
    allow: Vec<IpNet>,
    /// For the TLS handshake and the first bytes of a request.
    first_bytes_deadline: Duration,
}

/// What the listener serves, and how it answers for itself.
pub struct Serving<S, R> {
    /// The stack, for every request from an allowed source.
    pub service: S,
    /// For every request from a source outside `listen.allow`
    /// (`stack::refusal`).
    pub refused: R,
    /// Counts open connections and the requests hyper refuses before
    /// `service` sees them.
    pub metrics: Arc<Metrics>,
    /// The shape of those refusals.
    pub answers: Answers,
    /// The threads that serve the connections; `None`: the runtime that
    /// runs the accept loop serves them too.
    pub workers: Option<Arc<Workers>>,
}

/// What a reload may change about the listener: everything of
/// `[listen]` but its address, and the TLS acceptor (certificate and key
/// read anew). A connection is served to its end with the settings it was
/// accepted under; new connections get the newest.
#[derive(Clone)]
pub struct Settings {
    pub listen: ListenConfig,
    pub tls: Option<TlsAcceptor>,
    /// The shape of the proxy's own refusals (by profile).
    pub answers: Answers,
}

/// Serves on `listener` until `shutdown` resolves, then stops accepting and
/// waits up to `listen.shutdown_grace` for open connections.
pub async fn serve<S, R>(
    listener: TcpListener,
    serving: Serving<S, R>,
    cfg: &ListenConfig,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) where
    S: ConnectionService,
    R: ConnectionService,
{
    let settings = Settings {
        listen: cfg.clone(),
        tls,
        answers: serving.answers,
    };
    let (_keep, settings) = watch::channel(settings);
    serve_watched(listener, serving, settings, shutdown).await;
}

/// [`serve`] with settings that a reload may replace while it runs.
pub async fn serve_watched<S, R>(
    listener: TcpListener,
    serving: Serving<S, R>,
    mut settings: watch::Receiver<Settings>,
    shutdown: impl Future<Output = ()>,
) where
    S: ConnectionService,
    R: ConnectionService,
{
    let Serving {
        service,
        refused,
        metrics,
        answers: _,
        workers,
    } = serving;
    let mut cfg = settings.borrow_and_update().listen.clone();
    let mut ctx = Arc::new(Listener::of(&settings.borrow(), Arc::clone(&metrics)));
    let mut limit = cfg.max_connections;
    let slots = Arc::new(Semaphore::new(limit));
    let refusals = Throttle::new(REFUSAL_LOG_INTERVAL);
    // Every connection task holds a sender: when all are gone, recv() ends.
    let (open, mut all_closed) = mpsc::channel::<Infallible>(1);
    // Connections still in their first-bytes phase have no request to
    // finish: draining closes them at once instead of waiting them out.
    let (draining, drain_signal) = watch::channel(Phase::Serving);
    // One handle per connection, cloned into a full stack per request: a
    // parked connection holds a pointer, not a copy of the stack.
    let allowed = Arc::new(Either::Left(service));
    let refused = Arc::new(Either::Right(refused));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    accept_failed(&err).await;
                    continue;
                }
            },
        };
        if settings.has_changed().unwrap_or(false) {
            let new = settings.borrow_and_update().clone();
            ctx = Arc::new(Listener::of(&new, Arc::clone(&metrics)));
            resize(&slots, limit, new.listen.max_connections);
            limit = new.listen.max_connections;
            cfg = new.listen;
        }
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            if let Some(suppressed) = refusals.ready() {
                tracing::warn!(%peer, limit, suppressed, "listen.max_connections reached; connection closed");
            }
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let open = open.clone();
        let drain_signal = drain_signal.clone();
        let service = Arc::clone(if ctx.allows(peer.ip()) {
            &allowed
        } else {
            &refused
        });
        let stream = match Handoff::of(stream, workers.as_deref()) {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(%peer, error = %err, "connection lost on its way to a worker");
                continue;
            }
        };
        let task = async move {
            let (_slot, _open) = (slot, open);
            let stream = match stream.here() {
                Ok(stream) => stream,
                Err(err) => {
                    tracing::debug!(%peer, error = %err, "connection lost on its way to a worker");
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            // The task's own state is sized for the common case, a plain
            // HTTP/1 connection parked between requests; the first bytes,
            // TLS and HTTP/2 live in boxes of their own.
            let opened = Box::pin(ctx.open(stream, peer, Arc::clone(&service), drain_signal));
            if let Some((stream, prefix, drain)) = opened.await {
                let served =
                    connection::serve_h1(&ctx.protocols, stream, prefix, service, drain, peer)
                        .await;
                log_end(served, peer);
            }
        };
        match &workers {
            Some(workers) => workers.spawn(task),
            None => drop(tokio::spawn(task)),
        }
    }
    drop(listener);
    let _ = draining.send(Phase::Draining);
    drop(open);
    if settings.has_changed().unwrap_or(false) {
        cfg = settings.borrow_and_update().listen.clone();
    }
    let open = || limit.saturating_sub(slots.available_permits());
    drain(all_closed.recv(), cfg.shutdown_grace, open).await;
    // Whatever is left is cut now, not when the runtime goes away.
    let _ = draining.send(Phase::Cutting);
}

/// Resolves when draining starts. Only the handshake and first-bytes
/// phase race it: once hyper has the connection, the watcher drains it.
async fn wait_for_drain(signal: &mut watch::Receiver<Phase>) {
    let _ = signal.wait_for(|phase| *phase != Phase::Serving).await;
}

/// `listen.max_connections` changed from `old` to `new`: slots are added
/// at once; removed ones are taken out as the connections holding them end.
fn resize(slots: &Arc<Semaphore>, old: usize, new: usize) {
    if new > old {
        slots.add_permits(new - old);
    } else if new < old {
        let excess = old - new;
        let gone = slots.forget_permits(excess);
        if gone < excess {
            let slots = Arc::clone(slots);
            let rest = u32::try_from(excess - gone).unwrap_or(u32::MAX);
            tokio::spawn(async move {
                if let Ok(permits) = slots.acquire_many_owned(rest).await {
                    permits.forget();
                }
            });
        }
    }
}

/// An accepted connection on its way to the thread that serves it. A
/// socket is watched by the I/O driver of the runtime that registered it:
/// one for a worker leaves the accept loop's driver here and is registered
/// again on the worker.
enum Handoff {
    Here(TcpStream),
    Moving(std::net::TcpStream),
}

impl Handoff {
    fn of(stream: TcpStream, workers: Option<&Workers>) -> io::Result<Handoff> {
        Ok(match workers {
            Some(_) => Handoff::Moving(stream.into_std()?),
            None => Handoff::Here(stream),
        })
    }

    /// The stream, registered with the runtime this runs on.
    fn here(self) -> io::Result<TcpStream> {
        match self {
            Handoff::Here(stream) => Ok(stream),
            Handoff::Moving(stream) => TcpStream::from_std(stream),
        }
    }
}

impl Listener {
    fn of(settings: &Settings, metrics: Arc<Metrics>) -> Listener {
        let cfg = &settings.listen;
        Listener {
            protocols: protocols(cfg, metrics, settings.answers),
            tls: settings.tls.clone(),
            allow: cfg.allow.clone(),
            first_bytes_deadline: cfg.header_read_timeout,
        }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allow.is_empty() || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// The TLS handshake and the first bytes, under the deadline. A plain
    /// HTTP/1 connection is handed back to be served by the caller; TLS
    /// and h2c connections are served here to their end. Over TLS, HTTP/2
    /// only when ALPN chose it.
    async fn open<S: ConnectionService>(
        &self,
        mut stream: TcpStream,
        peer: SocketAddr,
        service: Arc<S>,
        mut drain: watch::Receiver<Phase>,
    ) -> Option<(TcpStream, Bytes, watch::Receiver<Phase>)> {
        let Some(acceptor) = &self.tls else {
            let prefix = self.first_bytes(&mut stream, &mut drain).await?;
            if !prefix.starts_with(H2_PREFACE) {
                return Some((stream, prefix, drain));
            }
            let served =
                connection::serve_h2(&self.protocols, stream, prefix, service, drain, peer);
            log_end(served.await, peer);
            return None;
        };
        let handshake = tokio::time::timeout(self.first_bytes_deadline, acceptor.accept(stream));
        let handshake = tokio::select! {
            result = handshake => result,
            () = wait_for_drain(&mut drain) => return None,
        };
        let mut tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return None;
            }
        };
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let prefix = self.first_bytes(&mut tls, &mut drain).await?;
        let served = if h2 {
            connection::serve_h2(&self.protocols, tls, prefix, service, drain, peer).await
        } else {
            connection::serve_h1(&self.protocols, tls, prefix, service, drain, peer).await
        };
        log_end(served, peer);
        None
    }

    /// The first bytes of a connection, within the deadline, unless draining
    /// starts first.
    async fn first_bytes<I: AsyncRead + Unpin>(
        &self,
        io: &mut I,
        drain: &mut watch::Receiver<Phase>,
    ) -> Option<Bytes> {
        tokio::select! {
            prefix = read_first_bytes(io, self.first_bytes_deadline) => prefix,
            () = wait_for_drain(drain) => None,
        }
    }
}

fn log_end(served: hyper::Result<()>, peer: SocketAddr) {
    if let Err(err) = served {
        tracing::debug!(%peer, error = %err, "connection ended with an error");
    }
}

/// Reads until the bytes either are the whole h2 preface or stop matching
/// it, whichever comes first, all within `deadline`. `None`: the peer sent
/// nothing usable in time, or closed.
async fn read_first_bytes<I: AsyncRead + Unpin>(io: &mut I, deadline: Duration) -> Option<Bytes> {
    let reading = async {
        let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
        loop {
            let n = io.read_buf(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            let seen = buf.len().min(H2_PREFACE.len());
            if buf[..seen] != H2_PREFACE[..seen] || buf.len() >= H2_PREFACE.len() {
                return Some(buf.freeze());
            }
        }
    };
    tokio::time::timeout(deadline, reading).await.ok().flatten()
}

fn protocols(cfg: &ListenConfig, metrics: Arc<Metrics>, answers: Answers) -> Protocols {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(H1_MAX_BUF_SIZE)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS)
        .max_send_buf_size(H2_MAX_SEND_BUF_SIZE)
        // A peer that stops answering PINGs is gone: close its connection
        // rather than hold a max_connections slot forever.
        .keep_alive_interval(cfg.header_read_timeout)
        .keep_alive_timeout(cfg.header_read_timeout);
    Protocols {
        h1,
        h2,
        bounds: Bounds {
            idle: cfg.header_read_timeout,
            send: cfg.send_timeout,
        },
        observe: Observe::new(metrics, answers),
        warm: std::sync::atomic::AtomicUsize::new(0),
    }
}

/// Resource exhaustion (out of file descriptors, buffers, memory) pauses
/// the loop; anything else concerns one connection and is only logged.
async fn accept_failed(err: &io::Error) {
    const EXHAUSTION: [i32; 4] = [
        24,  /* EMFILE */
        23,  /* ENFILE */
        105, /* ENOBUFS */
        12,  /* ENOMEM */
    ];
    if err
        .raw_os_error()
        .is_some_and(|code| EXHAUSTION.contains(&code))
    {
        tracing::error!(error = %err, "accept failed; pausing before accepting again");
        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
    } else {
        tracing::debug!(error = %err, "accept failed for one connection");
    }
}

/// Waits up to `grace` for every connection to end (`all_closed`).
async fn drain(all_closed: impl Future, grace: Duration, open: impl Fn() -> usize) {
    let draining = open();
    if draining > 0 {
        tracing::info!(
            open = draining,
            grace_secs = grace.as_secs(),
            "draining connections"
        );
    }
    if tokio::time::timeout(grace, all_closed).await.is_err() {
        let cut = open();
        tracing::warn!(
            cut,
            "shutdown_grace elapsed; cutting the {cut} connection(s) still open"
        );
    }
}
