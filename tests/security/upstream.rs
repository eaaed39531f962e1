//! Catalog §4 (RELIABILITY.md), faults at the upstream and at the token
//! endpoint, and the upstream-facing rows of §2/§3: broken framing, 1xx,
//! resets, stale pooled connections, truncation, trickles, bad
//! certificates, GOAWAY, `Connection: close`, redirects, byte-exact bodies.
//! The upstream is a scripted raw server (`support::faulty`); tokens come
//! from the simulator. Every case ends with the global invariants.

use std::time::Duration;

use crate::support::faulty::{self, RawUpstream, Seen, Step};
use crate::support::invariants::*;
use crate::support::*;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};

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
        assert_502(&raw_exchange(h.proxy, &get_close(path)).await, path);
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
        let text = raw_exchange(h.proxy, &get_close(&path)).await;
        println!("{what}: {}", text.lines().next().unwrap_or_default());
        if *is_502 {
            assert_502(&text, what);
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
    let refused = UNPARSABLE.iter().filter(|c| c.2).count() as f64;
    let outcomes = [
        (("proxy", "502"), refused),
        (("upstream", "200"), UNPARSABLE.len() as f64 + 2.0),
        (("upstream", "204"), 1.0),
    ];
    assert_outcomes(&h, &outcomes).await;
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

// ---- 4.20: interim answers, HEAD and 304 ----

/// 4.20: `103 Early Hints` and `100 Continue` before the answer are dropped
/// (hyper's client consumes 1xx; the proxy passes only the final answer),
/// which arrives intact. A HEAD answer's `Content-Length: 1000` and a 304's
/// are passed on without a body and without waiting for one, and the
/// upstream connection stays usable.
#[tokio::test]
async fn interim_answers_are_dropped_and_head_and_304_come_back_bodiless() {
    let raw = RawUpstream::start(|s| {
        let answer: &[u8] = match s.path() {
            "/early" => b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello",
            "/head" => b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n",
            "/304" => b"HTTP/1.1 304 Not Modified\r\netag: \"v1\"\r\ncontent-length: 1000\r\n\r\n",
            _ => OK,
        };
        vec![faulty::send(answer)]
    })
    .await;
    let h = start(&raw).await;

    let got = raw_exchange(h.proxy, &get_close("/early")).await;
    let text = &got;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(
        !text.contains("HTTP/1.1 103") && !text.contains("HTTP/1.1 100"),
        "{text}"
    );
    assert_eq!(split(&got).1, b"hello");

    let got = raw_exchange(
        h.proxy,
        "HEAD /head HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (head, body) = split(&got);
    assert!(head.starts_with("http/1.1 200 ok"), "{head}");
    assert!(head.contains("content-length: 1000"), "{head}");
    assert!(body.is_empty(), "{body:?}");

    let got = raw_exchange(h.proxy, &get_close("/304")).await;
    let (head, body) = split(&got);
    assert!(head.starts_with("http/1.1 304"), "{head}");
    assert!(head.contains("etag: \"v1\""), "{head}");
    assert!(body.is_empty(), "{body:?}");

    // One connection carried all three, then a fourth request.
    let (res, _) = send(&http1_client(), get(&h.url("/ok"))).await;
    assert_eq!(res.status(), 200);
    let conns: Vec<_> = raw.seen().iter().map(|s| s.conn).collect();
    assert_eq!(conns, [0, 0, 0, 0], "{conns:?}");
    assert_outcomes(
        &h,
        &[(("upstream", "200"), 3.0), (("upstream", "304"), 1.0)],
    )
    .await;
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

// ---- 4.22, 4.25: answers cut in the middle of the body ----

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

/// 4.22: the upstream sends the head and part of the body, then a TCP
/// RST. The client's answer is cut short, never ended cleanly; the access
/// log marks it `complete=false`; the proxy goes on serving.
#[tokio::test]
async fn a_reset_mid_body_reaches_the_client_as_a_cut_answer() {
    let logs = Logs::capture();
    let raw = RawUpstream::start(|s| match s.path() {
        "/cl" => vec![faulty::send(CL_PART), Step::Reset],
        "/chunked" => vec![faulty::send(CHUNK_PART), Step::Reset],
        _ => vec![faulty::send(OK)],
    })
    .await;
    let h = start(&raw).await;
    for path in ["/cl", "/chunked"] {
        assert_cut_short(&raw_exchange(h.proxy, &get_close(path)).await, path);
        let (res, _) = send(&http1_client(), get(&h.url("/ok"))).await;
        assert_eq!(res.status(), 200, "healthy after {path}");
        let line = logs.access_line(path).await;
        assert!(
            line.contains("status=200") && line.contains("complete=false"),
            "{line}"
        );
    }
    assert_outcomes(&h, &[(("upstream", "200"), 4.0)]).await;
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

/// 4.25: over TLS, the upstream closes TCP without `close_notify` in the
/// middle of a body with Content-Length, and of a close-delimited body.
/// Neither is reported as complete.
#[tokio::test]
async fn a_tls_close_without_close_notify_is_a_cut_answer() {
    let logs = Logs::capture();
    let pki = faulty::Pki::new();
    let (chain, key) = pki.leaf(faulty::Leaf {
        names: &["localhost"],
        validity: None,
        by_intermediate: false,
    });
    let raw = RawUpstream::start_tls(chain, key, |s| match s.path() {
        "/tls-cl" => vec![faulty::send(CL_PART), Step::Close],
        "/tls-eof" => vec![faulty::send(EOF_PART), Step::Close],
        _ => vec![faulty::send(OK)],
    })
    .await;
    let h = Setup::default()
        .admin()
        .upstream_url(raw.url())
        .trust(&pki.root_pem)
        .start()
        .await;
    for path in ["/tls-cl", "/tls-eof"] {
        assert_cut_short(&raw_exchange(h.proxy, &get_close(path)).await, path);
        let line = logs.access_line(path).await;
        assert!(
            line.contains("status=200") && line.contains("complete=false"),
            "{line}"
        );
    }
    let (res, _) = send(&http1_client(), get(&h.url("/ok"))).await;
    assert_eq!(res.status(), 200);
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

// ---- 4.23: a trickling body ----

/// 4.23 under paused time, `request_timeout = "1s"` (also the upstream
/// body's idle bound): a body whose bytes come 900 ms apart (4.5 s in all)
/// flows to its end; one whose bytes come 1100 ms apart is cut after the
/// first.
#[tokio::test(start_paused = true)]
async fn a_body_trickling_just_under_the_idle_bound_flows_just_over_is_cut() {
    let trickle = |gap: u64| {
        let mut steps = vec![faulty::send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n1",
        )];
        for byte in b"2345" {
            steps.push(Step::Pause(Duration::from_millis(gap)));
            steps.push(faulty::send([*byte]));
        }
        steps
    };
    let raw = RawUpstream::start(move |s| match s.path() {
        "/under" => trickle(900),
        _ => trickle(1100),
    })
    .await;
    let h = Setup::default()
        .upstream("request_timeout = \"1s\"")
        .admin()
        .upstream_url(raw.url())
        .start()
        .await;
    let got = raw_exchange(h.proxy, &get_close("/under")).await;
    assert_eq!(split(&got).1, b"12345");
    let got = raw_exchange(h.proxy, &get_close("/over")).await;
    let (head, body) = split(&got);
    assert!(head.contains("content-length: 5"), "{head}");
    assert_eq!(body, b"1", "cut after the first byte");
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

// ---- 4.24: certificates that must not verify ----

/// 4.24: an upstream whose certificate is for another name, expired, for
/// an IP address only (the URL names `localhost`), or sent without its
/// intermediate. The handshake fails: 502 `upstream_unreachable`, and not
/// one HTTP byte (so no token) reaches it. The same PKI with the full chain
/// works, so each failure is the defect's.
#[tokio::test]
async fn bad_upstream_certificates_fail_closed_before_any_request() {
    use faulty::Leaf;
    let pki = faulty::Pki::new();
    let leaf = |names, validity, by_intermediate| Leaf {
        names,
        validity,
        by_intermediate,
    };
    let cases = [
        ("wrong name", leaf(&["other.test"], None, false), 502),
        (
            "expired",
            leaf(&["localhost"], Some([(2020, 1, 1), (2021, 1, 1)]), false),
            502,
        ),
        (
            "not yet valid",
            leaf(&["localhost"], Some([(2099, 1, 1), (2100, 1, 1)]), false),
            502,
        ),
        ("ip only", leaf(&["127.0.0.1"], None, false), 502),
        ("no intermediate", leaf(&["localhost"], None, true), 502),
        ("full chain", leaf(&["localhost"], None, true), 200),
    ];
    for (what, leaf, want) in cases {
        let (mut chain, key) = pki.leaf(leaf);
        if what == "full chain" {
            chain.push(pki.intermediate());
        }
        let raw = RawUpstream::start_tls(chain, key, |_| vec![faulty::send(OK)]).await;
        let h = Setup::default()
            .upstream_url(raw.url())
            .trust(&pki.root_pem)
            .start()
            .await;
        let (res, body) = send(&http1_client(), get(&h.url("/1/x"))).await;
        assert_eq!(res.status(), want, "{what}: {body:?}");
        assert_no_canary(what, &body);
        if want == 502 {
            assert_eq!(proxy_error(&res), Some("upstream_unreachable"), "{what}");
            assert_fitbit_error(&body, "upstream_unreachable");
            assert!(raw.seen().is_empty(), "{what}: a request reached U");
            assert!(raw.connections() >= 1, "{what}: never connected");
        }
        println!("{what}: {}", String::from_utf8_lossy(&body));
        raw.assert_clean();
        assert_invariants(&h);
        h.stop().await;
    }
}

// ---- 2.04, 2.16, 3.17: what comes back is the upstream's, minus hops ----

const HOP_ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\nConnection: close, X-Internal\r\nX-Internal: 1\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nProxy-Authenticate: Basic realm=x\r\nUpgrade: h2c\r\nTrailer: X-T\r\nX-Kept: yes\r\ncontent-length: 2\r\n\r\n{}";

/// 2.04: an answer full of hop-by-hop fields, to an HTTP/1.1 and an h2c
/// client: neither sees any of them (the end-to-end `X-Kept` passes). The
/// upstream said `Connection: close` but leaves the socket open: the proxy
/// does not pool it, so the next request arrives on a new connection.
#[tokio::test]
async fn hop_by_hop_answer_fields_are_stripped_and_connection_close_is_not_pooled() {
    let raw = RawUpstream::start(|_| vec![faulty::send(HOP_ANSWER)]).await;
    let h = start(&raw).await;
    let hop = [
        "connection",
        "x-internal",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "upgrade",
        "trailer",
        "transfer-encoding",
    ];
    for (client, name) in [(http1_client(), "h1"), (h2c_client(), "h2c")] {
        for _ in 0..2 {
            let (res, body) = send(&client, get(&h.url("/1/x"))).await;
            assert_eq!(res.status(), 200, "{name}");
            assert_eq!(&body[..], b"{}");
            assert_eq!(res.headers()["x-kept"], "yes", "{name}");
            for field in hop {
                assert!(
                    !res.headers().contains_key(field),
                    "{name}: {field} reached C"
                );
            }
        }
    }
    let conns: Vec<_> = raw.seen().iter().map(|s| (s.conn, s.nth)).collect();
    assert_eq!(
        conns,
        [(0, 0), (1, 0), (2, 0), (3, 0)],
        "a closed connection was reused"
    );
    assert_outcomes(&h, &[(("upstream", "200"), 4.0)]).await;
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

/// 2.16: redirects from the upstream go back to the client verbatim and
/// are never followed: one request reaches the upstream per redirect, and
/// nothing connects to the redirect's target.
#[tokio::test]
async fn upstream_redirects_are_passed_back_not_followed() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = format!("http://{}/steal", elsewhere.local_addr().unwrap());
    let (r302, r307) = (
        format!("HTTP/1.1 302 Found\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n"),
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: /1/y\r\ncontent-length: 3\r\n\r\nabc"
            .to_owned(),
    );
    let raw = RawUpstream::start(move |s| match s.path() {
        "/302" => vec![faulty::send(&r302)],
        _ => vec![faulty::send(&r307)],
    })
    .await;
    let h = start(&raw).await;
    let client = http1_client();
    for (path, status, location) in [("/302", 302, target.as_str()), ("/307", 307, "/1/y")] {
        let (res, _) = send(&client, get(&h.url(path))).await;
        assert_eq!(res.status(), status);
        assert_eq!(res.headers()["location"], location);
        assert_eq!(conns_of(&raw.seen(), path).len(), 1, "{path}");
    }
    assert_eq!(raw.seen().len(), 2, "a redirect was followed");
    // Following it would have connected before the answer came back.
    let accepted = elsewhere.accept().map_err(|e| e.kind());
    assert!(
        matches!(accepted, Err(std::io::ErrorKind::WouldBlock)),
        "the proxy connected to the redirect target"
    );
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

/// Deterministic bytes that no coding would leave alone.
fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// 3.17: bodies pass byte for byte both ways, at odd sizes, and a
/// `Content-Encoding: gzip` answer (here bytes that are not even valid
/// gzip, so any attempt to decode would show) is neither decoded nor
/// re-encoded: its header and bytes arrive as sent.
#[tokio::test]
async fn bodies_pass_byte_for_byte_both_ways() {
    const SIZES: [usize; 6] = [1, 7, 16_383, 16_385, 65_537, 1_048_577];
    let raw = RawUpstream::start(|s| {
        let len: usize = s.path().trim_start_matches('/').parse().unwrap_or(0);
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        )
        .into_bytes();
        answer.extend(noise(len, len as u32));
        vec![Step::Send(answer)]
    })
    .await;
    let h = start(&raw).await;
    for (client, name) in [(http1_client(), "h1"), (h2c_client(), "h2c")] {
        for len in SIZES {
            let upload = noise(len, len as u32 + 1);
            let req = Request::post(h.url(&format!("/{len}")))
                .header("content-encoding", "gzip")
                .body(Full::from(upload.clone()))
                .unwrap();
            let (res, body) = send(&client, req).await;
            assert_eq!(res.status(), 200, "{name} {len}");
            assert_eq!(res.headers()["content-encoding"], "gzip", "{name} {len}");
            assert!(
                body[..] == noise(len, len as u32)[..],
                "{name} {len}: download changed"
            );
            let seen = raw.seen();
            let got = &seen.last().unwrap();
            assert!(got.body == upload, "{name} {len}: upload changed");
            assert!(got
                .head
                .to_ascii_lowercase()
                .contains("content-encoding: gzip"));
        }
    }
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

// ---- 4.02, 4.11, 4.14: the token endpoint misbehaves ----

/// 4.02 under paused time, `request_timeout = "2s"` (also the token fetch
/// timeout): a token endpoint that accepts and never answers, and one that
/// sends its head and then one body byte every 5 s. Ten concurrent requests
/// share the one fetch in flight and each gets 503 `token_unavailable`
/// with `Retry-After` once the fetch times out; none hangs.
#[tokio::test(start_paused = true)]
async fn a_silent_or_trickling_token_endpoint_gives_503_within_the_fetch_timeout() {
    let trickle = || {
        let mut steps = vec![faulty::send(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n",
        )];
        for _ in 0..20 {
            steps.push(Step::Pause(Duration::from_secs(5)));
            steps.push(faulty::send(b" "));
        }
        steps
    };
    for (what, steps) in [("silent", vec![Step::Hold]), ("trickling", trickle())] {
        let token = RawUpstream::start(move |_| steps.clone()).await;
        let h = Setup::default()
            .upstream("request_timeout = \"2s\"")
            .admin()
            .token_url(format!("{}/oauth2/token", token.url()))
            .start()
            .await;
        let started = tokio::time::Instant::now();
        let requests = (0..10).map(|_| {
            let client = http1_client();
            let url = h.url("/1/x");
            tokio::spawn(async move { send(&client, get(&url)).await })
        });
        for answer in futures_util::future::join_all(requests).await {
            let (res, body) = answer.unwrap();
            assert_eq!(res.status(), 503, "{what}");
            assert_eq!(proxy_error(&res), Some("token_unavailable"), "{what}");
            assert!(res.headers().contains_key("retry-after"), "{what}");
            assert_fitbit_error(&body, "token_unavailable");
            assert_no_canary(what, &body);
        }
        let waited = started.elapsed();
        println!("{what}: 10 requests answered 503 after {waited:?}");
        assert!(waited <= Duration::from_secs(3), "{what}: {waited:?}");
        assert_eq!(token.seen().len(), 1, "{what}: one fetch shared");
        assert!(
            h.sim.received().is_empty(),
            "{what}: forwarded without a token"
        );
        assert_outcomes(&h, &[(("proxy", "503"), 10.0)]).await;
        assert_invariants(&h);
        h.stop().await;
    }
}

/// T2: a token answer is read up to 64 KiB (a grant with a long `scope`
/// is still a grant) and refused past it: `/readyz` is 200 with a 60 KiB
/// answer, and 503 with 64 KiB + 1, whose requests get 503
/// `token_unavailable` without ever reaching the upstream.
#[tokio::test]
async fn token_answers_are_read_up_to_64_kib_and_refused_past_it() {
    for (size, ready) in [(60 * 1024, true), (64 * 1024 + 1, false)] {
        let head = r#"{"access_token":"TOKEN_CANARY_big0123456789abcdef","expires_in":3600,"token_type":"Bearer","scope":""#;
        let scope = "a".repeat(size - head.len() - 2);
        let body = format!("{head}{scope}\"}}");
        assert_eq!(body.len(), size);
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {size}\r\n\r\n{body}"
        );
        let token = RawUpstream::start(move |_| vec![faulty::send(&answer)]).await;
        let h = Setup::default()
            .admin()
            .token_url(format!("{}/oauth2/token", token.url()))
            .start()
            .await;
        eventually(Duration::from_secs(5), || !token.seen().is_empty()).await;
        let client = http1_client();
        let readyz = || async { send(&client, get(&h.admin_url("/readyz"))).await.0.status() };
        if ready {
            let taken = || async { readyz().await == 200 };
            eventually_async(Duration::from_secs(5), taken).await;
        } else {
            let (res, body) = send(&client, get(&h.url("/1/x"))).await;
            assert_eq!(res.status(), 503, "a {size}-byte answer was taken");
            assert_eq!(proxy_error(&res), Some("token_unavailable"));
            assert_no_canary("the 503", &body);
            assert_eq!(readyz().await, 503);
            assert!(h.sim.received().is_empty());
        }
        assert_invariants(&h);
        h.stop().await;
    }
}

/// 4.11: a token endpoint answering `307` to elsewhere. The redirect is
/// not followed (the secret goes nowhere else); requests get 503
/// `token_unavailable` naming the 307.
#[tokio::test]
async fn a_redirect_from_the_token_endpoint_is_not_followed() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let answer = format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{}/oauth2/token\r\ncontent-length: 0\r\n\r\n",
        elsewhere.local_addr().unwrap()
    );
    let token = RawUpstream::start(move |_| vec![faulty::send(&answer)]).await;
    let h = Setup::default()
        .token_url(format!("{}/oauth2/token", token.url()))
        .start()
        .await;
    eventually(Duration::from_secs(5), || !token.seen().is_empty()).await;
    let (res, body) = send(&http1_client(), get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), 503);
    assert_eq!(proxy_error(&res), Some("token_unavailable"));
    assert!(
        String::from_utf8_lossy(&body).contains("HTTP 307"),
        "{body:?}"
    );
    assert_no_canary("the 503", &body);
    let accepted = elsewhere.accept().map_err(|e| e.kind());
    assert!(
        matches!(accepted, Err(std::io::ErrorKind::WouldBlock)),
        "the proxy followed the token endpoint's redirect"
    );
    assert!(h.sim.received().is_empty());
    assert_invariants(&h);
    h.stop().await;
}

/// 4.14: a 401 whose `errorType` is not about the token, and a 403
/// `insufficient_scope`, go back to the client as they are: no token
/// refresh, no replay.
#[tokio::test]
async fn other_401s_and_403_insufficient_scope_pass_through_without_a_refresh() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    let cases = [
        (401, "insufficient_permissions"),
        (401, "invalid_request"),
        (401, "system"),
        (403, "insufficient_scope"),
        (403, "invalid_token"),
    ];
    for (status, error_type) in cases {
        let path = format!("/sim/status/{status}?errorType={error_type}");
        let (res, body) = send(&client, get(&h.url(&path))).await;
        assert_eq!(res.status(), status, "{error_type}");
        assert_eq!(proxy_error(&res), None, "{error_type}");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["errors"][0]["errorType"], error_type);
    }
    assert_eq!(h.sim.token_fetches(), 1, "a token was refreshed");
    assert_eq!(
        h.sim.received().len(),
        cases.len(),
        "a request was replayed"
    );
    assert_outcomes(
        &h,
        &[(("upstream", "401"), 3.0), (("upstream", "403"), 2.0)],
    )
    .await;
    assert_invariants(&h);
    h.stop().await;
}

// ---- 4.22 (h2), 4.28: an HTTP/2 upstream ----

async fn start_h2(end: faulty::H2End) -> (Harness, faulty::H2Upstream) {
    let pki = faulty::Pki::new();
    let (chain, key) = pki.leaf(faulty::Leaf {
        names: &["localhost"],
        validity: None,
        by_intermediate: false,
    });
    let up = faulty::H2Upstream::start(chain, key, end).await;
    let h = Setup::default()
        .admin()
        .upstream_url(up.url())
        .trust(&pki.root_pem)
        .start()
        .await;
    (h, up)
}

/// 4.22 with an HTTP/2 upstream: headers announcing 1000 bytes, 10 of
/// them, then RST_STREAM. An HTTP/1.1 client's connection closes short of
/// the length; an h2c client's stream fails rather than ending. The
/// upstream connection goes on serving.
#[tokio::test]
async fn an_h2_upstream_reset_mid_body_reaches_the_client_as_a_cut_answer() {
    let (h, up) = start_h2(faulty::H2End::Never).await;
    assert_cut_short(
        &raw_exchange(h.proxy, &get_close("/rst")).await,
        "h1 client",
    );
    let res = h2c_client().request(get(&h.url("/rst"))).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await;
    assert!(body.is_err(), "an h2 stream reset upstream ended cleanly");
    let (res, body) = send(&http1_client(), get(&h.url("/ok"))).await;
    assert_eq!((res.status().as_u16(), &body[..]), (200, &b"{}"[..]));
    let conns: Vec<_> = up.seen().iter().map(|(c, _)| *c).collect();
    assert_eq!(conns, [0, 0, 0], "one multiplexed connection throughout");
    assert_outcomes(&h, &[(("upstream", "200"), 3.0)]).await;
    assert_invariants(&h);
    h.stop().await;
}

/// 4.28: an HTTP/2 upstream that, after its first answer on a connection,
/// sends GOAWAY(NO_ERROR, last stream id) and closes — or closes without a
/// GOAWAY. The pooled connection is dropped: every later request succeeds,
/// each on a new connection.
#[tokio::test]
async fn after_goaway_or_a_silent_close_h2_requests_go_to_a_new_connection() {
    for end in [faulty::H2End::Goaway, faulty::H2End::Close] {
        let (h, up) = start_h2(end).await;
        let client = http1_client();
        for n in 1..=3 {
            let (res, body) = send(&client, get(&h.url("/ok"))).await;
            assert_eq!(res.status(), 200, "{end:?} #{n}: {body:?}");
            eventually(Duration::from_secs(5), || up.closed() >= n).await;
        }
        let conns: Vec<_> = up.seen().iter().map(|(c, _)| *c).collect();
        assert_eq!(conns, [0, 1, 2], "{end:?}");
        assert_outcomes(&h, &[(("upstream", "200"), 3.0)]).await;
        assert_invariants(&h);
        h.stop().await;
    }
}

// ---- 2.09: the token echoed back ----

/// 2.09: an upstream echoing the request's `Authorization` in answer
/// fields (one named field, one inside a longer value, one on a second
/// `Set-Cookie` line). The proxy drops every field that contains the live
/// token and keeps the rest; the client never sees it (G2).
#[tokio::test]
async fn answer_fields_echoing_the_token_are_dropped() {
    let raw = RawUpstream::start(|s| {
        let auth = s
            .head
            .lines()
            .find_map(|l| l.strip_prefix("authorization: "))
            .unwrap_or_default()
            .to_owned();
        let token = auth.trim_start_matches("Bearer ");
        vec![faulty::send(format!(
            "HTTP/1.1 200 OK\r\nx-echo-authorization: {auth}\r\nx-debug: req=1;tok={token};end\r\nset-cookie: a=1\r\nset-cookie: t={token}\r\nx-kept: yes\r\ncontent-length: 2\r\n\r\n{{}}"
        ))]
    })
    .await;
    let h = start(&raw).await;
    for client in [http1_client(), h2c_client()] {
        let got = raw_exchange(h.proxy, &get_close("/1/echo")).await;
        let (head, _) = split(&got);
        assert!(head.contains("x-kept: yes"), "{head}");
        for field in ["x-echo-authorization", "x-debug", "set-cookie"] {
            assert!(!head.contains(field), "{field} reached C: {head}");
        }
        let (res, body) = send(&client, get(&h.url("/1/echo"))).await;
        assert_eq!(res.headers()["x-kept"], "yes");
        let fields = format!("{:?}", res.headers());
        assert_no_canary("h2c/h1 answer fields", fields.as_bytes());
        assert_no_canary("the body", &body);
    }
    raw.assert_clean();
    assert_invariants(&h);
    h.stop().await;
}

// ---- 4.03: Retry-After from the token endpoint ----

/// 4.03 under paused time: the token endpoint answers 503 with
/// `Retry-After: 30`, then 429 with `Retry-After: 20`, then a bare 500,
/// then a token. The refresher waits as long as each `Retry-After` asks
/// (not its own 1 s and 2 s backoff), and its own backoff when none is
/// given.
#[tokio::test(start_paused = true)]
async fn the_token_endpoints_retry_after_is_honoured() {
    let times = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = times.clone();
    let token = RawUpstream::start(move |_| {
        let mut times = log.lock().unwrap();
        times.push(tokio::time::Instant::now());
        let answer = match times.len() {
            1 => "HTTP/1.1 503 Service Unavailable\r\nretry-after: 30\r\ncontent-length: 0\r\n\r\n".to_owned(),
            2 => "HTTP/1.1 429 Too Many Requests\r\nretry-after: 20\r\ncontent-length: 0\r\n\r\n".to_owned(),
            3 => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n".to_owned(),
            _ => {
                let body = r#"{"access_token":"TOKEN_CANARY_raw0123456789abcdef","expires_in":3600,"token_type":"Bearer","scope":"x"}"#;
                format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
            }
        };
        vec![faulty::send(answer)]
    })
    .await;
    let h = Setup::default()
        .token_url(format!("{}/oauth2/token", token.url()))
        .start()
        .await;
    eventually(Duration::from_secs(120), || {
        times.lock().unwrap().len() == 4
    })
    .await;
    let times = times.lock().unwrap().clone();
    let gaps: Vec<_> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("token request gaps: {gaps:?}");
    let within = |gap: Duration, lo: u64, hi: u64| {
        gap >= Duration::from_secs(lo) && gap < Duration::from_secs(hi)
    };
    assert!(within(gaps[0], 30, 31), "{gaps:?}");
    assert!(within(gaps[1], 20, 21), "{gaps:?}");
    assert!(
        within(gaps[2], 3, 5),
        "own backoff after a bare 500: {gaps:?}"
    );
    assert_invariants(&h);
    h.stop().await;
}

/// 4.11: a token endpoint whose certificate does not verify (an untrusted
/// root). The handshake fails closed: the secret is never sent (T reads no
/// request) and requests get 503 `token_unavailable`.
#[tokio::test]
async fn an_unverifiable_token_endpoint_never_gets_the_secret() {
    let pki = faulty::Pki::new();
    let (chain, key) = pki.leaf(faulty::Leaf {
        names: &["localhost"],
        validity: None,
        by_intermediate: false,
    });
    let token = RawUpstream::start_tls(chain, key, |_| vec![faulty::send(OK)]).await;
    let h = Setup::default()
        .token_url(format!("{}/oauth2/token", token.url()))
        .start()
        .await;
    eventually(Duration::from_secs(5), || token.connections() >= 1).await;
    let (res, body) = send(&http1_client(), get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), 503);
    assert_eq!(proxy_error(&res), Some("token_unavailable"));
    assert_no_canary("the 503", &body);
    assert!(token.seen().is_empty(), "a token request got through");
    assert!(h.sim.received().is_empty());
    assert_invariants(&h);
    h.stop().await;
}

/// 4.28, streams on both sides of a GOAWAY: two requests in flight on one
/// h2 connection (streams 1 and 3) when the upstream sends GOAWAY(NO_ERROR,
/// last stream id 1). Stream 1 completes; stream 3, which the upstream
/// says it never processed, is sent again on a new connection and succeeds.
#[tokio::test]
async fn a_stream_above_the_goaway_last_stream_id_is_retried_on_a_new_connection() {
    let pki = faulty::Pki::new();
    let (chain, key) = pki.leaf(faulty::Leaf {
        names: &["localhost"],
        validity: None,
        by_intermediate: false,
    });
    let up = faulty::GoawayUpstream::start(chain, key, false).await;
    let h = Setup::default()
        .admin()
        .upstream_url(up.url())
        .trust(&pki.root_pem)
        .start()
        .await;
    let (a, b) = (http1_client(), http1_client());
    let (first, second) =
        tokio::join!(send(&a, get(&h.url("/1/a"))), send(&b, get(&h.url("/1/b"))));
    assert_eq!(
        (first.0.status(), &first.1[..]),
        (StatusCode::OK, &b"{}"[..])
    );
    assert_eq!(
        (second.0.status(), &second.1[..]),
        (StatusCode::OK, &b"{}"[..])
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[..2], [(0, 1), (0, 3)], "{seen:?}");
    assert_ne!(seen[2].0, 0, "the retry used a new connection: {seen:?}");
    assert_outcomes(&h, &[(("upstream", "200"), 2.0)]).await;
    assert_invariants(&h);
    h.stop().await;
}

/// 4.28, RST_STREAM followed at once by GOAWAY (Envoy CVE-2023-35945):
/// the reset request gets 502 (the upstream may have processed it, so it
/// is not resent), and the next requests succeed on a new connection.
#[tokio::test]
async fn a_reset_followed_by_goaway_gives_502_once_then_a_new_connection() {
    let pki = faulty::Pki::new();
    let (chain, key) = pki.leaf(faulty::Leaf {
        names: &["localhost"],
        validity: None,
        by_intermediate: false,
    });
    let up = faulty::GoawayUpstream::start(chain, key, true).await;
    let h = Setup::default()
        .admin()
        .upstream_url(up.url())
        .trust(&pki.root_pem)
        .start()
        .await;
    let client = http1_client();
    let (res, body) = send(&client, get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), 502, "{body:?}");
    assert_eq!(proxy_error(&res), Some("upstream_unreachable"));
    for _ in 0..3 {
        let (res, body) = send(&client, get(&h.url("/1/x"))).await;
        assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"{}"[..]));
    }
    let seen = up.seen();
    assert_eq!(seen.iter().filter(|(c, _)| *c == 0).count(), 1, "{seen:?}");
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_outcomes(&h, &[(("proxy", "502"), 1.0), (("upstream", "200"), 3.0)]).await;
    assert_invariants(&h);
    h.stop().await;
}
