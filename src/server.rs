//! The accept loop: `listen.max_connections`, a deadline on the first bytes
//! of every connection (hyper-util's protocol detection has none), HTTP/1.1
//! and h2c on one port via hyper-util's auto builder, and graceful draining.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tower_service::Service;

use crate::body::Body;
use crate::config::ListenConfig;
use crate::rewind::Rewind;

/// The HTTP/2 connection preface; enough of it tells h2c from HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// After an accept error such as EMFILE, pause instead of spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// HTTP/2 limits pinned here rather than left to library defaults.
const H2_MAX_CONCURRENT_STREAMS: u32 = 200;
const H2_MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
const H2_MAX_PENDING_ACCEPT_RESET_STREAMS: usize = 20;
const H2_MAX_LOCAL_ERROR_RESET_STREAMS: usize = 1024;
/// HTTP/1 head limits, pinned at hyper's defaults (larger heads get 431).
const H1_MAX_HEADERS: usize = 100;

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting and waits up to `listen.shutdown_grace` for open connections.
pub async fn serve<S>(
    listener: TcpListener,
    service: S,
    cfg: &ListenConfig,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<
            Request<Incoming>,
            Response = http::Response<Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let builder = Arc::new(http_builder(cfg));
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let graceful = GracefulShutdown::new();
    // Connections still in their first-bytes phase have no request to
    // finish: draining closes them at once instead of waiting them out.
    let (draining, drain_signal) = watch::channel(false);
    let first_bytes_deadline = cfg.header_read_timeout;
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
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!(%peer, limit = cfg.max_connections, "listen.max_connections reached; connection closed");
            continue;
        };
        let builder = Arc::clone(&builder);
        let watcher = graceful.watcher();
        let mut drain_signal = drain_signal.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut stream = stream;
            let _ = stream.set_nodelay(true);
            let prefix = tokio::select! {
                prefix = read_first_bytes(&mut stream, first_bytes_deadline) => prefix,
                _ = drain_signal.wait_for(|draining| *draining) => None,
            };
            let Some(prefix) = prefix else {
                return;
            };
            let io = TokioIo::new(Rewind::new(prefix, stream));
            let conn = builder.serve_connection(io, TowerToHyperService::new(service));
            if let Err(err) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = draining.send(true);
    drain(graceful, cfg.shutdown_grace).await;
}

/// Reads until the bytes either are the whole h2 preface or stop matching
/// it, whichever comes first, all within `deadline`. `None`: the peer sent
/// nothing usable in time, or closed.
async fn read_first_bytes(stream: &mut TcpStream, deadline: Duration) -> Option<Bytes> {
    let reading = async {
        let mut buf = BytesMut::with_capacity(H2_PREFACE.len());
        loop {
            let n = stream.read_buf(&mut buf).await.ok()?;
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

fn http_builder(cfg: &ListenConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_headers(H1_MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE)
        .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESET_STREAMS)
        .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESET_STREAMS);
    builder
}

async fn accept_failed(err: &io::Error) {
    tracing::error!(error = %err, "accept failed; pausing before accepting again");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

async fn drain(graceful: GracefulShutdown, grace: Duration) {
    let open = graceful.count();
    if open > 0 {
        tracing::info!(open, grace_secs = grace.as_secs(), "draining connections");
    }
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown_grace elapsed; closing remaining connections");
    }
}
