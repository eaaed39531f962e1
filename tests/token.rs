//! The token, first part (SPEC T1–T3): the exchange as Fitbit documents it,
//! validation of the answer, the cache, and single flight.

mod support;

use std::time::Duration;

use fitbit_proxy::sim::TokenFailure;
use http::StatusCode;
use support::*;

#[tokio::test]
async fn token_request_is_the_documented_client_credentials_exchange() {
    let h = Setup::default().start().await;
    let (res, _) = send(&http1_client(), get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let reqs = h.sim.token_requests();
    assert_eq!(reqs.len(), 1);
    let t = &reqs[0];
    assert_eq!(t.client_id.as_deref(), Some(CLIENT_ID));
    let secret = t
        .client_secret
        .as_ref()
        .expect("Basic credentials carry a secret");
    assert_eq!(secret.expose(), SECRET);
    assert_eq!(t.method, http::Method::POST);
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

#[tokio::test]
async fn five_hundred_concurrent_cold_requests_cause_one_token_request() {
    let mut sim_cfg = sim_config();
    sim_cfg.quota = 10_000;
    let h = Setup {
        sim_config: sim_cfg,
        ..Setup::default()
    }
    .start()
    .await;
    // Ten h2c connections carry 50 streams each: 500 requests at once.
    let clients: Vec<TestClient> = (0..10).map(|_| h2c_client()).collect();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let client = clients[i % clients.len()].clone();
        let url = h.url(&format!("/1/cold/{i}"));
        tasks.push(tokio::spawn(async move {
            send(&client, get(&url)).await.0.status()
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(h.sim.token_fetches(), 1);
    assert_eq!(h.sim.received().len(), 500);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cached_until_expiry_then_fetched_again() {
    let mut sim_cfg = sim_config();
    sim_cfg.token_lifetime = Some(Duration::from_secs(3600));
    let h = Setup {
        sim_config: sim_cfg,
        ..Setup::default()
    }
    .start()
    .await;
    let client = http1_client();
    for _ in 0..5 {
        assert_eq!(
            send(&client, get(&h.url("/1/x"))).await.0.status(),
            StatusCode::OK
        );
    }
    assert_eq!(h.sim.token_fetches(), 1);
    let first = h.sim.current_token().unwrap();
    tokio::time::advance(Duration::from_secs(3601)).await;
    // The proxy closed the idle keep-alive connection meanwhile; a new
    // client does not race that close.
    let client = http1_client();
    assert_eq!(
        send(&client, get(&h.url("/1/x"))).await.0.status(),
        StatusCode::OK
    );
    assert_eq!(h.sim.token_fetches(), 2);
    let second = h.sim.current_token().unwrap();
    assert_ne!(first, second);
    let last = h.sim.received().pop().unwrap();
    assert_eq!(last.authorization, Some(format!("Bearer {second}")));
    h.stop().await;
}

#[tokio::test]
async fn token_failures_become_503_token_unavailable_and_nothing_is_forwarded() {
    let h = Setup::default().start().await;
    let client = http1_client();
    let cases = [
        (TokenFailure::InvalidClient, "invalid_client"),
        (
            TokenFailure::FitbitError(401, "invalid_client"),
            "invalid_client",
        ),
        (TokenFailure::Status(500), "HTTP 500"),
        (TokenFailure::Html, "unusable answer"),
        (TokenFailure::MissingField, "unusable answer"),
    ];
    for (failure, mention) in cases {
        h.sim.fail_token_requests(Some(failure));
        let (res, body) = send(&client, get(&h.url("/1/x"))).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(proxy_error(&res), Some("token_unavailable"));
        assert!(res.headers().contains_key("retry-after"));
        assert_fitbit_error(&body, "token_unavailable");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(mention), "{mention}: {text}");
        assert!(
            !text.contains(SECRET) && !text.contains("TOKEN_CANARY"),
            "{text}"
        );
    }
    assert!(
        h.sim.received().is_empty(),
        "nothing may be forwarded without a token"
    );
    h.sim.fail_token_requests(None);
    assert_eq!(
        send(&client, get(&h.url("/1/x"))).await.0.status(),
        StatusCode::OK
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_hanging_token_endpoint_is_bounded_by_the_fetch_timeout() {
    let h = Setup::default()
        .upstream("request_timeout = \"5s\"")
        .start()
        .await;
    h.sim.fail_token_requests(Some(TokenFailure::Hang));
    let (res, body) = send(&http1_client(), get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(&body).contains("did not answer"),
        "{body:?}"
    );
    h.stop().await;
}
