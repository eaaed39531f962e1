//! The token endpoint misbehaves: silent or trickling, an answer over
//! 64 KiB, a redirect, `Retry-After`, a certificate that does not verify.

use super::*;
use std::time::Duration;

use crate::support::faulty::{self, RawUpstream, Step};

/// The token endpoint slow or hanging (4.02), under paused time,
/// `request_timeout = "2s"` (also the token fetch timeout): a token endpoint
/// that accepts and never answers, and one that sends its head and then one
/// body byte every 5 s. Ten concurrent requests share the one fetch in flight
/// and each gets 503 `token_unavailable` with `Retry-After` once the fetch
/// times out; none hangs.
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
        h.finish().await;
    }
}

/// The proxy (with its admin listener) fetching its token from a raw
/// endpoint that answers every request with `answer`; returned once the
/// endpoint has been asked.
async fn behind_a_token_endpoint_answering(answer: Vec<u8>) -> (Harness, RawUpstream) {
    let token = RawUpstream::start(move |_| vec![faulty::send(&answer)]).await;
    let h = Setup::default()
        .admin()
        .token_url(format!("{}/oauth2/token", token.url()))
        .start()
        .await;
    eventually(Duration::from_secs(5), || !token.seen().is_empty()).await;
    (h, token)
}

/// A token answer is bounded (T2): it is read up to 64 KiB (a grant with a
/// long `scope` is still a grant) and refused past it: `/readyz` is 200 with
/// a 60 KiB answer, and 503 with 64 KiB + 1, whose requests get 503
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
        let (h, _token) = behind_a_token_endpoint_answering(answer.into_bytes()).await;
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
        h.finish().await;
    }
}

/// Transport to the token endpoint (4.11): one answering `307` to elsewhere.
/// The redirect is not followed (the secret goes nowhere else); requests get
/// 503 `token_unavailable` naming the 307.
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
    h.finish().await;
}

/// The token endpoint answers 5xx or 429 (4.03), under paused time: the token
/// endpoint answers 503 with `Retry-After: 30`, then 429 with `Retry-After:
/// 20`, then a bare 500, then a token. The refresher waits as long as each
/// `Retry-After` asks (not its own 1 s and 2 s backoff), and its own backoff
/// when none is given.
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
    h.finish().await;
}

/// Transport to the token endpoint (4.11): one whose certificate does not
/// verify (an untrusted root). The handshake fails closed: the secret is
/// never sent (T reads no request) and requests get 503 `token_unavailable`.
#[tokio::test]
async fn an_unverifiable_token_endpoint_never_gets_the_secret() {
    let pki = faulty::Pki::new();
    let (chain, key) = pki.localhost();
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
    h.finish().await;
}

/// A token answer that does not parse (4.05), over the wire: a captive
/// portal's `text/html` page, a valid grant labelled `text/plain`, truncated
/// JSON, `[]`, `null`, nesting 10 000 deep, an empty body, a body in
/// UTF-16. Each is refused: requests get 503 `token_unavailable`, `/readyz`
/// is 503 naming an unusable answer, and neither shows the token; nothing
/// is forwarded. The same grant labelled `application/json;charset=UTF-8`
/// is taken.
#[tokio::test]
async fn unusable_token_answers_are_refused_and_named() {
    let grant =
        r#"{"access_token":"TOKEN_CANARY_unusable","expires_in":3600,"token_type":"Bearer"}"#;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let utf16: Vec<u8> = grant.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "captive portal",
            "text/html",
            b"<html><body>Log in</body></html>".to_vec(),
        ),
        (
            "grant as text/plain",
            "text/plain",
            grant.as_bytes().to_vec(),
        ),
        (
            "truncated",
            "application/json",
            grant.as_bytes()[..40].to_vec(),
        ),
        ("array", "application/json", b"[]".to_vec()),
        ("null", "application/json", b"null".to_vec()),
        ("nesting 10 000 deep", "application/json", deep.into_bytes()),
        ("empty", "application/json", Vec::new()),
        ("UTF-16", "application/json", utf16),
        (
            "grant",
            "application/json;charset=UTF-8",
            grant.as_bytes().to_vec(),
        ),
    ];
    for (what, content_type, body) in cases {
        let mut answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        answer.extend(body);
        let (h, _token) = behind_a_token_endpoint_answering(answer).await;
        let client = http1_client();
        let readyz = || async { send(&client, get(&h.admin_url("/readyz"))).await };
        if what == "grant" {
            let ready = || async { readyz().await.0.status() == 200 };
            eventually_async(Duration::from_secs(5), ready).await;
            h.finish().await;
            continue;
        }
        let (res, body) = send(&client, get(&h.url("/1/x"))).await;
        assert_eq!(res.status(), 503, "{what}");
        assert_eq!(proxy_error(&res), Some("token_unavailable"), "{what}");
        assert_no_canary(what, &body);
        let (res, body) = readyz().await;
        assert_eq!(res.status(), 503, "{what}");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("unusable answer"), "{what}: {text}");
        assert_no_canary(what, &body);
        assert!(h.sim.received().is_empty(), "{what}: forwarded");
        h.finish().await;
    }
}
