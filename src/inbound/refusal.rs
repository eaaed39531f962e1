//! HTTP/1 requests that hyper refuses before the stack sees them. hyper's
//! server answers a head it cannot parse (400), a head over the limits
//! (431) or a target too long (414) by itself, without a request id, a log
//! line or a count. [`HeldIo`] sits under hyper on every HTTP/1 connection:
//! while no request is being answered, what hyper writes can only be such an
//! answer of its own, so it is held back and the proxy's answer goes out
//! instead (Fitbit's error shape, `x-fitbit-proxy-error`, a fresh
//! `x-request-id`, `Connection: close`), counted in `requests_total` and
//! written to the access log like every other answer.
//!
//! HTTP/2 has no such place: the h2 library answers a header list over the
//! limit with a 431 of its own and resets malformed streams; neither reaches
//! hyper's service nor this module.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE};
use http::{HeaderValue, Request};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::watch::{Watch, Watching};
use crate::error::ProxyError;
use crate::layers::access::{new_request_id, Line, REQUEST_ID};
use crate::layers::respond;
use crate::layers::Answers;
use crate::ops::metrics::{Metrics, Origin};

/// One HTTP/1 connection's requests as its driver sees them: how many the
/// service took, and how many of their answers hyper took to the end.
pub(crate) struct Exchanges {
    taken: AtomicU64,
    ended: AtomicU64,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
    answers: Answers,
}

impl Exchanges {
    pub(crate) fn new(peer: SocketAddr, metrics: Arc<Metrics>, answers: Answers) -> Arc<Exchanges> {
        Arc::new(Exchanges {
            taken: AtomicU64::new(0),
            ended: AtomicU64::new(0),
            peer,
            metrics,
            answers,
        })
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.taken.load(Ordering::Relaxed),
            self.ended.load(Ordering::Relaxed),
        )
    }
}

impl Watch for Arc<Exchanges> {
    type Each = Exchange;

    fn taken(&self, _req: &Request<Incoming>) -> Exchange {
        let seq = self.taken.fetch_add(1, Ordering::Relaxed) + 1;
        Exchange {
            all: Arc::clone(self),
            seq,
        }
    }
}

/// The `seq`-th request of a connection.
pub(crate) struct Exchange {
    all: Arc<Exchanges>,
    seq: u64,
}

impl Watching for Exchange {
    fn ended(&self, _to_its_end: bool) {
        // A body may report its end more than once; requests end in order.
        self.all.ended.fetch_max(self.seq, Ordering::Relaxed);
    }
}

/// A connection's transport under hyper's HTTP/1 server, swapping hyper's
/// own refusals for the proxy's answers.
pub(crate) struct HeldIo<T> {
    inner: T,
    exchanges: Arc<Exchanges>,
    /// `ended` when hyper last flushed with every answer ended. hyper calls
    /// flush only once its own buffer is empty, so from then until the
    /// service takes another request, all of those answers are out and
    /// whatever hyper writes is an answer of its own.
    quiet_at: u64,
    /// When the bytes of the head now arriving were first read.
    head_from: Option<Instant>,
    /// The proxy's answer that replaces hyper's, while it is written.
    answer: Option<Box<Answer>>,
}

impl<T> HeldIo<T> {
    /// Wraps a transport between two requests (or before the first).
    pub(crate) fn new(inner: T, exchanges: &Arc<Exchanges>) -> Self {
        HeldIo {
            inner,
            quiet_at: exchanges.ended.load(Ordering::Relaxed),
            exchanges: Arc::clone(exchanges),
            head_from: None,
            answer: None,
        }
    }

    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    /// No request is being answered: every one taken was answered to its
    /// end and hyper has flushed since.
    fn between_requests(&self) -> bool {
        let (taken, ended) = self.exchanges.counts();
        taken == ended && self.quiet_at == ended
    }

    /// Whether the write starting with `head` is hyper's own refusal, which
    /// is then replaced: only between requests, and only a 4xx status line.
    fn replaces(&mut self, head: Option<&[u8]>) -> bool {
        if self.answer.is_some() {
            // The rest of hyper's answer, if it wrote it in parts.
            return true;
        }
        let Some(status) = head.and_then(refusal_status) else {
            return false;
        };
        if !self.between_requests() {
            return false;
        }
        let start = self.head_from.take().unwrap_or_else(Instant::now);
        self.answer = Some(Box::new(Answer::new(status, start, &self.exchanges)));
        true
    }
}

/// The status of an answer hyper writes by itself when it refuses a head:
/// `HTTP/1.1 4xx …`.
fn refusal_status(head: &[u8]) -> Option<u16> {
    let rest = head
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| head.strip_prefix(b"HTTP/1.0 "))?;
    let digits = rest.get(..3)?;
    if digits[0] != b'4' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The cause standing for hyper's refusal with `status`.
fn cause(status: u16) -> ProxyError {
    match status {
        431 => ProxyError::HeadTooLarge,
        414 => ProxyError::UriTooLong,
        _ => ProxyError::BadRequest("the request head is not valid HTTP/1.1"),
    }
}

/// Now, as a `Date` header says it (as hyper dates every other answer).
/// The calendar time is the point here: tokio's clock has none, and no test
/// reads the value.
#[allow(clippy::disallowed_types)]
fn http_date_now() -> String {
    httpdate::fmt_http_date(std::time::SystemTime::now())
}

/// The proxy's answer to a refused head, counted when made and logged when
/// dropped, with how much of it was written.
struct Answer {
    bytes: Bytes,
    /// Where the body starts in `bytes`.
    body_at: usize,
    written: usize,
    status: u16,
    code: &'static str,
    request_id: HeaderValue,
    start: Instant,
    peer: SocketAddr,
    /// The source address: the head naming no caller was not read.
    caller: String,
}

impl Answer {
    fn new(hyper_status: u16, start: Instant, exchanges: &Exchanges) -> Answer {
        let err = cause(hyper_status);
        let (status, code) = err.status_and_code();
        let (mut parts, body) = respond::answer_parts(&err, exchanges.answers);
        let request_id = new_request_id();
        let headers = &mut parts.headers;
        headers.insert(REQUEST_ID, request_id.clone());
        // hyper closes the connection after a refused head.
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        if let Ok(date) = HeaderValue::from_str(&http_date_now()) {
            headers.insert(DATE, date);
        }
        let mut bytes = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or("")
        )
        .into_bytes();
        for (name, value) in &parts.headers {
            bytes.extend_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(b": ");
            bytes.extend_from_slice(value.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        let body_at = bytes.len();
        bytes.extend_from_slice(&body);
        exchanges
            .metrics
            .request(Origin::Proxy, status.as_u16(), start.elapsed());
        // The head was not read: the caller is the source address.
        let caller = exchanges.peer.ip().to_string();
        let series = exchanges.metrics.callers.series(&caller);
        exchanges
            .metrics
            .caller_request(&series, Origin::Proxy, status.as_u16());
        Answer {
            bytes: bytes.into(),
            body_at,
            written: 0,
            status: status.as_u16(),
            code,
            request_id,
            start,
            peer: exchanges.peer,
            caller,
        }
    }

    /// Writes what is left of the answer.
    fn poll_send<T: AsyncWrite + Unpin>(
        &mut self,
        io: &mut T,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while self.written < self.bytes.len() {
            let n =
                std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.bytes[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for Answer {
    fn drop(&mut self) {
        Line {
            method: None,
            path: None,
            status: self.status,
            origin: Origin::Proxy.as_str(),
            error: Some(self.code),
            duration: self.start.elapsed(),
            request_id: self.request_id.to_str().unwrap_or_default(),
            client: Some(self.peer),
            caller: Some(&self.caller),
            bytes: self.written.saturating_sub(self.body_at) as u64,
            complete: self.written == self.bytes.len(),
        }
        .write();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for HeldIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.head_from.is_none() && buf.filled().len() > before && this.between_requests() {
            this.head_from = Some(Instant::now());
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for HeldIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.replaces(Some(buf)) {
            return Poll::Ready(Ok(buf.len()));
        }
        this.head_from = None;
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let head = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]);
        if this.replaces(head) {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        this.head_from = None;
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(answer) = &mut this.answer {
            std::task::ready!(answer.poll_send(&mut this.inner, cx))?;
        } else {
            let (taken, ended) = this.exchanges.counts();
            if taken == ended {
                this.quiet_at = ended;
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(answer) = &mut this.answer {
            std::task::ready!(answer.poll_send(&mut this.inner, cx))?;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_4xx_status_line_is_taken_for_a_refusal() {
        let cases: &[(&[u8], Option<u16>)] = &[
            (
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
                Some(431),
            ),
            (
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
                Some(400),
            ),
            (b"HTTP/1.0 414 URI Too Long\r\n", Some(414)),
            (b"HTTP/1.1 200 OK\r\n", None),
            (b"HTTP/1.1 503 Service Unavailable\r\n", None),
            (b"HTTP/1.1 4x0 Odd\r\n", None),
            (b"HTTP/1.1 40", None),
            (b"0\r\n\r\n", None),
            (b"", None),
        ];
        for (head, want) in cases {
            assert_eq!(
                refusal_status(head),
                *want,
                "{:?}",
                String::from_utf8_lossy(head)
            );
        }
    }

    #[test]
    fn each_refusal_maps_to_its_answer() {
        for (hyper, status, code) in [
            (431, 431, "header_too_large"),
            (414, 414, "uri_too_long"),
            (400, 400, "bad_request"),
            (405, 400, "bad_request"),
        ] {
            let (got_status, got_code) = cause(hyper).status_and_code();
            assert_eq!((got_status.as_u16(), got_code), (status, code), "{hyper}");
        }
    }

    /// A transport that records what is written to it.
    #[derive(Default)]
    struct Sink(Vec<u8>);

    impl AsyncRead for Sink {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            _: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for Sink {
        fn poll_write(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.get_mut().0.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    async fn write_and_flush(io: &mut HeldIo<Sink>, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        io.write_all(bytes).await.unwrap();
        io.flush().await.unwrap();
    }

    /// Written answers go through; an error status written while no request
    /// is open is replaced, and only then.
    #[tokio::test]
    async fn only_what_hyper_writes_between_requests_is_replaced() {
        let metrics = Arc::new(Metrics::new());
        let exchanges = Exchanges::new(
            "127.0.0.1:9".parse().unwrap(),
            Arc::clone(&metrics),
            Answers::default(),
        );
        let mut io = HeldIo::new(Sink::default(), &exchanges);
        let request = || {
            let seq = exchanges.taken.fetch_add(1, Ordering::Relaxed) + 1;
            Exchange {
                all: Arc::clone(&exchanges),
                seq,
            }
        };
        // A request the stack answered 400: its answer is the stack's.
        let stacks: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        let first = request();
        write_and_flush(&mut io, stacks).await;
        first.ended(true);
        first.ended(true);
        // The tail of that answer, written after its body ended but before
        // hyper flushed: still the stack's.
        let tail: &[u8] = b"HTTP/1.1 404 tail bytes";
        write_and_flush(&mut io, tail).await;
        assert_eq!(io.inner.0, [stacks, tail].concat());
        // Now hyper refuses the next head by itself.
        write_and_flush(
            &mut io,
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n",
        )
        .await;
        let out = String::from_utf8(io.inner.0[stacks.len() + tail.len()..].to_vec()).unwrap();
        assert!(
            out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{out}"
        );
        assert!(
            out.contains("\r\nx-fitbit-proxy-error: header_too_large\r\n"),
            "{out}"
        );
        assert!(out.contains("\r\nconnection: close\r\n"), "{out}");
        assert!(out.contains("\r\nx-request-id: "), "{out}");
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("\r\ncontent-length: {}\r", body.len())),
            "{out}"
        );
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["errors"][0]["errorType"], "header_too_large");
        drop(io);
        let text = metrics.render(None);
        assert!(
            text.contains("fitbit_proxy_requests_total{origin=\"proxy\",code=\"431\"} 1\n"),
            "{text}"
        );
    }
}
