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

// ---- 4.19: answers that do not parse ----

/// 4.19: what a broken upstream may send, and whether the proxy answers
/// 502 (`true`) or passes a response cleaned of the bad framing (`false`;
/// only the bare-LF answer is sound enough to keep its connection).
const UNPARSABLE: &[(&str, &[u8], bool)] = &[
    ("content-length abc", b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n{}", true),
    ("two content-lengths", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{}abc", true),
    ("te and cl, smuggled", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nResponse splitting attach", true),
    ("chunked not last", b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, gzip\r\n\r\n2\r\n{}\r\n0\r\n\r\n", true),
    ("obs-fold", b"HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\ncontent-length: 2\r\n\r\n{}", true),
    ("bare lf", b"HTTP/1.1 200 OK\ncontent-length: 2\n\n{}", false),
    ("huge head", b"", true),
    ("204 with a body", b"HTTP/1.1 204 No Content\r\ncontent-length: 5\r\n\r\nSMUGGLED", false),
    ("bytes after the body", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\ncontent-length: 8\r\n\r\nSMUGGLED", false),
    ("101 unasked", b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\nSMUGGLED", true),
    ("status 2000", b"HTTP/1.1 2000 OK\r\ncontent-length: 2\r\n\r\n{}", true),
    ("garbage", b"HELLO THERE\r\n\r\n", true),
];

fn huge_head() -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 0..300 {
        head.extend(format!("x-filler-{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    head.extend(b"\r\n{}");
    head
}

/// 4.19: each broken answer gives 502 `upstream_unreachable` in Fitbit's
/// shape, or (where hyper can frame it safely) a clean answer; the bytes
/// beyond the framing never reach the client, and the connection it came on
/// carries no other request.
#[tokio::test]
async fn unparsable_answers_get_502_and_their_connection_is_not_reused() {
    let raw = RawUpstream::start(|s| {
        let Some(i) = s.path().strip_prefix("/bad/") else {
            return vec![faulty::send(OK)];
        };
        let answer = match UNPARSABLE[i.parse::<usize>().unwrap()] {
            ("huge head", ..) => huge_head(),
            (_, bytes, _) => bytes.to_vec(),
        };
        // Left open: only the proxy decides not to reuse it.
        vec![Step::Send(answer)]
    })
    .await;
    let h = start(&raw).await;
    let client = http1_client();
    for (i, (what, _, is_502)) in UNPARSABLE.iter().enumerate() {
        let path = format!("/bad/{i}");
        let got = exchange(&h, &get_close(&path)).await;
        let text = String::from_utf8_lossy(&got);
        println!("{what}: {}", text.lines().next().unwrap_or_default());
        if *is_502 {
            assert_502(&got, what);
        } else {
            assert_ne!(first_status(&text), 502, "{what}: {text}");
        }
        assert!(
            !text.contains("SMUGGLED") && !text.contains("splitting"),
            "{what}: {text}"
        );
        // The next request does not land on the broken connection.
        let (res, _) = send(&client, get(&h.url("/ok"))).await;
        assert_eq!(res.status(), 200, "{what}");
        let seen = raw.seen();
        let bad: Vec<_> = seen.iter().filter(|s| s.path() == path).collect();
        assert_eq!(bad.len(), 1, "{what}");
        let reused = seen
            .iter()
            .any(|s| s.conn == bad[0].conn && s.nth > bad[0].nth);
        assert!(
            !reused || *what == "bare lf",
            "{what}: its connection was reused"
        );
    }
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}
