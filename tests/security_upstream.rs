//! Catalog §4 (RELIABILITY.md), faults at the upstream and at the token
//! endpoint, and the upstream-facing rows of §2/§3: broken framing, 1xx,
//! resets, stale pooled connections, truncation, trickles, bad
//! certificates, GOAWAY, `Connection: close`, redirects, byte-exact bodies.
//! The upstream is a scripted raw server (`support::faulty`); tokens come
//! from the simulator. Every case ends with the global invariants.

mod support;

use std::time::Duration;

use http::Request;
use http_body_util::Full;
use support::faulty::{self, RawUpstream, Seen, Step};
use support::invariants::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const OK: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

/// The same head, for a HEAD request.
const OK_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n";

async fn start(raw: &RawUpstream) -> Harness {
    count_panics();
    Setup::default()
        .admin()
        .start_against(&raw.url(), None)
        .await
}

/// Sends raw request bytes and reads until the proxy closes (or resets)
/// the connection, at most 10 s; checks G2 on what came back.
async fn exchange(h: &Harness, request: &str) -> Vec<u8> {
    let mut stream = TcpStream::connect(h.proxy).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let done = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(done.is_ok(), "connection still open: {out:?}");
    assert_no_canary("a raw answer", &out);
    out
}

fn get_close(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

/// The head and body of a raw HTTP/1 answer.
fn split(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
    (
        String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase(),
        &raw[end + 4..],
    )
}

fn assert_502(raw: &[u8], what: &str) {
    let text = String::from_utf8_lossy(raw);
    assert_eq!(first_status(&text), 502, "{what}: {text}");
    let (head, body) = split(raw);
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

// ---- 4.21: resets before the answer, and the stale pooled connection ----

/// 4.21: the upstream reads the request, then resets (or closes) a fresh
/// connection without a byte: 502 at once, and the request is not sent
/// again (the upstream may have acted on it).
#[tokio::test]
async fn a_reset_or_close_before_the_answer_gets_502_and_no_resend() {
    let raw = RawUpstream::start(|s| match s.path() {
        "/reset" => vec![Step::Reset],
        _ => vec![Step::Close],
    })
    .await;
    let h = start(&raw).await;
    for path in ["/reset", "/close"] {
        assert_502(&exchange(&h, &get_close(path)).await, path);
        assert_eq!(conns_of(&raw.seen(), path).len(), 1, "{path} sent again");
    }
    assert_outcomes(&h, &[(("proxy", "502"), 2.0)]).await;
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

/// 4.21, the keep-alive race: the upstream closes (FIN, or RST) a pooled
/// connection just as the proxy reuses it; here it reads the second
/// request on a connection and closes without a byte. A GET is retried once
/// on a fresh connection and succeeds; the request reached the upstream
/// twice but was answered (and so spent quota) once. A POST is never sent
/// twice: 502.
#[tokio::test]
async fn a_stale_pooled_connection_is_retried_once_for_safe_requests_only() {
    let raw = RawUpstream::start(|s| match (s.nth, s.path()) {
        (0, _) if s.head.starts_with("HEAD") => vec![faulty::send(OK_HEAD)],
        (0, _) => vec![faulty::send(OK)],
        (_, "/reset") => vec![Step::Reset],
        _ => vec![Step::Close],
    })
    .await;
    let h = start(&raw).await;
    let client = http1_client();
    for (method, path, want) in [
        ("GET", "/close", 200),
        ("HEAD", "/reset", 200),
        ("POST", "/post", 502),
    ] {
        for nth in 1..=2 {
            let req = Request::builder()
                .method(method)
                .uri(h.url(path))
                .header("x-nth", nth.to_string())
                .body(Full::from(if method == "POST" { "{}" } else { "" }))
                .unwrap();
            let (res, body) = send(&client, req).await;
            assert_no_canary("an answer", &body);
            let want = if nth == 1 { 200 } else { want };
            assert_eq!(res.status(), want, "{method} {path} #{nth}: {body:?}");
        }
        let conns = conns_of(&raw.seen(), path);
        let sent = if want == 200 { 3 } else { 2 };
        assert_eq!(conns.len(), sent, "{method} {path}: {conns:?}");
        assert_eq!(
            conns[0], conns[1],
            "the second request reused the connection"
        );
        if want == 200 {
            assert_ne!(conns[2], conns[1], "the retry used a fresh connection");
        }
    }
    assert_outcomes(&h, &[(("upstream", "200"), 5.0), (("proxy", "502"), 1.0)]).await;
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}
