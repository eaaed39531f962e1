//! HTTP/1 message framing and request smuggling (RELIABILITY.md §1A):
//! Content-Length and Transfer-Encoding, chunked bodies and trailers,
//! HTTP/1.0, pipelining and bodies left unread, sent as raw bytes over
//! loopback. Every case ends with the global invariants
//! (tests/support/invariants.rs): nothing refused reached the upstream,
//! what did reach it is clean, and nothing panicked.

use std::time::Duration;

use super::impatient;
use super::probe::*;
use crate::support;
use crate::support::invariants::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A conflicting, duplicated or unparsable Content-Length is refused with 400
/// and a close (1.01, 1.02; RFC 9112 §6.3 item 5, RFC 9110 §8.6).
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

/// Obfuscated or unsupported Transfer-Encoding (1.04): only a
/// Transfer-Encoding of exactly `chunked` is accepted.
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

/// Content-Length together with Transfer-Encoding (1.03): CL.TE and TE.CL.
/// hyper decodes as chunked and drops CL; the connection closes after the
/// answer; `/smuggled` never reaches U.
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

/// HTTP/1.0 framing (1.05): HTTP/1.0 with TE is refused; HTTP/1.0 without a
/// length has no body, and what follows is never read as a request after
/// close.
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

/// Malformed chunk framing, oversized extensions and trailer sections (1.06,
/// 1.07): 400 and close (the proxy's own answer, not a 502 blaming the
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

/// Chunked trailers (1.07, 2.05), credentials and framing fields among them,
/// never reach the upstream, whether it speaks HTTP/1.1 or HTTP/2.
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

/// Pipelining and unread bodies (1.10): pipelining after a refusal, 100
/// pipelined requests in order, and a refused request whose body holds a
/// request.
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

/// Unread bodies (1.10 c) with the pacer's refusals: a POST refused with 429
/// (`max_wait`) or 503 (`max_queued`) before its body is read. Its body holds
/// complete requests; none of them is parsed as a request: the connection
/// closes after the one answer, and only the request that took the slot
/// reached U.
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
    h.finish().await;

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

/// One counted outcome per request (G5): requests the stack answered are each
/// counted once, by origin and code; what hyper refused before the stack is
/// not a request.
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
