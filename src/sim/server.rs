//! The simulator's accept loop: each connection in its own task, served by
//! hyper-util's auto builder (HTTP/1.1 and h2c on plain TCP; over TLS the
//! protocol ALPN chose), with graceful shutdown through [`ServerHandle`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::respond::SimBody;
use super::state::Shared;
use super::tls::{server_config, TestCa};
use super::{api, token, Sim};

/// How long `shutdown` lets in-flight requests finish before cutting them
/// off (a `Hang` token request or a long `/sim/slow` would otherwise block it).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running simulator server. Dropping it stops the server at once;
/// [`ServerHandle::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct ServerHandle {
    pub addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` (the name in the
    /// certificate) when serving TLS.
    pub fn base_url(&self) -> String {
        let port = self.addr.port();
        if self.tls {
            format!("https://localhost:{port}")
        } else if self.addr.ip().is_unspecified() {
            format!("http://127.0.0.1:{port}")
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// The token endpoint: `base_url()` + `/oauth2/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth2/token", self.base_url())
    }

    /// Stops accepting, lets in-flight requests finish (for up to 5 s of
    /// tokio time), then returns.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        // Aborting the accept task drops its JoinSet, which aborts every
        // connection task with it.
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Sim {
    /// Serves this simulator on `listener` over plain HTTP/1.1 and h2c (prior
    /// knowledge). Must be called inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If the listener has no local address (it is not bound).
    pub fn serve_plain(&self, listener: TcpListener) -> ServerHandle {
        self.spawn(listener, None)
    }

    /// Serves this simulator on `listener` over TLS with a certificate for
    /// `localhost`, `127.0.0.1` and `::1` issued by `ca`; ALPN offers `h2`
    /// and `http/1.1`. Must be called inside a tokio runtime.
    ///
    /// # Panics
    ///
    /// If the listener has no local address (it is not bound).
    pub fn serve_tls(&self, listener: TcpListener, ca: &TestCa) -> ServerHandle {
        self.spawn(listener, Some(TlsAcceptor::from(server_config(ca))))
    }

    fn spawn(&self, listener: TcpListener, tls: Option<TlsAcceptor>) -> ServerHandle {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        let (stop, stopped) = oneshot::channel();
        let is_tls = tls.is_some();
        let task = tokio::spawn(accept_loop(self.shared.clone(), listener, tls, stopped));
        ServerHandle {
            addr,
            tls: is_tls,
            stop: Some(stop),
            task: Some(task),
        }
    }
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stopped: oneshot::Receiver<()>,
) {
    let graceful = GracefulShutdown::new();
    let mut connections = JoinSet::new();
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "sim: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let conn = connection(shared.clone(), tcp, tls.clone(), graceful.watcher());
        connections.spawn(conn);
    }
    drop(listener);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await;
    connections.shutdown().await;
}

/// One connection: TLS handshake if any, then HTTP until either side ends it
/// or shutdown asks it to finish.
async fn connection(
    shared: Arc<Shared>,
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    watcher: Watcher,
) {
    // Small test requests should not wait for Nagle.
    let _ = tcp.set_nodelay(true);
    let Some(acceptor) = tls else {
        return serve(shared, tcp, builder(), watcher).await;
    };
    let stream = match acceptor.accept(tcp).await {
        Ok(stream) => stream,
        Err(error) => return tracing::debug!(%error, "sim: TLS handshake failed"),
    };
    let builder = builder();
    let builder = match stream.get_ref().1.alpn_protocol() {
        Some(b"h2") => builder.http2_only(),
        _ => builder.http1_only(),
    };
    serve(shared, stream, builder, watcher).await;
}

/// hyper-util's auto builder, without hyper's own `Date`: the simulator
/// writes its own, on its clock (tokio time, possibly skewed).
fn builder() -> Builder<TokioExecutor> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().auto_date_header(false);
    builder.http2().auto_date_header(false);
    builder
}

async fn serve<I>(shared: Arc<Shared>, io: I, builder: Builder<TokioExecutor>, watcher: Watcher)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, Infallible>(route(&shared, req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(conn).await {
        tracing::debug!(%error, "sim: connection ended with an error");
    }
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Response<SimBody> {
    if req.uri().path() == "/oauth2/token" {
        token::handle(shared, req).await
    } else {
        api::handle(shared, req).await
    }
}
