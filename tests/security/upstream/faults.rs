//! An upstream that fails mid-exchange: resets and closes before the
//! answer, a stale pooled connection, answers cut in the middle of the
//! body (TCP reset, TLS without `close_notify`), a trickling body, and
//! certificates that must not verify.

use super::*;
use std::time::Duration;

use crate::support::faulty::{self, RawUpstream, Step};
use http::Request;
use http_body_util::Full;

/// U resets before sending headers (4.21): it reads the request, then resets
/// (or closes) a fresh connection without a byte: 502 at once, and the
/// request is not sent again (the upstream may have acted on it).
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
    h.finish().await;
}

/// U resets before sending headers (4.21), the keep-alive race: the upstream
/// closes (FIN, or RST) a pooled connection just as the proxy reuses it; here
/// it reads the second request on a connection and closes without a byte. A
/// GET is retried once on a fresh connection and succeeds; the request
/// reached the upstream twice but was answered (and so spent quota) once. A
/// POST is never sent twice: 502.
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
    h.finish().await;
}

/// U resets in the middle of the body (4.22): it sends the head and part of
/// the body, then a TCP RST. The client's answer is cut short, never ended
/// cleanly; the access log marks it `complete=false`; the proxy goes on
/// serving.
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
    h.finish().await;
}

/// TLS truncation (4.25): over TLS, the upstream closes TCP without
/// `close_notify` in the middle of a body with Content-Length, and of a
/// close-delimited body. Neither is reported as complete.
#[tokio::test]
async fn a_tls_close_without_close_notify_is_a_cut_answer() {
    let logs = Logs::capture();
    let pki = faulty::Pki::new();
    let (chain, key) = pki.localhost();
    let raw = RawUpstream::start_tls(chain, key, |s| match s.path() {
        "/tls-cl" => vec![faulty::send(CL_PART), Step::Close],
        "/tls-eof" => vec![faulty::send(EOF_PART), Step::Close],
        _ => vec![faulty::send(OK)],
    })
    .await;
    let h = start_trusting(raw.url(), &pki).await;
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
    h.finish().await;
}

/// A trickling body (4.23), under paused time, `request_timeout = "1s"` (also
/// the upstream body's idle bound): a body whose bytes come 900 ms apart (4.5
/// s in all) flows to its end; one whose bytes come 1100 ms apart is cut
/// after the first.
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
    h.finish().await;
}

/// TLS verification fails (4.24): an upstream whose certificate is for
/// another name, expired, for an IP address only (the URL names `localhost`),
/// or sent without its intermediate. The handshake fails: 502
/// `upstream_unreachable`, and not one HTTP byte (so no token) reaches it.
/// The same PKI with the full chain works, so each failure is the defect's.
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
        h.finish().await;
    }
}
