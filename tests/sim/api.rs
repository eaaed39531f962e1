//! The API: bearer-token checks, quota headers and windows, recording, and the
//! `/sim/...` special paths.

use std::time::Duration;

use fitbit_proxy::sim::SimConfig;
use tokio::time::Instant;

use super::*;

const FORM: &str = "grant_type=client_credentials";

#[tokio::test(start_paused = true)]
async fn rejects_missing_unknown_revoked_and_expired_tokens() {
    let (sim, handle, client) = start_plain(SimConfig::default()).await;
    let url = format!("{}/1/user/-/profile.json", handle.base_url());
    let reply = send(&client, api_request(Method::GET, &url, None)).await;
    assert_eq!(
        (reply.status.as_u16(), reply.error_type().as_str()),
        (401, "invalid_client")
    );
    let reply = get(&client, &handle, "/1/user/-/profile.json", "nope").await;
    assert_eq!(
        (reply.status.as_u16(), reply.error_type().as_str()),
        (401, "invalid_token")
    );

    let first = fetch_token(&client, &handle, FORM).await;
    let second = fetch_token(&client, &handle, FORM).await;
    assert_eq!(get(&client, &handle, "/1/x", &first).await.status, 200);
    sim.revoke(&first);
    assert_eq!(
        get(&client, &handle, "/1/x", &first).await.error_type(),
        "invalid_token"
    );
    assert_eq!(get(&client, &handle, "/1/x", &second).await.status, 200);
    sim.revoke_all();
    assert_eq!(
        get(&client, &handle, "/1/x", &second).await.error_type(),
        "invalid_token"
    );

    let short = fetch_token(&client, &handle, &format!("{FORM}&expires_in=3600")).await;
    tokio::time::advance(Duration::from_secs(3599)).await;
    assert_eq!(get(&client, &handle, "/1/x", &short).await.status, 200);
    tokio::time::advance(Duration::from_secs(1)).await;
    let reply = get(&client, &handle, "/1/x", &short).await;
    assert_eq!(
        (reply.status.as_u16(), reply.error_type().as_str()),
        (401, "expired_token")
    );
    assert_eq!(sim.api_requests(), 8);
    assert_eq!(sim.received().iter().filter(|r| r.status == 200).count(), 3);
}

#[tokio::test(start_paused = true)]
async fn quota_counts_down_rejects_and_resets_with_the_window() {
    let cfg = SimConfig {
        quota: 3,
        window: Duration::from_secs(60),
        ..SimConfig::default()
    };
    let (sim, handle, client) = start_plain(cfg).await;
    let token = fetch_token(&client, &handle, FORM).await;
    for remaining in ["2", "1", "0"] {
        let reply = get(&client, &handle, "/1/x", &token).await;
        assert_eq!(reply.header("fitbit-rate-limit-limit"), "3");
        assert_eq!(reply.header("fitbit-rate-limit-remaining"), remaining);
        assert_eq!(reply.header("fitbit-rate-limit-reset"), "60");
    }
    tokio::time::advance(Duration::from_millis(20_500)).await;
    let reply = get(&client, &handle, "/1/x", &token).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), "40");
    assert_eq!(reply.header("fitbit-rate-limit-reset"), "40");
    assert_eq!(reply.json()["errors"][0]["message"], "Too Many Requests");
    assert_eq!(sim.rate_limited(), 1);

    tokio::time::advance(Duration::from_secs(41)).await;
    let reply = get(&client, &handle, "/1/x", &token).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("fitbit-rate-limit-remaining"), "2");
    // Windows stay aligned: this one began at 60 s, it is now 61.5 s.
    assert_eq!(reply.header("fitbit-rate-limit-reset"), "59");
}

#[tokio::test(start_paused = true)]
async fn lagging_headers_and_another_consumer() {
    let cfg = SimConfig {
        quota: 10,
        ..SimConfig::default()
    };
    let (sim, handle, client) = start_plain(cfg).await;
    let token = fetch_token(&client, &handle, FORM).await;
    sim.set_reported_lag(3);
    let reply = get(&client, &handle, "/1/x", &token).await;
    assert_eq!(reply.header("fitbit-rate-limit-remaining"), "10");
    sim.spend_quota(8);
    let reply = get(&client, &handle, "/1/x", &token).await;
    assert_eq!(
        reply.header("fitbit-rate-limit-remaining"),
        "3",
        "truth 0, lagging by 3"
    );
    assert_eq!(get(&client, &handle, "/1/x", &token).await.status, 429);
}

#[tokio::test]
async fn records_requests_and_echoes_locale_headers() {
    let (sim, handle, client) = start_plain(SimConfig::default()).await;
    let token = fetch_token(&client, &handle, FORM).await;
    let url = format!(
        "{}/1/user/-/body/log/weight.json?date=today",
        handle.base_url()
    );
    let req = Request::post(&url)
        .header("authorization", format!("Bearer {token}"))
        .header("accept-language", "en_GB")
        .header("accept-locale", "fr_FR")
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from(vec![b'a'; 5000])))
        .unwrap();
    let reply = send(&client, req).await;
    let echo = reply.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/1/user/-/body/log/weight.json");
    assert_eq!(echo["query"], "date=today");
    assert_eq!(
        (
            echo["acceptLanguage"].as_str(),
            echo["acceptLocale"].as_str()
        ),
        (Some("en_GB"), Some("fr_FR"))
    );
    assert!(reply.body.len() > 1024);

    let seen = sim.received().pop().unwrap();
    assert_eq!(
        (&seen.method, seen.version, seen.body_len),
        (&Method::POST, Version::HTTP_11, 5000)
    );
    assert_eq!(seen.query.as_deref(), Some("date=today"));
    assert_eq!(seen.headers["x-custom"], "kept");
    assert_eq!(seen.authorization, Some(format!("Bearer {token}")));
    assert!(!format!("{seen:?}").contains(&token));
}

#[tokio::test(start_paused = true)]
async fn special_paths() {
    let (sim, handle, client) = start_plain(SimConfig::default()).await;
    let token = fetch_token(&client, &handle, FORM).await;
    let reply = get(&client, &handle, "/sim/status/410", &token).await;
    assert_eq!(
        (reply.status.as_u16(), reply.error_type().as_str()),
        (410, "sim_status")
    );
    assert_eq!(reply.header("fitbit-rate-limit-remaining"), "149");
    let reply = get(
        &client,
        &handle,
        "/sim/status/401?errorType=expired_token",
        &token,
    )
    .await;
    assert_eq!(reply.error_type(), "expired_token");
    assert_eq!(
        get(&client, &handle, "/sim/status/99", &token).await.status,
        400
    );

    let started = Instant::now();
    assert_eq!(
        get(&client, &handle, "/sim/slow/5000", &token).await.status,
        200
    );
    assert!(started.elapsed() >= Duration::from_secs(5));

    let reply = get(&client, &handle, "/sim/stream/1000000", &token).await;
    assert_eq!(
        (reply.body.len(), reply.header("content-length")),
        (1_000_000, "1000000")
    );

    let reply = get(&client, &handle, "/sim/hop", &token).await;
    for name in [
        "x-hop",
        "keep-alive",
        "proxy-connection",
        "trailer",
        "upgrade",
    ] {
        assert!(
            reply.headers.contains_key(name),
            "{name}: {:?}",
            reply.headers
        );
    }
    assert_eq!(reply.header("connection"), "x-hop");
    assert_eq!(sim.received().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn response_delay_applies_to_the_api_only() {
    let cfg = SimConfig {
        response_delay: Duration::from_secs(2),
        ..SimConfig::default()
    };
    let (_sim, handle, client) = start_plain(cfg).await;
    let started = Instant::now();
    let token = fetch_token(&client, &handle, FORM).await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    get(&client, &handle, "/1/x", &token).await;
    assert!(started.elapsed() >= Duration::from_secs(2));
}
