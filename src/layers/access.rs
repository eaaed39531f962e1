//! The access layer, outermost in the stack: gives every request an
//! `x-request-id` (kept from the client when sane), passes it upstream and
//! back, counts every answer in the metrics and writes one access-log line
//! per request when its response body ends. [`Line`] is the line's one
//! shape, also written for requests hyper refused before the stack
//! (`inbound/refusal.rs`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use http_body::{Frame, SizeHint};
use tokio::time::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::caller::{Caller, Identify};
use crate::body::Body;
use crate::error::BoxError;
use crate::ops::log_line::Fields;
use crate::ops::metrics::{Metrics, Origin};
use crate::profile::fitbit;

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The peer's socket address, put in every request's extensions by the
/// connection driver (`inbound/`) for the access log's `client` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// The access log's `tracing` target, fixed so that a `RUST_LOG` filter
/// such as `fitbit_proxy::access=off` does not depend on where this file
/// sits in the crate.
const ACCESS_LOG_TARGET: &str = "fitbit_proxy::access";

/// Longest client-sent request id kept as is.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Logged for a request whose client went away before the answer was ready
/// (nginx's convention); nothing was sent.
const CLIENT_CLOSED: u16 = 499;

/// `Some(id)` if the client's id can be kept: exactly one value, 1 to 128
/// visible ASCII characters (no spaces, no controls), so that it is safe to
/// log and to pass on.
pub(crate) fn client_request_id(req_headers: &http::HeaderMap) -> Option<HeaderValue> {
    let mut values = req_headers.get_all(&REQUEST_ID).iter();
    let id = values.next()?;
    let bytes = id.as_bytes();
    let sane = values.next().is_none()
        && !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID_LEN
        && bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    sane.then(|| id.clone())
}

/// 16 random bytes as 32 lowercase hex digits.
pub(crate) fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = rand::random::<u128>();
    let mut id = [0u8; 32];
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

#[derive(Clone)]
pub struct AccessLayer {
    metrics: Arc<Metrics>,
    identify: Identify,
}

impl AccessLayer {
    /// Callers named by their source address only.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        AccessLayer {
            metrics,
            identify: Identify::by_address(),
        }
    }

    /// Callers named (and weighed) as `identify` says.
    pub fn identifying(mut self, identify: Identify) -> Self {
        self.identify = identify;
        self
    }
}

impl<S> Layer<S> for AccessLayer {
    type Service = Access<S>;
    fn layer(&self, inner: S) -> Access<S> {
        Access {
            inner,
            metrics: Arc::clone(&self.metrics),
            identify: self.identify.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    metrics: Arc<Metrics>,
    identify: Identify,
}

impl<S, B> Service<Request<B>> for Access<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = Infallible>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let request_id = client_request_id(req.headers()).unwrap_or_else(new_request_id);
        req.headers_mut().insert(REQUEST_ID, request_id.clone());
        let client = req.extensions().get::<ClientAddr>().map(|c| c.0);
        let caller = self
            .identify
            .caller(req.headers_mut(), client.map(|c| c.ip()), &self.metrics);
        req.extensions_mut().insert(caller.clone());
        let record = Record {
            metrics: Arc::clone(&self.metrics),
            method: req.method().clone(),
            // A shared handle on hyper's parsed URI, not a copy; only its
            // path is logged (a query string may carry user data).
            uri: req.uri().clone(),
            request_id,
            client,
            caller,
            start: Instant::now(),
            answer: None,
            error: None,
            bytes: 0,
            complete: false,
        };
        ResponseFuture {
            inner: self.inner.call(req),
            record: Some(record),
        }
    }
}

pin_project_lite::pin_project! {
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Dropped unanswered when the client goes away first: logged then.
        record: Option<Record>,
    }
}

impl<F> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>>,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(res) = std::task::ready!(this.inner.poll(cx));
        let mut record = this.record.take().expect("polled after completion");
        let (mut parts, body) = res.into_parts();
        // The proxy's own answers name their kind in x-fitbit-proxy-error.
        record.error = parts.headers.get(fitbit::PROXY_ERROR_HEADER).cloned();
        let origin = if record.error.is_some() {
            Origin::Proxy
        } else {
            Origin::Upstream
        };
        let elapsed = record.start.elapsed();
        record.answer = Some((parts.status.as_u16(), origin));
        record
            .metrics
            .request(origin, parts.status.as_u16(), elapsed);
        record
            .metrics
            .caller_request(&record.caller.series, origin, parts.status.as_u16());
        parts.headers.insert(REQUEST_ID, record.request_id.clone());
        let body = Body::new(Counted {
            inner: body,
            record,
        });
        Poll::Ready(Ok(Response::from_parts(parts, body)))
    }
}

/// One request's access-log line, written when it is dropped: with the
/// response body (sent, or cut off), or unanswered.
struct Record {
    metrics: Arc<Metrics>,
    method: Method,
    uri: http::Uri,
    request_id: HeaderValue,
    client: Option<SocketAddr>,
    caller: Caller,
    start: Instant,
    /// Status and origin, once the response headers are ready.
    answer: Option<(u16, Origin)>,
    /// The `x-fitbit-proxy-error` of the proxy's own answers.
    error: Option<HeaderValue>,
    /// Response body bytes handed to the connection so far.
    bytes: u64,
    /// The response body reached its end.
    complete: bool,
}

impl Drop for Record {
    fn drop(&mut self) {
        let (status, origin) = match self.answer {
            Some((status, origin)) => (status, origin.as_str()),
            None => {
                self.metrics.requests_cancelled.inc();
                (CLIENT_CLOSED, "client")
            }
        };
        Line {
            method: Some(self.method.as_str()),
            path: Some(self.uri.path()),
            status,
            origin,
            error: self.error.as_ref().and_then(|e| e.to_str().ok()),
            duration: self.start.elapsed(),
            request_id: self.request_id.to_str().unwrap_or_default(),
            client: self.client,
            caller: Some(&self.caller.name),
            bytes: self.bytes,
            complete: self.complete,
        }
        .write();
    }
}

/// What one access-log line says. Fields that are `None` are left out of
/// the line.
pub(crate) struct Line<'a> {
    /// `None` when the request head could not be read (refused by hyper).
    pub(crate) method: Option<&'a str>,
    /// Without the query. `None` as for `method`.
    pub(crate) path: Option<&'a str>,
    pub(crate) status: u16,
    /// `upstream`, `proxy` or `client` (gone before the answer).
    pub(crate) origin: &'a str,
    /// The `x-fitbit-proxy-error` of the proxy's own answers.
    pub(crate) error: Option<&'a str>,
    pub(crate) duration: std::time::Duration,
    pub(crate) request_id: &'a str,
    /// The peer's address.
    pub(crate) client: Option<SocketAddr>,
    /// Who is calling: the caller header's name, else the source address.
    pub(crate) caller: Option<&'a str>,
    /// Response body bytes handed to the connection.
    pub(crate) bytes: u64,
    /// The response body was sent to its end.
    pub(crate) complete: bool,
}

impl Line<'_> {
    /// Writes the line if the log filter lets `fitbit_proxy::access` at
    /// `INFO` through: by hand when the log writer allows (no colours),
    /// else through `tracing`, in the same shape either way.
    pub(crate) fn write(&self) {
        if !tracing::enabled!(target: ACCESS_LOG_TARGET, tracing::Level::INFO) {
            return;
        }
        let by_hand =
            crate::ops::log_line::write_info(ACCESS_LOG_TARGET, "request", |f| self.fields(f));
        if !by_hand {
            self.write_through_tracing();
        }
    }

    /// The fields in `tracing`'s order (that of the `info!` below).
    fn fields(&self, f: &mut Fields<'_>) {
        if let Some(method) = self.method {
            f.bare("method", method);
        }
        if let Some(path) = self.path {
            f.bare("path", path);
        }
        f.uint("status", self.status.into());
        f.str("origin", self.origin);
        if let Some(error) = self.error {
            f.str("error", error);
        }
        f.millis("duration_ms", self.duration);
        f.str("request_id", self.request_id);
        if let Some(client) = self.client {
            f.addr("client", client);
        }
        if let Some(caller) = self.caller {
            f.str("caller", caller);
        }
        f.uint("bytes", self.bytes);
        f.bool("complete", self.complete);
    }

    fn write_through_tracing(&self) {
        let duration_ms = self.duration.as_micros() as f64 / 1000.0;
        use tracing::field::display as shown;
        // Method and path unquoted in the text format, as before this
        // struct existed; the other strings quoted.
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method = self.method.map(shown),
            path = self.path.map(shown),
            status = self.status,
            origin = self.origin,
            error = self.error,
            duration_ms,
            request_id = self.request_id,
            client = self.client.map(shown),
            caller = self.caller,
            bytes = self.bytes,
            complete = self.complete,
            "request"
        );
    }
}

/// The response body, counting what passes through.
struct Counted {
    inner: Body,
    record: Record,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    this.record.bytes += data.len() as u64;
                }
            }
            None => this.record.complete = true,
            Some(Err(_)) => {}
        }
        if this.inner.is_end_stream() {
            this.record.complete = true;
        }
        Poll::Ready(frame)
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

    fn with_ids(ids: &[&[u8]]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for id in ids {
            headers.append(REQUEST_ID, HeaderValue::from_bytes(id).unwrap());
        }
        headers
    }

    #[test]
    fn a_sane_client_id_is_kept_anything_else_replaced() {
        let long = vec![b'a'; 128];
        let too_long = vec![b'a'; 129];
        let cases: &[(&[&[u8]], bool)] = &[
            (&[b"abc-123"], true),
            (&[b"0f3a9c2e-5b1d-4e7a-9c0d-1a2b3c4d5e6f"], true),
            (&[b"a=b;c/d:e~!"], true),
            (&[&long], true),
            (&[&too_long], false),
            (&[b""], false),
            (&[b"has space"], false),
            (&[b"tab\there"], false),
            (&[b"caf\xc3\xa9"], false),
            (&[b"one", b"two"], false),
            (&[], false),
        ];
        for (ids, kept) in cases {
            let got = client_request_id(&with_ids(ids));
            assert_eq!(got.is_some(), *kept, "{ids:?}");
            if *kept {
                assert_eq!(got.unwrap().as_bytes(), ids[0]);
            }
        }
    }

    /// A `tracing` writer into a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The line as `tracing`'s formatter writes it, in the format the
    /// binary configures (`ops/logging.rs`).
    fn through_tracing(line: &Line<'_>, json: bool) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone());
        let write = || line.write_through_tracing();
        if json {
            let subscriber = builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .finish();
            tracing::subscriber::with_default(subscriber, write);
        } else {
            tracing::subscriber::with_default(builder.finish(), write);
        }
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        text
    }

    #[test]
    fn the_line_written_by_hand_is_the_line_tracing_writes() {
        let client: SocketAddr = "[2001:db8::7]:4431".parse().unwrap();
        let lines = [
            Line {
                method: Some("GET"),
                path: Some("/1/user/-/profile.json"),
                status: 200,
                origin: "upstream",
                error: None,
                duration: std::time::Duration::from_micros(1_213),
                request_id: "0f3a9c2e5b1d4e7a9c0d1a2b3c4d5e6f",
                client: Some("127.0.0.1:53650".parse().unwrap()),
                caller: Some("127.0.0.1"),
                bytes: 1_200,
                complete: true,
            },
            // Every field that may be left out left out, and strings that
            // need escaping in both formats.
            Line {
                method: None,
                path: None,
                status: 431,
                origin: "proxy",
                error: Some("header_too_large"),
                duration: std::time::Duration::from_secs(5_001),
                request_id: "a\"b\\c",
                client: Some(client),
                caller: Some("caf\u{e9} \"team\"\t\u{7}"),
                bytes: 0,
                complete: false,
            },
            Line {
                method: Some("PATCH"),
                path: Some("/a\"b\\c\u{1}"),
                status: 499,
                origin: "client",
                error: None,
                duration: std::time::Duration::ZERO,
                request_id: "",
                client: None,
                caller: None,
                bytes: u64::MAX,
                complete: false,
            },
        ];
        for line in &lines {
            for json in [false, true] {
                let ours =
                    crate::ops::log_line::rendered(json, ACCESS_LOG_TARGET, "request", |f| {
                        line.fields(f)
                    });
                let theirs = through_tracing(line, json);
                // The same line after the timestamp (tracing's is now).
                let after_time = |l: &str| l[l.find('Z').unwrap()..].to_owned();
                if json {
                    let mut ours: serde_json::Value = serde_json::from_str(&ours).unwrap();
                    let mut theirs: serde_json::Value = serde_json::from_str(&theirs).unwrap();
                    assert_eq!(ours["timestamp"], "1970-01-01T00:00:00.000000Z");
                    ours["timestamp"] = serde_json::Value::Null;
                    theirs["timestamp"] = serde_json::Value::Null;
                    assert_eq!(ours, theirs);
                } else {
                    assert!(
                        ours.starts_with("1970-01-01T00:00:00.000000Z  INFO"),
                        "{ours}"
                    );
                    assert_eq!(after_time(&ours), after_time(&theirs));
                }
            }
        }
    }

    #[test]
    fn generated_ids_are_32_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        assert_ne!(a, b);
        for id in [a, b] {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32, "{s}");
            assert!(s
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert!(client_request_id(&with_ids(&[s.as_bytes()])).is_some());
        }
    }
}
