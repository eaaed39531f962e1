//! One upstream connection: opened under the connect deadline (DNS, TCP
//! and TLS together), HTTP/2 when ALPN chose it, else HTTP/1.1.
//!
//! An HTTP/1 connection belongs to the request that uses it and is driven
//! on that request's own task: first until the answer's head has arrived
//! ([`H1Conn::round_trip`]), then by the answer's body ([`UpstreamBody`]),
//! which puts it back in the pool once the body has ended. No task of its
//! own, no channel hop between tasks, no lock held while it is in use. An
//! HTTP/2 connection is shared by many requests and runs on a task of its
//! own, as hyper requires.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tower_service::Service;

use super::pool::Pool;
use super::retry::{Wire, WireIo};
use super::UpstreamError;
use crate::body::Body;
use crate::error::BoxError;

/// An upstream stream as the connector hands it over: TCP, TLS or not.
type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;

/// An HTTP/1 connection's stream, noting whether answer bytes arrived.
type H1Io = TokioIo<WireIo<TokioIo<Stream>>>;

/// The idle HTTP/1 connections of one origin.
pub(super) type H1Pool = Pool<Box<H1Conn>>;

#[derive(Debug, thiserror::Error)]
#[error("connect timed out after {0:?} (DNS, TCP and TLS together)")]
pub struct ConnectTimedOut(Duration);

/// Opens connections: hyper-rustls' connector (DNS, TCP, TLS with ALPN h2
/// and http/1.1) and the HTTP handshake, all under one deadline:
/// hyper-util's own `connect_timeout` covers only the TCP connect.
#[derive(Clone)]
pub(super) struct Connector {
    pub(super) tls: HttpsConnector<HttpConnector>,
    pub(super) timeout: Duration,
    pub(super) h1: http1::Builder,
    pub(super) h2: http2::Builder<TokioExecutor>,
}

/// A connection just opened.
pub(super) enum Opened {
    H1(Box<H1Conn>),
    H2(http2::SendRequest<Body>),
}

impl Connector {
    /// A new connection to `origin` (scheme and authority only).
    pub(super) async fn open(&self, origin: &Uri) -> Result<Opened, UpstreamError> {
        match tokio::time::timeout(self.timeout, self.open_now(origin)).await {
            Ok(opened) => opened,
            Err(_) => Err(UpstreamError::Connect(ConnectTimedOut(self.timeout).into())),
        }
    }

    async fn open_now(&self, origin: &Uri) -> Result<Opened, UpstreamError> {
        let stream = self
            .tls
            .clone()
            .call(origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        if stream.connected().is_negotiated_h2() {
            let (mut send, conn) = self
                .h2
                .handshake(stream)
                .await
                .map_err(|e| UpstreamError::Connect(e.into()))?;
            tokio::spawn(async move {
                if let Err(err) = conn.await {
                    tracing::debug!(error = %err, "upstream HTTP/2 connection ended");
                }
            });
            send.ready()
                .await
                .map_err(|e| UpstreamError::Connect(e.into()))?;
            return Ok(Opened::H2(send));
        }
        let wire = Arc::new(Wire::default());
        let io = TokioIo::new(WireIo::new(TokioIo::new(stream), Arc::clone(&wire)));
        let (send, conn) = self
            .h1
            .handshake(io)
            .await
            .map_err(|e| UpstreamError::Connect(e.into()))?;
        Ok(Opened::H1(Box::new(H1Conn {
            send,
            conn: Some(conn),
            wire,
        })))
    }
}

/// An HTTP/1 connection: hyper's sender and its connection future, which
/// whoever holds this drives.
pub(super) struct H1Conn {
    send: http1::SendRequest<Body>,
    /// `None` once the connection has ended.
    conn: Option<http1::Connection<H1Io, Body>>,
    wire: Arc<Wire>,
}

/// Why a request on an HTTP/1 connection got no answer.
pub(super) enum Failed {
    /// The connection ended before it took the request: it may go anywhere.
    Unsent(Box<Request<Body>>),
    /// The request was (at least partly) sent; `answered` tells whether
    /// any byte of an answer had arrived.
    Sent { err: hyper::Error, answered: bool },
}

impl H1Conn {
    /// Lets the connection read and write what it can; false once it has
    /// ended. An ended connection is dropped at once, which hands back a
    /// request it never took.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if let Some(conn) = &mut self.conn {
            if Pin::new(conn).poll(cx).is_ready() {
                self.conn = None;
            }
        }
        self.conn.is_some()
    }

    /// Alive, and waiting for its next request.
    fn is_idle(&self) -> bool {
        self.conn.is_some() && self.send.is_ready()
    }

    /// Sends `req` and drives the connection until the answer's head has
    /// arrived (or the connection failed).
    pub(super) async fn round_trip(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Failed> {
        self.wire.begin();
        let mut sent = pin!(self.send.try_send_request(req));
        let answer = poll_fn(|cx| {
            self.drive(cx);
            sent.as_mut().poll(cx)
        })
        .await;
        answer.map_err(|mut e| match e.take_message() {
            Some(req) => Failed::Unsent(Box::new(req)),
            None => Failed::Sent {
                err: e.into_error(),
                answered: self.wire.answered(),
            },
        })
    }
}

/// An HTTP/1 answer's body, driving its connection while it streams and
/// putting the connection back in `pool` once the body has ended (or, if
/// the reader stops at the last byte, when it is dropped). Without a pool
/// the connection is closed after this one answer.
pub(super) struct UpstreamBody {
    incoming: Incoming,
    conn: Option<Box<H1Conn>>,
    pool: Option<Arc<H1Pool>>,
    /// Data was handed out since the reader last had to wait.
    gave_data: bool,
    /// An error held back one turn (see `poll_frame`).
    held: Option<BoxError>,
}

impl UpstreamBody {
    pub(super) fn new(incoming: Incoming, conn: Box<H1Conn>, pool: Option<Arc<H1Pool>>) -> Self {
        UpstreamBody {
            incoming,
            conn: Some(conn),
            pool,
            gave_data: false,
            held: None,
        }
    }

    /// Back to the pool if hyper is ready for the next request (it is not
    /// when the answer closed the connection, or an upload is still under
    /// way); otherwise the connection is closed.
    fn put_back(&mut self, cx: &mut Context<'_>) {
        let (Some(mut conn), Some(pool)) = (self.conn.take(), &self.pool) else {
            return;
        };
        if !conn.send.is_ready() {
            conn.drive(cx);
        }
        if conn.is_idle() {
            pool.put(conn);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Some(err) = this.held.take() {
            return Poll::Ready(Some(Err(err)));
        }
        let mut polled = Pin::new(&mut this.incoming).poll_frame(cx);
        if polled.is_pending() {
            if let Some(conn) = &mut this.conn {
                // The connection reads what the body is waiting for.
                conn.drive(cx);
                polled = Pin::new(&mut this.incoming).poll_frame(cx);
            }
        }
        match polled {
            Poll::Ready(None) => this.put_back(cx),
            Poll::Ready(Some(Ok(_))) => this.gave_data = true,
            Poll::Ready(Some(Err(err))) => {
                this.conn = None;
                // The connection failed right after data it read in the
                // same turn: the reader (hyper) gets to write that data out
                // first, so that an answer cut short reaches the client as
                // far as it came; the error follows at once.
                if std::mem::take(&mut this.gave_data) {
                    this.held = Some(err.into());
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                return Poll::Ready(Some(Err(err.into())));
            }
            Poll::Pending => this.gave_data = false,
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

impl Drop for UpstreamBody {
    /// hyper stops reading a body of known length at its last byte: the
    /// connection goes back then. A body dropped before its end closes it.
    fn drop(&mut self) {
        if self.conn.is_some() && http_body::Body::is_end_stream(&self.incoming) {
            self.put_back(&mut Context::from_waker(Waker::noop()));
        }
    }
}
