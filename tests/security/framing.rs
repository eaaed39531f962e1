//! Catalog §1A/§1B (RELIABILITY.md): HTTP/1 framing, request smuggling,
//! request targets, Host and methods, sent as raw bytes over loopback.
//! Every case ends with the global invariants (tests/support/invariants.rs):
//! nothing refused reached the upstream, what did reach it is clean, and
//! nothing panicked.

use std::time::Duration;

use super::impatient;
use crate::support;
use crate::support::faulty::{self, RawUpstream, Step};
use crate::support::invariants::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// What one raw connection produced.
#[derive(Debug)]
struct Probe {
    /// Status codes of every response on the connection, in order.
    statuses: Vec<u16>,
    /// Whether the proxy closed the connection (within the read limit).
    closed: bool,
    raw: String,
}

/// Writes `bytes` on a fresh connection, half-closes nothing, and reads
/// until the proxy closes or `limit` passes.
async fn probe_for(h: &Harness, bytes: &[u8], limit: Duration) -> Probe {
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

async fn probe(h: &Harness, bytes: &[u8]) -> Probe {
    probe_for(h, bytes, Duration::from_secs(5)).await
}

async fn start() -> Harness {
    impatient().start().await
}

/// A case that must be refused with one of `allowed`, the connection
/// closed, and nothing forwarded.
async fn assert_refused(h: &Harness, name: &str, bytes: &[u8], allowed: &[u16]) {
    let before = h.sim.api_started();
    let p = probe(h, bytes).await;
    assert!(
        p.statuses.len() == 1 && allowed.contains(&p.statuses[0]),
        "{name:?}: want one of {allowed:?}, got {p:?}"
    );
    assert!(p.closed, "{name:?}: connection left open: {p:?}");
    assert_nothing_forwarded_since(h, before, name);
}

const SMUGGLED: &str = "GET /1/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

fn smuggled_reached(h: &Harness) -> bool {
    h.sim.received().iter().any(|r| r.path.contains("smuggled"))
}

fn post(extra: &str, body: &str) -> String {
    format!("POST /1/x HTTP/1.1\r\nHost: x\r\n{extra}\r\n\r\n{body}")
}

fn get_with(line: &str) -> String {
    format!("GET /1/x HTTP/1.1\r\nHost: x\r\n{line}\r\nConnection: close\r\n\r\n")
}

fn request_line(line: &str) -> String {
    format!("{line}\r\nHost: x\r\nConnection: close\r\n\r\n")
}

fn chunked(body: &str) -> String {
    post("Transfer-Encoding: chunked", body)
}

/// 1.01, 1.02: RFC 9112 §6.3 item 5 and RFC 9110 §8.6.
#[tokio::test]
async fn conflicting_or_unparsable_content_length_is_400_and_close() {
    let h = start().await;
    let mut cases = vec![
        (
            "two CL lines",
            post("Content-Length: 5\r\nContent-Length: 6", "helloo"),
        ),
        ("CL list", post("Content-Length: 5, 6", "helloo")),
        ("same CL list", post("Content-Length: 5, 5", "hello")),
    ];
    for v in [
        "+5",
        "-1",
        "0x10",
        "1.5",
        "5abc",
        "1_0",
        "",
        "  ",
        "99999999999999999999999",
    ] {
        cases.push(("bad CL", post(&format!("Content-Length: {v}"), "hello")));
    }
    for (name, bytes) in &cases {
        assert_refused(&h, &format!("{name}: {bytes:?}"), bytes.as_bytes(), &[400]).await;
    }
    // Identical duplicates are collapsed to one, never forwarded twice.
    let p = probe(
        &h,
        post(
            "Content-Length: 5\r\nContent-Length: 5\r\nConnection: close",
            "hello",
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(p.statuses, [200], "{p:?}");
    let seen = h.sim.received();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers.get_all("content-length").iter().count(), 1);
    assert_eq!(seen[0].body_len, 5);
    assert_invariants(&h);
}

/// 1.04: only a Transfer-Encoding of exactly `chunked` is accepted.
#[tokio::test]
async fn transfer_encoding_other_than_exactly_chunked_is_refused() {
    let h = start().await;
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for te in [
        "chunked, chunked",
        "chunked, gzip, chunked",
        "gzip, chunked",
        "chunked, gzip",
        "gzip",
        "identity",
        "chunked, identity",
        "xchunked",
        "\x0bchunked",
    ] {
        let bytes = post(&format!("Transfer-Encoding: {te}"), body);
        assert_refused(&h, &format!("TE {te:?}"), bytes.as_bytes(), &[400, 501]).await;
    }
    for (name, extra) in [
        (
            "two TE lines and CL",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 5",
        ),
        ("space before the name", " Transfer-Encoding: chunked"),
        ("space before the colon", "Transfer-Encoding : chunked"),
        ("folded TE", "Transfer-Encoding: identity\r\n chunked"),
    ] {
        assert_refused(&h, name, post(extra, body).as_bytes(), &[400, 501]).await;
    }
    // Spellings that are still exactly `chunked` are served, and the
    // upstream sees the proxy's own framing only.
    // (An empty list element is no coding: RFC 9110 §5.6.1.)
    for te in ["CHUNKED", "\tchunked", "chunked ", ",chunked"] {
        let bytes = post(
            &format!("Transfer-Encoding: {te}\r\nConnection: close"),
            body,
        );
        let p = probe(&h, bytes.as_bytes()).await;
        assert_eq!(p.statuses, [200], "TE {te:?}: {p:?}");
    }
    assert!(h.sim.received().iter().all(|r| r.body_len == 5));
    assert_eq!(h.sim.received().len(), 4);
    assert_invariants(&h);
}

/// 1.03: CL.TE and TE.CL. hyper decodes as chunked and drops CL; the
/// connection closes after the answer; `/smuggled` never reaches U.
#[tokio::test]
async fn content_length_with_transfer_encoding_never_smuggles() {
    let h = start().await;
    let cl_te = post(
        "Content-Length: 13\r\nTransfer-Encoding: chunked",
        &format!("0\r\n\r\n{SMUGGLED}"),
    );
    let te_cl = post(
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
        &format!("{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n{SMUGGLED}", SMUGGLED.len()),
    );
    for (name, bytes) in [("CL.TE", cl_te), ("TE.CL", te_cl)] {
        let follow_up = "GET /1/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let p = probe(&h, format!("{bytes}{follow_up}").as_bytes()).await;
        assert!(p.closed, "{name}: {p:?}");
        assert!(
            !p.statuses.is_empty() && p.statuses.len() <= 2,
            "{name}: {p:?}"
        );
        assert!(
            !smuggled_reached(&h),
            "{name}: the smuggled request reached U"
        );
    }
    for r in h.sim.received() {
        assert!(
            r.headers.get("content-length").is_none()
                || r.headers.get("transfer-encoding").is_none(),
            "{r:?}"
        );
    }
    assert_invariants(&h);
}

/// 1.05: HTTP/1.0 with TE is refused; HTTP/1.0 without a length has no
/// body, and what follows is never read as a request after close.
#[tokio::test]
async fn http10_framing() {
    let h = start().await;
    let te = "POST /1/x HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_refused(&h, "HTTP/1.0 with TE", te.as_bytes(), &[400]).await;
    let p = probe(
        &h,
        format!("POST /1/x HTTP/1.0\r\nHost: x\r\n\r\n{SMUGGLED}").as_bytes(),
    )
    .await;
    assert_eq!(p.statuses, [200], "{p:?}");
    assert!(p.closed);
    assert!(!smuggled_reached(&h));
    assert_eq!(h.sim.received()[0].body_len, 0);
    assert_invariants(&h);
}

/// 1.06, 1.07: malformed chunk framing, oversized extensions and trailer
/// sections: 400 and close (the proxy's own answer, not a 502 blaming the
/// upstream); bytes are never moved into a second request.
#[tokio::test]
async fn malformed_chunked_bodies_are_400_and_close() {
    let h = start().await;
    let bodies = [
        "0x5\r\nhello\r\n0\r\n\r\n".to_owned(),
        "+5\r\nhello\r\n0\r\n\r\n".to_owned(),
        "-5\r\nhello\r\n0\r\n\r\n".to_owned(),
        " 5\r\nhello\r\n0\r\n\r\n".to_owned(),
        "\r\nhello\r\n0\r\n\r\n".to_owned(),
        "ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n".to_owned(),
        "4\r\nhellohell\r\n0\r\n\r\n".to_owned(),
        "5\r\nhello0\r\n\r\n".to_owned(),
        "2\r\r;a\r\nhi\r\n0\r\n\r\n".to_owned(),
        format!("5;{}\r\nhello\r\n0\r\n\r\n", "a".repeat(64 * 1024)),
        format!(
            "5\r\nhello\r\n0\r\n{}\r\n",
            "X-T: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n".repeat(20_000)
        ),
    ];
    for body in &bodies {
        let bytes = format!("{}{SMUGGLED}", chunked(body));
        let p = probe(&h, bytes.as_bytes()).await;
        let shown = &body[..body.len().min(40)];
        assert_eq!(p.statuses, [400], "{shown:?}: {p:?}");
        assert!(
            p.raw.contains("x-fitbit-proxy-error: bad_request")
                || !p.raw.contains("x-fitbit-proxy-error"),
            "{shown:?}: {p:?}"
        );
        assert!(p.closed, "{shown:?}: {p:?}");
    }
    assert!(!smuggled_reached(&h));
    assert_invariants(&h);
}

/// 1.07, 2.05: chunked trailers (credentials, framing fields) never reach
/// the upstream, whether it speaks HTTP/1.1 or HTTP/2.
#[tokio::test]
async fn request_trailers_never_reach_the_upstream() {
    for setup in [Setup::default(), Setup::default().tls()] {
        let h = setup.start().await;
        let body = "5\r\nhello\r\n0\r\nAuthorization: Bearer CLIENTAUTH_CANARY\r\nContent-Length: 9\r\nHost: evil.test\r\nX-Sum: 1\r\n\r\n";
        let bytes = format!(
            "{}GET /1/after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            chunked(body)
        );
        let p = probe(&h, bytes.as_bytes()).await;
        assert_eq!(p.statuses, [200, 200], "{p:?}");
        let seen = h.sim.received();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].body_len, 5);
        assert!(
            seen[0].trailers.is_empty(),
            "trailers reached U: {:?}",
            seen[0]
        );
        assert_invariants(&h);
    }
}

/// 1.08, 1.09: obs-fold, whitespace, bad names, CR/NUL in the head: 400.
#[tokio::test]
async fn malformed_heads_are_400_and_close() {
    let h = start().await;
    let mut cases: Vec<String> = [
        "X-A: a\r\n b",
        "Content-Length : 5",
        ": x",
        "X\u{80}: 1",
        "X(: 1",
        "X A: 1",
        "X-A: a\rb",
        "X-A: a\u{0}b",
    ]
    .iter()
    .map(|l| get_with(l))
    .collect();
    cases.push("GET /1/x HTTP/1.1\r\n\tContent-Length: 1\r\nHost: x\r\n\r\n".into());
    cases.push("GET /1/x HTTP/1.1\r\n \r\nHost: x\r\n\r\n".into());
    cases.push(request_line("GET /a\rb HTTP/1.1"));
    for bytes in &cases {
        assert_refused(&h, bytes, bytes.as_bytes(), &[400]).await;
    }
    // A head ending in CR LF CR: never served; closed by the head timeout.
    let before = h.sim.api_started();
    let p = probe(&h, b"GET /1/x HTTP/1.1\r\nHost: x\r\n\r\rX").await;
    assert!(p.closed && p.statuses.iter().all(|s| *s >= 400), "{p:?}");
    assert_nothing_forwarded_since(&h, before, "CR LF CR");
    // A bare LF is read as a line end (RFC 9112 §2.2 allows it) and the
    // message is re-serialised with CRLF: no CR or LF inside a value.
    let p = probe(
        &h,
        b"GET /1/x HTTP/1.1\r\nHost: x\r\nX-A: a\nX-B: b\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(p.statuses, [200], "{p:?}");
    let seen = h.sim.received();
    assert_eq!(seen[0].headers["x-a"], "a");
    assert_eq!(seen[0].headers["x-b"], "b");
    assert_invariants(&h);
}

/// 1.10: pipelining after a refusal, 100 pipelined requests in order, and
/// a refused request whose body holds a request.
#[tokio::test]
async fn pipelining_and_unread_bodies() {
    let h = start().await;
    // (a) a valid request, then an invalid one: 200, then 400 and close.
    let p = probe(&h, b"GET /1/a HTTP/1.1\r\nHost: x\r\n\r\nGET /1/b HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n").await;
    assert_eq!(p.statuses, [200, 400], "{p:?}");
    assert!(p.closed);
    // (b) 100 pipelined GETs: answered in order, each forwarded once.
    let mut many: String = (0..100)
        .map(|i| format!("GET /1/p/{i} HTTP/1.1\r\nHost: x\r\n\r\n"))
        .collect();
    many.push_str("GET /1/p/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let p = probe(&h, many.as_bytes()).await;
    assert_eq!(p.statuses.len(), 101, "{:?}", p.statuses);
    let order: Vec<String> = h
        .sim
        .received()
        .iter()
        .skip(1)
        .map(|r| r.path.clone())
        .collect();
    let want: Vec<String> = (0..100)
        .map(|i| format!("/1/p/{i}"))
        .chain(["/1/p/last".to_owned()])
        .collect();
    assert_eq!(order, want);
    // (c) refused before the body is read (403, 405): the embedded request
    // is never parsed.
    let before = h.sim.api_started();
    let embedded = "GET /1/user/-/profile.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20);
    for line in ["POST /oauth2/revoke HTTP/1.1", "TRACE /1/x HTTP/1.1"] {
        let bytes = format!(
            "{line}\r\nHost: x\r\nContent-Length: {}\r\n\r\n{embedded}",
            embedded.len()
        );
        let p = probe(&h, bytes.as_bytes()).await;
        assert_eq!(p.statuses.len(), 1, "{line}: {p:?}");
        assert!(p.closed, "{line}: {p:?}");
    }
    assert_nothing_forwarded_since(&h, before, "refused requests with embedded requests");
    assert_invariants(&h);
}

/// 1.11, 2.01: Upgrade (websocket, h2c) opens no tunnel; the upgrade fields
/// and HTTP2-Settings never reach U; trailing bytes are just the next
/// request. 2.03: `Connection` naming the proxy's own fields strips nothing
/// the proxy adds.
#[tokio::test]
async fn upgrades_open_no_tunnel_and_connection_cannot_strip_what_the_proxy_adds() {
    let h = start().await;
    let next = "GET /1/second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    for upgrade in [
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13",
        "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__",
        "HTTP2-Settings: AAMAAABkAAQAAP__",
    ] {
        let bytes = format!("GET /1/x HTTP/1.1\r\nHost: x\r\n{upgrade}\r\n\r\n{next}");
        let p = probe(&h, bytes.as_bytes()).await;
        assert_eq!(p.statuses, [200, 200], "{upgrade}: {p:?}");
        assert!(!p.raw.contains(" 101 "), "{p:?}");
    }
    let p = probe(&h, get_with("Connection: Authorization, Host, X-Request-Id, Content-Length\r\nAuthorization: Bearer CLIENTAUTH_CANARY\r\nX-Request-Id: abc").as_bytes()).await;
    assert_eq!(p.statuses, [200], "{p:?}");
    let last = h.sim.received().pop().unwrap();
    let id = last
        .headers
        .get("x-request-id")
        .expect("the proxy's request id");
    assert!(
        p.raw
            .contains(&format!("x-request-id: {}", id.to_str().unwrap())),
        "{p:?}"
    );
    assert_invariants(&h);
}

/// 1.12, 1.13, 1.16: request-target forms. Another authority, authority-
/// and asterisk-form: 400. Odd origin-form paths go to U unchanged, on U.
#[tokio::test]
async fn request_target_forms() {
    let h = start().await;
    for line in [
        "GET http://evil.test/x HTTP/1.1",
        "GET https://169.254.169.254/latest/meta-data HTTP/1.1",
        "GET http://api.fitbit.com@evil.test/ HTTP/1.1",
        "GET http://evil.test#@api.fitbit.com/ HTTP/1.1",
        "GET api.fitbit.com:443 HTTP/1.1",
        "GET admin HTTP/1.1",
        "GET * HTTP/1.1",
        "OPTIONS * HTTP/1.1",
        "OPTIONS */test HTTP/1.1",
        "GET //evil.test/x HTTP/1.1",
        "GET /\\evil.test/x HTTP/1.1",
        "GET /%2F%2Fevil.test HTTP/1.1",
    ] {
        assert_refused(&h, line, request_line(line).as_bytes(), &[400]).await;
    }
    let p = probe(&h, request_line("GET /@evil.test HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [200], "{p:?}");
    assert_eq!(h.sim.received()[0].path, "/@evil.test");
    let p = probe(&h, request_line("GET /oauth2/revoke#x HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [403], "{p:?}");
    assert_eq!(h.sim.received().len(), 1);
    assert_invariants(&h);
}

/// 1.14: CONNECT gets 405 and no tunnel: TLS bytes after it are not relayed.
#[tokio::test]
async fn connect_is_405_and_opens_no_tunnel() {
    let h = start().await;
    let hello = b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00";
    for line in [
        "CONNECT evil.test:443 HTTP/1.1",
        "CONNECT api.fitbit.com:443 HTTP/1.1",
        "CONNECT / HTTP/1.1",
        "CONNECT x HTTP/1.0",
    ] {
        let mut bytes = format!("{line}\r\nHost: evil.test:443\r\n\r\n").into_bytes();
        bytes.extend_from_slice(hello);
        let p = probe(&h, &bytes).await;
        assert!(
            matches!(p.statuses[..], [405] | [405, 400] | [400]),
            "{line}: {p:?}"
        );
        assert!(p.closed, "{line}: {p:?}");
    }
    assert_eq!(h.sim.api_started(), 0);
    assert_invariants(&h);
}

/// 1.17: HTTP/1.1 needs exactly one valid Host (RFC 9112 §3.2); whatever
/// it says, U gets its own.
#[tokio::test]
async fn host_must_be_single_and_valid() {
    let h = start().await;
    let cases = [
        "GET /1/x HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: 123.49.0.78:98777\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: example.com.:1.2\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: [::1\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: a b\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: user@evil.test\r\n\r\n".to_owned(),
        "GET /1/x HTTP/1.1\r\nHost: \r\n\r\n".to_owned(),
    ];
    for bytes in &cases {
        assert_refused(&h, bytes, bytes.as_bytes(), &[400]).await;
    }
    for ok in [
        "GET /1/x HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n",
        "GET /1/x HTTP/1.0\r\n\r\n",
    ] {
        let p = probe(&h, ok.as_bytes()).await;
        assert_eq!(p.statuses, [200], "{ok:?}: {p:?}");
    }
    assert_eq!(h.sim.received().len(), 2);
    assert_invariants(&h);
}

/// 1.18: TRACE/TRACK would echo the token: 405. Other method tokens pass.
#[tokio::test]
async fn trace_is_405_and_never_forwarded() {
    let h = start().await;
    for line in ["TRACE /1/x HTTP/1.1", "TRACK /1/x HTTP/1.1"] {
        let p = probe(&h, request_line(line).as_bytes()).await;
        assert_eq!(p.statuses, [405], "{line}: {p:?}");
        assert!(
            p.raw.contains("x-fitbit-proxy-error: method_not_allowed"),
            "{p:?}"
        );
    }
    assert_eq!(h.sim.api_started(), 0);
    for line in ["DELETE /1/x HTTP/1.1", "PUT /1/x HTTP/1.1"] {
        let p = probe(&h, request_line(line).as_bytes()).await;
        assert_eq!(p.statuses, [200], "{line}: {p:?}");
    }
    assert_invariants(&h);
}

/// 1.19 and the §0.3 pins: 100 header fields and a 64 KiB head buffer
/// (`H1_MAX_HEADERS`, `H1_MAX_BUF_SIZE` in src/server.rs).
#[tokio::test]
async fn oversized_heads_get_431_and_the_pinned_limits_hold() {
    let h = start().await;
    let many = |n: usize| {
        (0..n)
            .map(|i| format!("X-{i}: 1"))
            .collect::<Vec<_>>()
            .join("\r\n")
    };
    let big = |len: usize| format!("X-Big: {}", "a".repeat(len));
    for (name, line) in [
        ("101 fields", many(101)),
        ("a 64 KiB field", big(64 * 1024)),
        ("a 64 KiB name", format!("{}: 1", "a".repeat(64 * 1024))),
        (
            "a 420 KiB head",
            (0..99)
                .map(|i| format!("X-{i}: {}", "a".repeat(4200)))
                .collect::<Vec<_>>()
                .join("\r\n"),
        ),
    ] {
        assert_refused(&h, name, get_with(&line).as_bytes(), &[431]).await;
    }
    let long_uri = request_line(&format!("GET /1/{} HTTP/1.1", "a".repeat(65_535)));
    assert_refused(&h, "a 64 KiB URI", long_uri.as_bytes(), &[414, 431]).await;
    // Just under the limits is served: 97 fields plus Host, Connection and
    // the proxy's request id; a 32 KiB field.
    for (name, line) in [("97 fields", many(97)), ("a 32 KiB field", big(32 * 1024))] {
        let p = probe(&h, get_with(&line).as_bytes()).await;
        assert_eq!(p.statuses, [200], "{name}: {p:?}");
    }
    assert_invariants(&h);
}

/// 1.20: request-line and version oddities: 400 or 505, nothing forwarded.
#[tokio::test]
async fn request_line_oddities_are_refused() {
    let h = start().await;
    for line in [
        "GET  /1/x  HTTP/1.1",
        "GET /1/x HTTP/1.1 ",
        "GET /1/x HTTP/1.10",
        "GET /1/x HTTP/2.0",
        "GET /1/x HTTP/1.2",
        "GET /1/x HTTP/0.9",
        "G=\":<>(e),[T];?\" /1/x HTTP/1.1",
        "GET /1/x HTTP/1.\u{ff}",
    ] {
        assert_refused(&h, line, request_line(line).as_bytes(), &[400, 505]).await;
    }
    let before = h.sim.api_started();
    let p = probe(&h, b"GET /1/x\r\n\r\n").await;
    assert!(
        p.closed && p.statuses.iter().all(|s| *s >= 400),
        "HTTP/0.9: {p:?}"
    );
    assert_nothing_forwarded_since(&h, before, "HTTP/0.9");
    assert_invariants(&h);
}

/// G5: requests the stack answered are each counted once, by origin and
/// code; what hyper refused before the stack is not a request.
#[tokio::test]
async fn every_answer_is_counted_once() {
    let h = Setup::default().admin().start().await;
    for bytes in [
        request_line("GET /1/ok HTTP/1.1"),
        request_line("GET /oauth2/token HTTP/1.1"),
        request_line("TRACE /1/x HTTP/1.1"),
        request_line("GET http://evil.test/ HTTP/1.1"),
        "GET /1/x HTTP/1.1\r\nConnection: close\r\n\r\n".to_owned(),
        post("Content-Length: +5", "hello"),
        chunked("zz\r\nhello\r\n0\r\n\r\n"),
    ] {
        probe(&h, bytes.as_bytes()).await;
    }
    assert_outcomes(
        &h,
        &[
            (("proxy", "400"), 3.0),
            (("proxy", "403"), 1.0),
            (("proxy", "405"), 1.0),
            (("upstream", "200"), 1.0),
        ],
    )
    .await;
    assert_invariants(&h);
}

/// A proxy paced at one request a second with a burst of one (the
/// simulator reports a quota of 3600 an hour), so that a second request
/// meets the pacer's refusals.
async fn start_paced(rate_limit: &str) -> Harness {
    impatient()
        .admin()
        .rate_limit(rate_limit)
        .sim(fitbit_proxy::sim::SimConfig {
            quota: 3600,
            window: Duration::from_secs(3600),
            ..sim_config()
        })
        .start()
        .await
}

/// A POST declaring a 1 MiB body whose first bytes are complete requests
/// (then nothing more is sent), followed by a request of its own.
fn refused_post_with_embedded_requests() -> String {
    let embedded = "GET /1/user/-/profile.json HTTP/1.1\r\nHost: x\r\n\r\n".repeat(20);
    format!("POST /1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n{embedded}{SMUGGLED}")
}

/// 1.10 (c) with the pacer's refusals: a POST refused with 429 (`max_wait`)
/// or 503 (`max_queued`) before its body is read. Its body holds complete
/// requests; none of them is parsed as a request: the connection closes
/// after the one answer, and only the request that took the slot reached U.
#[tokio::test]
async fn pacing_refusals_leave_no_body_to_be_read_as_a_request() {
    // 429: the next slot is a second away, max_wait is 10 ms.
    let h = start_paced("hourly_quota = 3600\nburst = 1\nmax_wait = \"10ms\"").await;
    let p = probe(&h, request_line("GET /1/first HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [200], "{p:?}");
    let p = probe(&h, refused_post_with_embedded_requests().as_bytes()).await;
    assert_eq!(p.statuses, [429], "{p:?}");
    assert!(
        p.raw.contains("x-fitbit-proxy-error: rate_limited"),
        "{p:?}"
    );
    assert!(p.closed, "{p:?}");
    assert_eq!(h.sim.api_started(), 1);
    assert!(!smuggled_reached(&h));
    assert_invariants(&h);
    h.stop().await;

    // 503: one request waits for the next slot (max_queued = 1), so the
    // POST is one too many.
    let h = start_paced("hourly_quota = 3600\nburst = 1\nmax_wait = \"1h\"\nmax_queued = 1").await;
    let p = probe(&h, request_line("GET /1/first HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [200], "{p:?}");
    let mut waiting = TcpStream::connect(h.proxy).await.unwrap();
    waiting
        .write_all(b"GET /1/waiting HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut queued = false;
    for _ in 0..500 {
        let (_, metrics) = send(&http1_client(), support::get(&h.admin_url("/metrics"))).await;
        queued = String::from_utf8_lossy(&metrics).contains("fitbit_proxy_queue_depth 1");
        if queued {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(queued, "the waiting request never reached the pacing queue");
    let p = probe(&h, refused_post_with_embedded_requests().as_bytes()).await;
    assert_eq!(p.statuses, [503], "{p:?}");
    assert!(p.raw.contains("x-fitbit-proxy-error: queue_full"), "{p:?}");
    assert!(p.closed, "{p:?}");
    assert!(!smuggled_reached(&h));
    assert!(h
        .sim
        .received()
        .iter()
        .all(|r| r.path != "/1/user/-/profile.json"));
    drop(waiting);
    assert_invariants(&h);
}

/// 1.11 (c): an upstream that answers `101 Switching Protocols` to a plain
/// GET (and then sends bytes of another protocol) opens no tunnel: the
/// client gets 502 `upstream_unreachable`, never the 101 or those bytes.
#[tokio::test]
async fn an_unasked_101_from_the_upstream_opens_no_tunnel() {
    let raw = RawUpstream::start(|_| {
        vec![
            faulty::send("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nTUNNEL_BYTES"),
            Step::Hold,
        ]
    })
    .await;
    let h = Setup::default().upstream_url(raw.url()).start().await;
    let p = probe(&h, request_line("GET /1/x HTTP/1.1").as_bytes()).await;
    assert_eq!(p.statuses, [502], "{p:?}");
    assert!(
        p.raw.contains("x-fitbit-proxy-error: upstream_unreachable"),
        "{p:?}"
    );
    assert!(!p.raw.contains("TUNNEL_BYTES"), "{p:?}");
    let (res, body) = send(&h2c_client(), support::get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), 502);
    assert!(!body.windows(6).any(|w| w == b"TUNNEL"));
    assert_invariants(&h);
}

/// 1.18: a method longer than any HTTP method (a 10 KiB one, or 33
/// characters) is 400 and never forwarded; 32 characters still pass.
#[tokio::test]
async fn overlong_methods_are_400_and_never_forwarded() {
    let h = start().await;
    for len in [33, 10 * 1024] {
        let line = format!("{} /1/x HTTP/1.1", "M".repeat(len));
        assert_refused(
            &h,
            &format!("a {len}-byte method"),
            request_line(&line).as_bytes(),
            &[400, 501],
        )
        .await;
    }
    let p = probe(
        &h,
        request_line(&format!("{} /1/x HTTP/1.1", "M".repeat(32))).as_bytes(),
    )
    .await;
    assert_eq!(p.statuses, [200], "{p:?}");
    assert_eq!(h.sim.received()[0].method.as_str().len(), 32);
    assert_invariants(&h);
}

/// A proxy that serves only the names in `listen.hosts` (catalog 1.17).
async fn start_with_hosts() -> Harness {
    Setup::default()
        .admin()
        .listen("hosts = [\"proxy.internal\", \"127.0.0.1\", \"::1\"]")
        .start()
        .await
}

fn get_host(host: &str) -> String {
    format!("GET /1/x HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
}

/// 1.17, DNS rebinding (CVE-2018-5702): a browser led to the proxy by a
/// rebound name sends that name as its Host. With `listen.hosts` set, only
/// the listed names are served, whatever their case, port or trailing dot;
/// any other gets 403 `forbidden`, is counted and logged, and reaches
/// nothing.
#[tokio::test]
async fn hosts_outside_listen_hosts_get_403_and_reach_nothing() {
    let h = start_with_hosts().await;
    let listed = [
        "proxy.internal",
        "Proxy.Internal:8080",
        "proxy.internal.",
        "PROXY.INTERNAL.:80",
        "127.0.0.1:1234",
        "[0:0::1]:8080",
    ];
    for host in listed {
        let p = probe(&h, get_host(host).as_bytes()).await;
        assert_eq!(p.statuses, [200], "{host}: {p:?}");
    }
    let before = h.sim.api_started();
    let refused = [
        get_host("attacker.test"),
        get_host("attacker.test:8080"),
        get_host("proxy.internal.attacker.test"),
        get_host("127.0.0.2"),
        // No name at all is not a listed name.
        "GET /1/x HTTP/1.0\r\n\r\n".to_owned(),
        // Absolute-form naming the upstream does not replace the Host.
        format!(
            "GET {}1/x HTTP/1.1\r\nHost: attacker.test\r\nConnection: close\r\n\r\n",
            h.config.upstream.url
        ),
    ];
    for bytes in &refused {
        let p = probe(&h, bytes.as_bytes()).await;
        assert_eq!(p.statuses, [403], "{bytes:?}: {p:?}");
        assert!(p.raw.contains("x-fitbit-proxy-error: forbidden"), "{p:?}");
        assert!(p.raw.contains("not in listen.hosts"), "{p:?}");
    }
    assert_nothing_forwarded_since(&h, before, "a Host not in listen.hosts");
    assert_outcomes(&h, &[(("proxy", "403"), 6.0), (("upstream", "200"), 6.0)]).await;
    assert_invariants(&h);
}

/// An h2c request for `/1/x` with `authority` as its `:authority` and, if
/// given, a `Host` field too; the answer's status.
async fn h2_status(h: &Harness, authority: &str, host: Option<&str>) -> u16 {
    let tcp = TcpStream::connect(h.proxy).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    let conn = tokio::spawn(conn);
    let mut req = http::Request::get(format!("http://{authority}/1/x"));
    if let Some(host) = host {
        req = req.header("host", host);
    }
    let mut send = send.ready().await.unwrap();
    let (res, _) = send.send_request(req.body(()).unwrap(), true).unwrap();
    let status = res.await.expect("an answer").status().as_u16();
    conn.abort();
    status
}

/// 1.17 over HTTP/2: `:authority` is the name, and a `Host` field beside
/// it must be listed as well.
#[tokio::test]
async fn h2_authority_outside_listen_hosts_gets_403() {
    let h = start_with_hosts().await;
    assert_eq!(h2_status(&h, "Proxy.Internal.:8080", None).await, 200);
    assert_eq!(h2_status(&h, "[::1]", Some("proxy.internal")).await, 200);
    let before = h.sim.api_started();
    for (authority, host) in [
        ("attacker.test", None),
        ("attacker.test:443", Some("proxy.internal")),
        ("proxy.internal", Some("attacker.test")),
    ] {
        let status = h2_status(&h, authority, host).await;
        assert_eq!(status, 403, "{authority} {host:?}");
    }
    assert_nothing_forwarded_since(&h, before, "an :authority not in listen.hosts");
    assert_outcomes(&h, &[(("proxy", "403"), 3.0), (("upstream", "200"), 2.0)]).await;
    assert_invariants(&h);
}

/// 1.17: without `listen.hosts` (the default) any valid Host is served.
#[tokio::test]
async fn without_listen_hosts_any_host_is_served() {
    let h = start().await;
    assert!(h.config.listen.hosts.is_empty());
    for host in ["attacker.test", "proxy.internal", "10.9.8.7:1"] {
        let p = probe(&h, get_host(host).as_bytes()).await;
        assert_eq!(p.statuses, [200], "{host}: {p:?}");
    }
    assert_eq!(h2_status(&h, "attacker.test", None).await, 200);
    assert_eq!(h.sim.received().len(), 4);
    assert_invariants(&h);
}
