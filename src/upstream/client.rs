//! The upstream client: for each origin (scheme and authority) a pool of
//! idle HTTP/1 connections, or one shared HTTP/2 connection when ALPN
//! chose h2. A request takes an idle connection (or opens one) and drives
//! it on its own task (conn.rs); it is sent once more on a fresh
//! connection when the upstream provably never processed it (retry.rs).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use std::pin::Pin;
use tokio::sync::Notify;

use super::conn::{Connector, Failed, H1Conn, H1Pool, Opened, UpstreamBody};
use super::pool::Pool;
use super::retry::never_processed;
use super::UpstreamError;
use crate::body::Body;
use crate::error::{describe_chain, BoxError};

/// Idle upstream connections are kept this long: long enough to carry a
/// steady trickle of paced requests, short enough to drop dead peers.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The client shared by forwarding and the token exchange.
#[derive(Clone)]
pub struct HttpClient {
    connector: Connector,
    origins: Arc<Mutex<Vec<Arc<Origin>>>>,
}

impl HttpClient {
    pub(super) fn new(connector: Connector) -> Self {
        HttpClient {
            connector,
            origins: Arc::default(),
        }
    }

    /// The connections to `uri`'s scheme and authority (`None` without an
    /// authority).
    pub(super) fn origin(&self, uri: &Uri) -> Option<Arc<Origin>> {
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        let authority = uri.authority()?.clone();
        let mut origins = self.origins.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = origins
            .iter()
            .find(|o| o.scheme == scheme && o.authority == authority)
        {
            return Some(Arc::clone(found));
        }
        let origin = Arc::new(Origin::new(scheme, authority, self.connector.clone()));
        origins.push(Arc::clone(&origin));
        Some(origin)
    }

    /// Sends `req` (absolute URI) and returns the answer with its body
    /// streaming. Used for token requests: no retry beyond a request that
    /// never left.
    pub async fn request(&self, req: Request<Body>) -> Result<Response<Body>, UpstreamError> {
        let origin = self.origin(req.uri()).ok_or(UpstreamError::NoAuthority)?;
        let req = origin.outgoing(req);
        let res = origin.send(req, None).await?;
        Ok(res.map(Body::new))
    }
}

/// What the last connection to an origin negotiated.
const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// One upstream origin and its connections.
pub(super) struct Origin {
    scheme: Scheme,
    authority: Authority,
    /// `scheme://authority/`, what the connector dials.
    uri: Uri,
    /// HTTP/1's `Host`: the authority without userinfo or a default port.
    host: HeaderValue,
    connector: Connector,
    idle: Arc<H1Pool>,
    /// The HTTP/2 connection requests share, and its number.
    h2: Mutex<Option<(u64, http2::SendRequest<Body>)>>,
    h2_opened: AtomicU64,
    protocol: AtomicU8,
    opening: Opening,
}

/// A connection for one request (HTTP/2: the shared one's number and a
/// handle on it).
enum Conn {
    H1(Box<H1Conn>),
    H2(u64, http2::SendRequest<Body>),
}

impl Origin {
    fn new(scheme: Scheme, authority: Authority, connector: Connector) -> Self {
        let uri = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .expect("scheme and authority are valid");
        Origin {
            host: host_field(&scheme, &authority),
            scheme,
            authority,
            uri,
            connector,
            idle: Arc::new(Pool::new(POOL_IDLE_TIMEOUT)),
            h2: Mutex::new(None),
            h2_opened: AtomicU64::new(0),
            protocol: AtomicU8::new(UNKNOWN),
            opening: Opening::default(),
        }
    }

    /// `req` as it leaves on HTTP/1.1: origin-form target, this origin's
    /// `Host` (whatever the client sent is replaced). HTTP/2 rewrites it
    /// once more ([`Origin::for_h2`]).
    pub(super) fn outgoing(&self, req: Request<Body>) -> Request<Body> {
        let (mut parts, body) = req.into_parts();
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"))
                .into();
        }
        parts.version = Version::HTTP_11;
        parts.headers.insert(HOST, self.host.clone());
        Request::from_parts(parts, body)
    }

    /// HTTP/2 takes the target from the URI (`:scheme`, `:authority`,
    /// `:path`) and has no `Host`.
    fn for_h2(&self, req: Request<Body>) -> Request<Body> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        parts.uri = Uri::from_parts(uri).expect("scheme, authority and path are valid");
        parts.headers.remove(HOST);
        Request::from_parts(parts, body)
    }

    /// Sends `req` (from [`Origin::outgoing`]) on an idle or a new
    /// connection. `again`, the same request without its body when it is
    /// safe to repeat, is sent on a fresh connection if the upstream never
    /// processed the first attempt.
    pub(super) async fn send(
        &self,
        mut req: Request<Body>,
        mut again: Option<Request<Body>>,
    ) -> Result<Response<Answer>, UpstreamError> {
        let mut fresh = false;
        loop {
            let (conn, reused) = self.connection(fresh).await?;
            let (err, retry) = match conn {
                Conn::H1(mut conn) => match conn.round_trip(req).await {
                    Ok(res) => {
                        // A retry's fresh connection carries that one
                        // request and is closed: an upstream that just
                        // dropped a connection under a request is not
                        // trusted with an idle one.
                        let idle = (!fresh).then(|| Arc::clone(&self.idle));
                        return Ok(res.map(|body| Answer::H1(UpstreamBody::new(body, conn, idle))));
                    }
                    Err(Failed::Unsent(unsent)) if reused => {
                        req = *unsent;
                        continue;
                    }
                    Err(Failed::Unsent(_)) => {
                        return Err(UpstreamError::ClosedBeforeSending);
                    }
                    Err(Failed::Sent { err, answered }) => {
                        let retry = never_processed(&err, reused, answered);
                        (err, retry)
                    }
                },
                Conn::H2(id, mut send) => match send.try_send_request(self.for_h2(req)).await {
                    Ok(res) => return Ok(res.map(Answer::H2)),
                    Err(mut e) => match e.take_message() {
                        Some(unsent) if reused => {
                            self.forget_h2(id);
                            req = self.outgoing(unsent);
                            continue;
                        }
                        Some(_) => return Err(UpstreamError::ClosedBeforeSending),
                        None => {
                            let err = e.into_error();
                            let retry = never_processed(&err, false, false);
                            if retry {
                                self.forget_h2(id);
                            }
                            (err, retry)
                        }
                    },
                },
            };
            match again.take() {
                Some(copy) if retry => {
                    tracing::debug!(error = %describe_chain(&err), "the upstream never processed the request; retrying once on a fresh connection");
                    req = copy;
                    fresh = true;
                }
                _ => return Err(UpstreamError::Request(err)),
            }
        }
    }

    /// An idle HTTP/1 connection or the shared HTTP/2 one (`reused`), or a
    /// new connection; only a new one when `fresh`.
    async fn connection(&self, fresh: bool) -> Result<(Conn, bool), UpstreamError> {
        if !fresh {
            if let Some(reused) = self.reusable() {
                return Ok((reused, true));
            }
        }
        // Opening is rare next to reusing, and its future (DNS, TCP, TLS,
        // handshakes) is large: boxed, so that every request's future stays
        // small.
        Box::pin(self.new_connection(fresh)).await
    }

    async fn new_connection(&self, fresh: bool) -> Result<(Conn, bool), UpstreamError> {
        // While HTTP/2 is possible, requests that find no connection wait
        // for one being opened, so that they share it rather than each
        // opening its own; if that attempt fails, each opens its own.
        if !fresh && self.protocol.load(Ordering::Relaxed) != HTTP1 {
            if let Some(_opening) = self.opening.claim_or_wait().await {
                return Ok((self.open().await?, false));
            }
            if let Some(reused) = self.reusable() {
                return Ok((reused, true));
            }
        }
        Ok((self.open().await?, false))
    }

    fn reusable(&self) -> Option<Conn> {
        if let Some(conn) = self.idle.take() {
            return Some(Conn::H1(conn));
        }
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        match &*h2 {
            Some((id, send)) if !send.is_closed() => Some(Conn::H2(*id, send.clone())),
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    async fn open(&self) -> Result<Conn, UpstreamError> {
        match self.connector.open(&self.uri).await? {
            Opened::H1(conn) => {
                self.protocol.store(HTTP1, Ordering::Relaxed);
                Ok(Conn::H1(conn))
            }
            Opened::H2(send) => {
                self.protocol.store(HTTP2, Ordering::Relaxed);
                let id = self.h2_opened.fetch_add(1, Ordering::Relaxed);
                let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
                if h2.as_ref().is_none_or(|(_, current)| current.is_closed()) {
                    *h2 = Some((id, send.clone()));
                }
                Ok(Conn::H2(id, send))
            }
        }
    }

    /// The shared HTTP/2 connection number `id` refused a request: later
    /// ones open a new connection.
    fn forget_h2(&self, id: u64) {
        let mut h2 = self.h2.lock().unwrap_or_else(PoisonError::into_inner);
        if h2.as_ref().is_some_and(|(current, _)| *current == id) {
            *h2 = None;
        }
    }
}

/// `Host` for an origin: the host, and the port unless it is the scheme's
/// default.
fn host_field(scheme: &Scheme, authority: &Authority) -> HeaderValue {
    let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
    let text = match authority.port_u16() {
        Some(port) if port != default_port => format!("{}:{port}", authority.host()),
        _ => authority.host().to_owned(),
    };
    HeaderValue::from_str(&text).expect("an authority's host is a valid field value")
}

/// Lets one request open a connection while the others that arrive
/// meanwhile wait for it.
#[derive(Default)]
struct Opening {
    busy: Mutex<bool>,
    done: Notify,
}

/// Held by the request opening a connection; dropping it (done, failed or
/// cancelled) lets the waiting ones go on.
struct Claim<'a>(&'a Opening);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        *self.0.busy.lock().unwrap_or_else(PoisonError::into_inner) = false;
        self.0.done.notify_waiters();
    }
}

impl Opening {
    /// The claim if nobody is opening; otherwise waits until they are done
    /// and returns `None`.
    async fn claim_or_wait(&self) -> Option<Claim<'_>> {
        let done = self.done.notified();
        let mut done = std::pin::pin!(done);
        done.as_mut().enable();
        {
            let mut busy = self.busy.lock().unwrap_or_else(PoisonError::into_inner);
            if !*busy {
                *busy = true;
                return Some(Claim(self));
            }
        }
        done.await;
        None
    }
}

/// An answer's body: HTTP/1 drives its own connection; HTTP/2's is
/// hyper's.
pub(super) enum Answer {
    H1(UpstreamBody),
    H2(Incoming),
}

impl http_body::Body for Answer {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Answer::H1(body) => Pin::new(body).poll_frame(cx),
            Answer::H2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Answer::H1(body) => body.is_end_stream(),
            Answer::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Answer::H1(body) => body.size_hint(),
            Answer::H2(body) => body.size_hint(),
        }
    }
}
