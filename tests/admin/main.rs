//! Operations (SPEC §8, §9): the admin listener's `/healthz`, `/readyz`,
//! `/metrics` and the status page (`status_page.rs`, in headless Chromium), request ids, the access log, draining on SIGTERM and the
//! demo's printed commands; the access log's `client` and `error`, heads
//! hyper refuses, build, process and connection metrics (`observability.rs`). In-process tests run on paused tokio time; the
//! ones that need the real binary (signals, log output) run it as a child.

#[path = "../support/mod.rs"]
mod support;

mod binary;
mod observability;
mod status_page;

use std::time::Duration;

use fitbit_proxy::sim::TokenFailure;
use http::{Request, StatusCode};
use http_body_util::Full;
use prometheus_parse::{Scrape, Value};
use support::*;

const SEC: Duration = Duration::from_secs(1);

/// `(status, JSON body)` of `/readyz`.
async fn readyz(client: &TestClient, h: &Harness) -> (StatusCode, serde_json::Value) {
    let (res, body) = send(client, get(&h.admin_url("/readyz"))).await;
    assert_eq!(res.headers()["content-type"], "application/json");
    let json = serde_json::from_slice(&body).expect("readyz answers JSON");
    (res.status(), json)
}

/// A lone proxy's readiness names Redis as `disabled`.
fn not_ready(reason: &str) -> serde_json::Value {
    serde_json::json!({ "ready": false, "reason": reason, "shared": "disabled" })
}

#[tokio::test(start_paused = true)]
async fn healthz_is_200_other_paths_404_and_only_get_and_head_are_allowed() {
    let h = Setup::default()
        .admin()
        .start_with(|sim| sim.set_token_delay(60 * SEC))
        .await;
    let client = http1_client();
    let (res, body) = send(&client, get(&h.admin_url("/healthz"))).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "healthz while no token is held"
    );
    assert_eq!(body, "ok\n");
    for path in ["/health", "/metrics/x", "/status", "/1/user/-/profile.json"] {
        assert_eq!(
            get_status(&client, &h.admin_url(path)).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let post = Request::post(h.admin_url("/metrics"))
        .body(Full::default())
        .unwrap();
    let (res, _) = send(&client, post).await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()["allow"], "GET, HEAD");
    let head = Request::head(h.admin_url("/healthz"))
        .body(Full::default())
        .unwrap();
    assert_eq!(send(&client, head).await.0.status(), StatusCode::OK);
    assert!(
        h.sim.received().is_empty(),
        "admin requests never go upstream"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn readyz_says_no_token_yet_until_the_first_token_then_200() {
    let h = Setup::default()
        .admin()
        .start_with(|sim| sim.set_token_delay(10 * SEC))
        .await;
    let client = http1_client();
    let (code, json) = readyz(&client, &h).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json, not_ready("no token yet"));
    eventually(20 * SEC, || h.sim.tokens_issued() == 1).await;
    // A new connection: the admin port closes one idle for its 10 s
    // header-read bound, which the token's 10 s delay just passed, and a
    // client may take it from its pool before it sees it closed (seen
    // once on a loaded machine).
    let (code, json) = readyz(&http1_client(), &h).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        json,
        serde_json::json!({ "ready": true, "shared": "disabled" })
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn readyz_names_rejected_credentials_once_the_token_is_lost() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    assert_eq!(get_status(&client, &h.url("/1/x")).await, StatusCode::OK);
    assert_eq!(readyz(&client, &h).await.0, StatusCode::OK);
    h.sim.fail_token_requests(Some(TokenFailure::InvalidClient));
    h.sim.revoke_all();
    // The upstream's 401 drops the token; the refetch is rejected.
    let (res, _) = send(&client, get(&h.url("/1/y"))).await;
    assert_eq!(proxy_error(&res), Some("token_unavailable"));
    let (code, json) = readyz(&client, &h).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json, not_ready("credentials rejected: invalid_client"));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn readyz_names_a_failing_token_endpoint_and_recovers() {
    let h = Setup::default()
        .admin()
        .start_with(|sim| sim.fail_token_requests(Some(TokenFailure::Status(500))))
        .await;
    let client = http1_client();
    eventually(5 * SEC, || h.sim.token_fetches() == 1).await;
    let (code, json) = readyz(&client, &h).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    let reason = json["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("token endpoint failing: ") && reason.contains("HTTP 500"),
        "{reason}"
    );
    h.sim.fail_token_requests(None);
    eventually(10 * SEC, || h.sim.tokens_issued() == 1).await;
    assert_eq!(readyz(&client, &h).await.0, StatusCode::OK);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn readyz_is_503_draining_while_in_flight_requests_finish() {
    let mut h = Setup::default().admin().start().await;
    let client = http1_client();
    assert_eq!(readyz_when_ready(&client, &h).await, StatusCode::OK);
    let slow = tokio::spawn({
        let client = client.clone();
        let url = h.url("/sim/slow/5000");
        async move { send(&client, get(&url)).await }
    });
    eventually(SEC, || h.sim.api_started() == 1).await;
    h.begin_stop();
    let (code, json) = readyz(&client, &h).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json, not_ready("draining"));
    assert!(!h.finished(), "the drain waits for the slow request");
    let (res, _) = slow.await.unwrap();
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the in-flight request finishes"
    );
    h.stop().await;
}

/// `/readyz` once the first token is in.
async fn readyz_when_ready(client: &TestClient, h: &Harness) -> StatusCode {
    eventually(5 * SEC, || h.sim.tokens_issued() == 1).await;
    readyz(client, h).await.0
}

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
}

/// The one sample named `name` with these labels (others may be present).
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_count_known_traffic_exactly() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    for i in 0..3 {
        let (res, _) = send(&client, get(&h.url(&format!("/1/ok/{i}")))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    for _ in 0..2 {
        let (res, _) = send(&client, get(&h.url("/oauth2/token"))).await;
        assert_eq!(proxy_error(&res), Some("forbidden"));
    }
    let (res, body) = send(&client, get(&h.admin_url("/metrics"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    let s = scrape(&text);

    let requests = "fitbit_proxy_requests_total";
    let ok = [("origin", "upstream"), ("code", "200")];
    assert_eq!(value(&s, requests, &ok), 3.0, "{text}");
    let forbidden = [("origin", "proxy"), ("code", "403")];
    assert_eq!(value(&s, requests, &forbidden), 2.0, "{text}");
    let all: f64 = s
        .samples
        .iter()
        .filter(|x| x.metric == requests)
        .map(|x| match x.value {
            Value::Untyped(v) | Value::Counter(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(all, 5.0, "no other answers were counted");
    let duration = "fitbit_proxy_request_duration_seconds";
    assert_eq!(value(&s, &format!("{duration}_count"), &[]), 5.0);
    let buckets = s
        .samples
        .iter()
        .find(|x| x.metric == duration)
        .map(|x| x.value.clone());
    let Some(Value::Histogram(buckets)) = buckets else {
        panic!("no histogram {duration}: {text}");
    };
    assert_eq!(buckets.last().unwrap().count, 5.0, "+Inf bucket");

    let fetches = "fitbit_proxy_token_fetches_total";
    assert_eq!(value(&s, fetches, &[("result", "ok")]), 1.0);
    assert_eq!(value(&s, fetches, &[("result", "rejected")]), 0.0);
    assert_eq!(value(&s, fetches, &[("result", "failed")]), 0.0);
    let expires = value(&s, "fitbit_proxy_token_expires_in_seconds", &[]);
    assert!(
        (3590.0..=3600.0).contains(&expires),
        "3600 s token: {expires}"
    );
    // The budget as the three forwarded answers left it (the two refused
    // requests spent nothing).
    assert_eq!(value(&s, "fitbit_proxy_rate_limit_limit", &[]), 1_000_000.0);
    assert_eq!(
        value(&s, "fitbit_proxy_rate_limit_remaining", &[]),
        999_997.0
    );
    let reset = value(&s, "fitbit_proxy_rate_limit_reset_seconds", &[]);
    assert!((3590.0..=3601.0).contains(&reset), "reset {reset}");
    for (name, labels) in [
        ("fitbit_proxy_queue_depth", &[][..]),
        ("fitbit_proxy_upstream_rate_limited_total", &[]),
        ("fitbit_proxy_upstream_gone_total", &[]),
        ("fitbit_proxy_rate_limit_header_errors_total", &[]),
        ("fitbit_proxy_requests_cancelled_total", &[]),
        (
            "fitbit_proxy_paced_rejections_total",
            &[("reason", "rate_limited")],
        ),
        (
            "fitbit_proxy_paced_rejections_total",
            &[("reason", "queue_full")],
        ),
        (
            "fitbit_proxy_task_restarts_total",
            &[("task", "token_refresher")],
        ),
    ] {
        assert_eq!(value(&s, name, labels), 0.0, "{name}");
    }
    // The token's lifetime is read at scrape time. (A fresh client: the
    // admin listener has closed the idle connection meanwhile.)
    tokio::time::advance(600 * SEC).await;
    let text = String::from_utf8(
        send(&http1_client(), get(&h.admin_url("/metrics")))
            .await
            .1
            .to_vec(),
    )
    .unwrap();
    let later = value(&scrape(&text), "fitbit_proxy_token_expires_in_seconds", &[]);
    assert!(
        (expires - later - 600.0).abs() < 1.0,
        "{expires} then {later}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_request_whose_client_leaves_before_the_answer_is_counted_as_cancelled() {
    let h = Setup::default().admin().start().await;
    let url = h.url("/sim/slow/5000");
    let pending = tokio::spawn(async move { send(&http1_client(), get(&url)).await });
    eventually(SEC, || h.sim.api_started() == 1).await;
    pending.abort();
    let client = http1_client();
    let mut cancelled = 0.0;
    for _ in 0..100 {
        let text = send(&client, get(&h.admin_url("/metrics"))).await.1;
        let s = scrape(std::str::from_utf8(&text).unwrap());
        cancelled = value(&s, "fitbit_proxy_requests_cancelled_total", &[]);
        if cancelled == 1.0 {
            assert!(
                !s.samples
                    .iter()
                    .any(|x| x.metric == "fitbit_proxy_requests_total"),
                "no answer was counted"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        cancelled, 1.0,
        "within a second, long before the 5 s answer"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn request_ids_are_generated_kept_or_replaced_and_passed_upstream() {
    let h = Setup::default().start().await;
    let client = http1_client();
    let with_id = |path: &str, id: &str| {
        Request::get(h.url(path))
            .header("x-request-id", id)
            .body(Full::default())
            .unwrap()
    };
    let id_of = |res: &http::Response<()>| {
        res.headers()
            .get("x-request-id")
            .expect("every answer carries x-request-id")
            .to_str()
            .unwrap()
            .to_owned()
    };
    // None sent: one is generated and passed upstream.
    let (res, _) = send(&client, get(&h.url("/1/a"))).await;
    let generated = id_of(&res);
    assert_eq!(generated.len(), 32, "{generated}");
    assert!(generated.bytes().all(|b| b.is_ascii_hexdigit()));
    // A sane one is kept.
    let (res, _) = send(&client, with_id("/1/b", "client-chosen-42")).await;
    assert_eq!(id_of(&res), "client-chosen-42");
    // Too long, or with a space: replaced.
    let long = "x".repeat(129);
    let (res, _) = send(&client, with_id("/1/c", &long)).await;
    let replaced_long = id_of(&res);
    assert_ne!(replaced_long, long);
    assert_eq!(replaced_long.len(), 32);
    let (res, _) = send(&client, with_id("/1/d", "two words")).await;
    let replaced_space = id_of(&res);
    assert_eq!(replaced_space.len(), 32);
    assert_ne!(replaced_space, generated);
    // The proxy's own answers carry one too.
    let (res, _) = send(&client, with_id("/oauth2/token", "mine-403")).await;
    assert_eq!(proxy_error(&res), Some("forbidden"));
    assert_eq!(id_of(&res), "mine-403");
    let (res, _) = send(&client, get(&h.url("/oauth2/token"))).await;
    assert_eq!(id_of(&res).len(), 32);

    let upstream: Vec<(String, String)> = h
        .sim
        .received()
        .iter()
        .map(|r| {
            let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
            (r.path.clone(), id)
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("/1/a", generated.as_str()),
        ("/1/b", "client-chosen-42"),
        ("/1/c", replaced_long.as_str()),
        ("/1/d", replaced_space.as_str()),
    ]
    .iter()
    .map(|(p, i)| (p.to_string(), i.to_string()))
    .collect();
    assert_eq!(upstream, want, "the same ids reached the upstream");
    h.stop().await;
}

#[tokio::test]
async fn an_admin_address_in_use_fails_run() {
    let taken = bind().await;
    let sim = fitbit_proxy::sim::Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let dir = tempfile::tempdir().unwrap();
    let extra = Extras {
        admin: Some(format!("addr = \"{}\"", taken.local_addr().unwrap())),
        ..Extras::default()
    };
    let config = parse_config(&config_toml(&upstream, None, &extra), dir.path());
    let result = fitbit_proxy::run(bind().await, config, std::future::pending()).await;
    let err = result.expect_err("run must fail when admin.addr cannot be bound");
    assert!(
        err.to_string()
            .starts_with("cannot bind admin.addr 127.0.0.1:"),
        "{err}"
    );
}
