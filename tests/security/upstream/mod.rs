//! The upstream misbehaves (RELIABILITY.md §4, and the upstream-facing
//! rows of §2 and §3). It is a scripted raw server (`support::faulty`);
//! tokens come from the simulator, or from a scripted token endpoint.
//! Every case ends with the global invariants.

use std::time::Duration;

use crate::support::faulty::{self, RawUpstream, Seen};
use crate::support::invariants::*;
use crate::support::*;

mod answers;
mod faults;
mod h2;
mod token_endpoint;

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

/// The same head, for a HEAD request.
const OK_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n";

async fn start(raw: &RawUpstream) -> Harness {
    Setup::default()
        .admin()
        .upstream_url(raw.url())
        .start()
        .await
}

/// The proxy, admin listener on, in front of a TLS upstream at `url` whose
/// certificate comes from `pki`.
async fn start_trusting(url: String, pki: &faulty::Pki) -> Harness {
    Setup::default()
        .admin()
        .upstream_url(url)
        .trust(&pki.root_pem)
        .start()
        .await
}

fn get_close(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// The head and body of a raw HTTP/1 answer.
fn split(raw: &str) -> (String, &[u8]) {
    let raw = raw.as_bytes();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    (
        String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase(),
        &raw[end + 4..],
    )
}

fn assert_502(text: &str, what: &str) {
    assert_eq!(first_status(text), 502, "{what}: {text}");
    let (head, body) = split(text);
    assert!(
        head.contains("x-fitbit-proxy-error: upstream_unreachable"),
        "{what}: {text}"
    );
    assert_fitbit_error(body, "upstream_unreachable");
}

/// The connections that carried a request for `path`.
fn conns_of(seen: &[Seen], path: &str) -> Vec<usize> {
    seen.iter()
        .filter(|s| s.path() == path)
        .map(|s| s.conn)
        .collect()
}

/// The proxy's log lines, captured by one process-wide subscriber (a
/// per-thread one races with tracing's callsite cache when tests run in
/// parallel). Tests look up their own lines by a path no other test uses.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> Logs {
        static LOGS: std::sync::OnceLock<Logs> = std::sync::OnceLock::new();
        LOGS.get_or_init(|| {
            let logs = Logs::default();
            let writer = logs.clone();
            tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .with_writer(move || writer.clone())
                .init();
            logs
        })
        .clone()
    }

    /// The one access-log line for `path`, written when the connection
    /// lets go of the answer (waits up to 5 s for it).
    async fn access_line(&self, path: &str) -> String {
        let lines = || {
            let text = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
            text.lines()
                .filter(|l| l.contains(&format!("path={path} ")) && l.contains("request"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        eventually(Duration::from_secs(5), || !lines().is_empty()).await;
        let lines = lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        lines[0].clone()
    }
}

/// A head announcing 1000 bytes, and 10 of them.
const CL_PART: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n0123456789";
/// A chunked head and one chunk, no last chunk.
const CHUNK_PART: &[u8] =
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\na\r\n0123456789\r\n";
/// A close-delimited head and some body.
const EOF_PART: &[u8] = b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n0123456789";

/// The client saw a 200 whose body is visibly incomplete: fewer bytes than
/// its Content-Length, or chunked with no last chunk.
fn assert_cut_short(text: &str, what: &str) {
    assert_eq!(first_status(text), 200, "{what}: {text}");
    let (head, body) = split(text);
    if head.contains("content-length: 1000") {
        assert!(body.len() < 1000, "{what}: {text}");
    } else {
        assert!(
            head.contains("transfer-encoding: chunked"),
            "{what}: {text}"
        );
        assert!(!body.ends_with(b"0\r\n\r\n"), "{what}: a clean end: {text}");
    }
    assert!(text.contains("0123456789"), "{what}: {text}");
}
