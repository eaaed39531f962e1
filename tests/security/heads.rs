//! HTTP/1 request heads the parser must refuse (RELIABILITY.md §1A, §1B):
//! malformed and oversized heads, request-line and version oddities, and
//! methods (TRACE, overlong ones). Every case ends with the global
//! invariants.

use super::probe::*;
use crate::support::invariants::*;

/// Obsolete line folding, whitespace, bad names, CR or NUL in the head (1.08,
/// 1.09): 400.
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

/// Oversized request heads (1.19) and the §0.3 pins: 100 header fields and a
/// 64 KiB head buffer (`H1_MAX_HEADERS`, `H1_MAX_BUF_SIZE` in src/inbound/accept.rs).
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

/// Request-line and version oddities (1.20): 400 or 505, nothing forwarded.
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

/// Methods (1.18): TRACE/TRACK would echo the token: 405. Other method tokens
/// pass.
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

/// Methods (1.18): a method longer than any HTTP method (a 10 KiB one, or 33
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
