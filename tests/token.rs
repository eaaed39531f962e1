//! The token lifecycle (SPEC T1–T8) over loopback against the simulator:
//! the exchange as Fitbit documents it, start-up, single flight, refresh
//! ahead, backoff, outage and recovery, rejected credentials, revoked
//! tokens and replay. Time is tokio's paused clock throughout.

mod support;

use std::time::Duration;

use bytes::Bytes;
use fitbit_proxy::sim::{SimConfig, TokenFailure};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::invariants::assert_outcomes;
use support::*;

const SEC: Duration = Duration::from_secs(1);

fn lifetime(secs: u64) -> SimConfig {
    SimConfig {
        token_lifetime: Some(Duration::from_secs(secs)),
        quota: 1_000_000,
        ..sim_config()
    }
}

async fn status(client: &TestClient, h: &Harness, path: &str) -> StatusCode {
    get_status(client, &h.url(path)).await
}

#[tokio::test(start_paused = true)]
async fn token_request_is_the_documented_client_credentials_exchange() {
    let h = Setup::default().start().await;
    assert_eq!(status(&http1_client(), &h, "/1/x").await, StatusCode::OK);
    let reqs = h.sim.token_requests();
    assert_eq!(reqs.len(), 1);
    let t = &reqs[0];
    assert_eq!(t.method, http::Method::POST);
    assert_eq!(t.client_id.as_deref(), Some(CLIENT_ID));
    assert_eq!(t.client_secret.as_ref().map(|s| s.expose()), Some(SECRET));
    assert_eq!(
        t.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(t.headers["accept"], "application/json");
    assert!(t.headers["authorization"]
        .to_str()
        .unwrap()
        .starts_with("Basic "));
    assert_eq!(t.form_value("grant_type"), Some("client_credentials"));
    assert_eq!(t.form_value("expires_in"), Some("3600"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn requests_during_the_start_up_fetch_wait_for_it() {
    let h = Setup::default()
        .start_with(|sim| sim.set_token_delay(3 * SEC))
        .await;
    let started = tokio::time::Instant::now();
    assert_eq!(status(&http1_client(), &h, "/1/x").await, StatusCode::OK);
    assert!(
        started.elapsed() >= 2 * SEC,
        "the request did not wait for the first token"
    );
    assert_eq!(h.sim.token_fetches(), 1);
    h.stop().await;
}

// Real time on several threads: paused time cannot be used with tasks that
// exhaust tokio's cooperative budget (the clock jumps while they are
// deferred), and the threads make the race for the token a real one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_concurrent_cold_requests_cause_one_token_request() {
    let h = Setup::default()
        .sim(lifetime(3600))
        .start_with(|sim| sim.set_token_delay(Duration::from_millis(200)))
        .await;
    // Ten h2c connections carry 50 streams each: 500 requests at once, all
    // arriving while the first token is being fetched.
    let clients: Vec<TestClient> = (0..10).map(|_| h2c_client()).collect();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let url = h.url(&format!("/1/cold/{i}"));
        tasks.push(spawn_get(&clients[i % clients.len()], url));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(h.sim.token_fetches(), 1);
    assert_eq!(h.sim.received().len(), 500);
    h.stop().await;
}

/// Drives one request per `step` for `total`, asserting each succeeds;
/// returns the instants at which the token endpoint was asked.
async fn steady_traffic(h: &Harness, step: Duration, total: Duration) -> Vec<tokio::time::Instant> {
    let end = tokio::time::Instant::now() + total;
    while tokio::time::Instant::now() < end {
        // A connection per request: steps may outlast the keep-alive timeout.
        assert_eq!(
            status(&http1_client(), h, "/1/steady").await,
            StatusCode::OK
        );
        tokio::time::sleep(step).await;
    }
    h.sim.token_requests().iter().map(|t| t.at).collect()
}

#[tokio::test(start_paused = true)]
async fn refreshes_ahead_of_expiry_for_every_lifetime() {
    // (granted lifetime, refresh_before_expiry, earliest and latest gap)
    let cases = [
        (3600, "5m", 3600.0 - 300.0 - 30.0, 3600.0 - 300.0),
        (600, "5m", 300.0 - 30.0, 300.0),
        (400, "5m", 200.0 - 20.0, 200.0),
        (10, "5m", 4.5, 5.0),
        (28800, "1h", 28800.0 - 3600.0 - 360.0, 28800.0 - 3600.0),
    ];
    for (secs, margin, earliest, latest) in cases {
        let h = Setup::default()
            .sim(lifetime(secs))
            .credentials(&format!("refresh_before_expiry = \"{margin}\""))
            .start()
            .await;
        let step = Duration::from_secs_f64(latest / 20.0);
        let asked = steady_traffic(&h, step, Duration::from_secs_f64(latest * 3.5)).await;
        assert!(
            asked.len() >= 3,
            "lifetime {secs}: only {} fetches",
            asked.len()
        );
        for pair in asked.windows(2) {
            let gap = (pair[1] - pair[0]).as_secs_f64();
            // The gap also holds the fetch's own round trip (< 1 ms here).
            assert!(
                gap >= earliest && gap <= latest + 0.01,
                "lifetime {secs}: refresh gap {gap}s"
            );
        }
        // No request ever met a stale token.
        assert!(h.sim.received().iter().all(|r| r.status == StatusCode::OK));
        h.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_minute_of_steady_traffic_with_short_tokens_sees_no_401_and_one_fetch_per_interval() {
    let h = Setup::default().sim(lifetime(6)).start().await;
    let asked = steady_traffic(&h, Duration::from_millis(100), Duration::from_secs(60)).await;
    // Refreshes every 2.7–3 s (half-life of 6 s, minus jitter).
    assert!(
        (20..=23).contains(&asked.len()),
        "{} token requests in a minute",
        asked.len()
    );
    assert!(h.sim.received().iter().all(|r| r.status == StatusCode::OK));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backs_off_while_the_old_token_is_valid_and_nothing_fails_meanwhile() {
    let h = Setup::default()
        .sim(lifetime(3600))
        .credentials("refresh_before_expiry = \"20m\"")
        .start()
        .await;
    let client = http1_client();
    assert_eq!(status(&client, &h, "/1/x").await, StatusCode::OK);
    h.sim.fail_token_requests(Some(TokenFailure::Status(503)));
    // Refresh is due ~40 min in; the token stays valid for 20 min more.
    tokio::time::sleep(Duration::from_secs(2400)).await;
    eventually(Duration::from_secs(400), || h.sim.token_fetches() >= 9).await;
    let at: Vec<_> = h.sim.token_requests().iter().map(|t| t.at).collect();
    let gaps: Vec<f64> = at
        .windows(2)
        .skip(1)
        .map(|p| (p[1] - p[0]).as_secs_f64())
        .collect();
    let nominal = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0];
    for (gap, want) in gaps.iter().zip(nominal) {
        assert!(
            *gap >= want * 0.8 - 0.01 && *gap <= want + 0.01,
            "gaps {gaps:?}"
        );
    }
    assert_eq!(
        status(&client, &h, "/1/x").await,
        StatusCode::OK,
        "the old token still serves"
    );
    h.sim.fail_token_requests(None);
    eventually(Duration::from_secs(61), || h.sim.tokens_issued() == 2).await;
    assert_eq!(status(&client, &h, "/1/x").await, StatusCode::OK);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn outage_at_start_up_answers_503_at_once_then_recovers_by_itself() {
    let h = Setup::default()
        .start_with(|sim| sim.fail_token_requests(Some(TokenFailure::Status(500))))
        .await;
    let client = http1_client();
    eventually(Duration::from_secs(5), || h.sim.token_fetches() == 1).await;
    for _ in 0..20 {
        let started = tokio::time::Instant::now();
        let (res, body) = send(&client, get(&h.url("/1/x"))).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(proxy_error(&res), Some("token_unavailable"));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "the 503 was not immediate"
        );
        let retry = number(&res, "retry-after");
        assert!((1..=2).contains(&retry), "retry-after {retry}");
        assert_fitbit_error(&body, "token_unavailable");
        assert!(String::from_utf8_lossy(&body).contains("HTTP 500"));
    }
    assert!(
        h.sim.token_fetches() <= 2,
        "requests must not each cause a fetch"
    );
    assert!(
        h.sim.received().is_empty(),
        "nothing is forwarded without a token"
    );
    h.sim.fail_token_requests(None);
    eventually(Duration::from_secs(10), || h.sim.tokens_issued() == 1).await;
    assert_eq!(status(&client, &h, "/1/x").await, StatusCode::OK);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn rejected_credentials_are_named_and_retried_once_a_minute() {
    for failure in [
        TokenFailure::InvalidClient,
        TokenFailure::FitbitError(401, "invalid_client"),
        TokenFailure::FitbitError(400, "unauthorized_client"),
    ] {
        let h = Setup::default()
            .start_with(|sim| sim.fail_token_requests(Some(failure)))
            .await;
        let client = http1_client();
        eventually(Duration::from_secs(5), || h.sim.token_fetches() == 1).await;
        let (res, body) = send(&client, get(&h.url("/1/x"))).await;
        assert_eq!(proxy_error(&res), Some("token_unavailable"));
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("credentials rejected") && text.contains("_client"),
            "{text}"
        );
        let retry = number(&res, "retry-after");
        assert!(retry >= 59, "retry-after {retry}");
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(h.sim.token_fetches(), 1, "retried within the minute");
        eventually(Duration::from_secs(8), || h.sim.token_fetches() == 2).await;
        h.stop().await;
    }
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_never_attached() {
    let h = Setup::default().sim(lifetime(10)).start().await;
    let client = http1_client();
    assert_eq!(status(&client, &h, "/1/x").await, StatusCode::OK);
    h.sim.fail_token_requests(Some(TokenFailure::Status(500)));
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (res, _) = send(&http1_client(), get(&h.url("/1/x"))).await;
    assert_eq!(proxy_error(&res), Some("token_unavailable"));
    assert!(
        h.sim.received().iter().all(|r| r.status == StatusCode::OK),
        "an expired token reached the upstream"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_401s_for_a_revoked_token_cause_one_fetch_and_all_succeed() {
    let h = Setup::default().sim(lifetime(28800)).start().await;
    let client = h2c_client();
    assert_eq!(status(&client, &h, "/1/warm").await, StatusCode::OK);
    h.sim.revoke(&h.sim.current_token().unwrap());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let url = h.url(&format!("/1/after-revoke/{i}"));
        tasks.push(spawn_get(&client, url));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(h.sim.token_fetches(), 2, "one fetch for the revocation");
    let seen = h.sim.received();
    let replayed = seen
        .iter()
        .filter(|r| r.status == StatusCode::OK && r.path.starts_with("/1/after-revoke/"))
        .count();
    assert_eq!(replayed, 50);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn replay_keeps_small_bodies_only_and_never_loops() {
    let h = Setup::default().sim(lifetime(28800)).start().await;
    let client = http1_client();
    assert_eq!(status(&client, &h, "/1/warm").await, StatusCode::OK);

    // A small body is kept and replayed with the new token.
    h.sim.revoke(&h.sim.current_token().unwrap());
    let small = Bytes::from(vec![b's'; 1000]);
    let req = Request::post(h.url("/1/small"))
        .body(Full::new(small))
        .unwrap();
    let (res, _) = send(&client, req).await;
    assert_eq!(res.status(), StatusCode::OK);
    let last = h.sim.received().pop().unwrap();
    assert_eq!(
        (last.path.as_str(), last.body_len, last.status),
        ("/1/small", 1000, StatusCode::OK)
    );

    // A body over 64 KiB streams, so its 401 goes back; the token is
    // replaced all the same.
    let fetches = h.sim.token_fetches();
    h.sim.revoke(&h.sim.current_token().unwrap());
    let big = Bytes::from(vec![b'b'; 64 * 1024 + 1]);
    let req = Request::post(h.url("/1/big")).body(Full::new(big)).unwrap();
    let (res, body) = send(&client, req).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(&body).contains("invalid_token"));
    eventually(Duration::from_secs(5), || {
        h.sim.token_fetches() == fetches + 1
    })
    .await;
    assert_eq!(status(&client, &h, "/1/next").await, StatusCode::OK);

    // An upstream that rejects every token: one replay, then its 401 as is.
    let fetches = h.sim.token_fetches();
    let (res, _) = send(
        &client,
        get(&h.url("/sim/status/401?errorType=invalid_token")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let tries = h
        .sim
        .received()
        .iter()
        .filter(|r| r.path == "/sim/status/401")
        .count();
    assert_eq!(tries, 2, "one request, one replay");
    assert_eq!(h.sim.token_fetches(), fetches + 1);

    // A 401 that is not about the token is passed through untouched.
    let (res, _) = send(
        &client,
        get(&h.url("/sim/status/401?errorType=insufficient_scope")),
    )
    .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(h.sim.token_fetches(), fetches + 1);
    h.stop().await;
}

/// A 401 that is not about the token (4.14): one whose `errorType` is not
/// about the token, and a 403 `insufficient_scope`, go back to the client as
/// they are: no token refresh, no replay.
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
    h.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_401_for_an_old_token_does_not_drop_the_new_one() {
    use futures_util::stream;
    use http_body::Frame;
    use http_body_util::StreamBody;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let h = Setup::default().sim(lifetime(28800)).start().await;
    let client = http1_client();
    assert_eq!(status(&client, &h, "/1/warm").await, StatusCode::OK);

    // Request A starts with token 1 and streams its body slowly; the
    // simulator judges the token only once the body is in.
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let body = StreamBody::new(Box::pin(stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    })));
    let streaming: Client<_, _> = Client::builder(TokioExecutor::new()).build_http();
    let url = h.url("/1/slow-upload");
    let a = tokio::spawn(async move {
        streaming
            .request(Request::post(url).body(body).unwrap())
            .await
            .unwrap()
            .status()
    });
    tx.send(Bytes::from_static(b"first part")).await.unwrap();
    eventually(Duration::from_secs(10), || h.sim.api_started() == 2).await;

    // Token 1 is revoked; request B finds out, token 2 is fetched.
    h.sim.revoke(&h.sim.current_token().unwrap());
    assert_eq!(status(&client, &h, "/1/b").await, StatusCode::OK);
    assert_eq!(h.sim.token_fetches(), 2);

    // A's 401 for token 1 arrives now: token 2 must survive it.
    tx.send(Bytes::from_static(b"last part")).await.unwrap();
    drop(tx);
    assert_eq!(
        a.await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "a streamed body is not replayed"
    );
    assert_eq!(status(&client, &h, "/1/c").await, StatusCode::OK);
    assert_eq!(h.sim.token_fetches(), 2, "a stale 401 caused a fetch");
    h.stop().await;
}
