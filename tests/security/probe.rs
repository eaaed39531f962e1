//! Raw HTTP/1 probes for the framing, head and request-target cases: a
//! request written as bytes on a fresh connection, and what came back.

use std::time::Duration;

use crate::support::invariants::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::impatient;

/// What one raw connection produced.
#[derive(Debug)]
pub(crate) struct Probe {
    /// Status codes of every response on the connection, in order.
    pub(crate) statuses: Vec<u16>,
    /// Whether the proxy closed the connection (within the read limit).
    pub(crate) closed: bool,
    pub(crate) raw: String,
}

/// Writes `bytes` on a fresh connection, half-closes nothing, and reads
/// until the proxy closes or `limit` passes.
pub(crate) async fn probe_for(h: &Harness, bytes: &[u8], limit: Duration) -> Probe {
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let (out, closed) = read_for(&mut stream, limit).await;
    let raw = String::from_utf8_lossy(&out).into_owned();
    Probe {
        statuses: statuses(&raw),
        closed,
        raw,
    }
}

pub(crate) async fn probe(h: &Harness, bytes: &[u8]) -> Probe {
    probe_for(h, bytes, Duration::from_secs(5)).await
}

pub(crate) async fn start() -> Harness {
    impatient().start().await
}

/// A case that must be refused with one of `allowed`, the connection
/// closed, and nothing forwarded.
pub(crate) async fn assert_refused(h: &Harness, name: &str, bytes: &[u8], allowed: &[u16]) {
    let before = h.sim.api_started();
    let p = probe(h, bytes).await;
    assert!(
        p.statuses.len() == 1 && allowed.contains(&p.statuses[0]),
        "{name:?}: want one of {allowed:?}, got {p:?}"
    );
    assert!(p.closed, "{name:?}: connection left open: {p:?}");
    assert_nothing_forwarded_since(h, before, name);
}

pub(crate) const SMUGGLED: &str = "GET /1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

pub(crate) fn smuggled_reached(h: &Harness) -> bool {
    h.sim.received().iter().any(|r| r.path.contains("smuggled"))
}

pub(crate) fn post(extra: &str, body: &str) -> String {
    format!("POST /1/x HTTP/1.1\r\nHost: x\r\n{extra}\r\n\r\n{body}")
}

pub(crate) fn get_with(line: &str) -> String {
    format!("GET /1/x HTTP/1.1\r\nHost: x\r\n{line}\r\nConnection: close\r\n\r\n")
}

pub(crate) fn request_line(line: &str) -> String {
    format!("{line}\r\nHost: x\r\nConnection: close\r\n\r\n")
}

pub(crate) fn chunked(body: &str) -> String {
    post("Transfer-Encoding: chunked", body)
}
