//! Operations (SPEC §8, §9): the admin listener's `/healthz`, `/readyz` and
//! `/metrics`, request ids, the access log, draining on SIGTERM and the
//! demo's printed commands. In-process tests run on paused tokio time; the
//! ones that need the real binary (signals, log output) run it as a child.

mod support;

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

fn not_ready(reason: &str) -> serde_json::Value {
    serde_json::json!({ "ready": false, "reason": reason })
}

async fn status(client: &TestClient, url: &str) -> StatusCode {
    send(client, get(url)).await.0.status()
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
    for path in ["/", "/health", "/metrics/x", "/1/user/-/profile.json"] {
        assert_eq!(
            status(&client, &h.admin_url(path)).await,
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
    let (code, json) = readyz(&client, &h).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(json, serde_json::json!({ "ready": true }));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn readyz_names_rejected_credentials_once_the_token_is_lost() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    assert_eq!(status(&client, &h.url("/1/x")).await, StatusCode::OK);
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

/// A source outside `listen.allow` gets its 403 through the access layer:
/// a request id, a count (and an access-log line, written by the same
/// record); the admin port is not subject to `listen.allow`.
#[tokio::test(start_paused = true)]
async fn a_source_outside_listen_allow_is_counted_and_gets_a_request_id() {
    let h = Setup::default()
        .listen("allow = [\"10.0.0.0/8\"]")
        .admin()
        .start()
        .await;
    let client = http1_client();
    let (res, _) = send(&client, get(&h.url("/1/x"))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(proxy_error(&res), Some("forbidden"));
    assert!(!res.headers()["x-request-id"].is_empty());
    let text = send(&client, get(&h.admin_url("/metrics"))).await.1;
    let s = scrape(std::str::from_utf8(&text).unwrap());
    let forbidden = [("origin", "proxy"), ("code", "403")];
    assert_eq!(value(&s, "fitbit_proxy_requests_total", &forbidden), 1.0);
    assert!(h.sim.received().is_empty());
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

/// Child-process tests: the real binary, real time, real signals.
mod binary {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Output, Stdio};

    use crate::support::binary::*;
    use fitbit_proxy::sim::Sim;

    use super::*;

    /// The binary in front of `sim` with a 10 s grace, JSON logs and the
    /// admin listener on, once `/readyz` says 200.
    async fn start(upstream: &fitbit_proxy::sim::ServerHandle) -> Proxy {
        let extra = Extras {
            listen: "shutdown_grace = \"10s\"".into(),
            ..Extras::default()
        };
        Launch {
            extra,
            ..Launch::default()
        }
        .start(upstream)
        .await
    }

    /// Every stderr line as JSON (all of them must be), and the access lines.
    fn json_lines(out: &Output) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
        let all = crate::support::binary::json_lines(out);
        let access = access_lines(&all).into_iter().cloned().collect();
        (all, access)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn json_access_log_has_one_line_per_request_with_its_fields_and_no_secret() {
        let sim = Sim::new(sim_config());
        let upstream = sim.serve_plain(bind().await);
        let p = start(&upstream).await;
        let client = http1_client();
        let base = format!("http://{}", p.proxy);
        let req = Request::get(format!(
            "{base}/1/user/-/profile.json?token=QUERY_CANARY&x=1"
        ))
        .header("x-request-id", "from-the-client")
        .body(Full::default())
        .unwrap();
        let (ok, ok_body) = send(&client, req).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let (refused, refused_body) = send(&client, get(&format!("{base}/oauth2/token"))).await;
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        p.child.sigterm();
        let out = p.child.exited().await;
        assert_eq!(out.status.code(), Some(0));

        let (all, access) = json_lines(&out);
        assert!(!all.is_empty());
        assert_eq!(access.len(), 2, "one line per request: {access:#?}");
        let first = &access[0];
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["method"], "GET");
        assert_eq!(first["path"], "/1/user/-/profile.json");
        assert_eq!(first["status"], 200);
        assert_eq!(first["origin"], "upstream");
        assert_eq!(first["request_id"], "from-the-client");
        assert_eq!(first["bytes"], ok_body.len() as u64);
        assert_eq!(first["complete"], true);
        assert!(first["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
        let second = &access[1];
        assert_eq!(second["path"], "/oauth2/token");
        assert_eq!(second["status"], 403);
        assert_eq!(second["origin"], "proxy");
        assert_eq!(second["bytes"], refused_body.len() as u64);
        assert_eq!(
            second["request_id"],
            refused.headers()["x-request-id"].to_str().unwrap()
        );
        let logs = String::from_utf8_lossy(&out.stderr);
        for canary in [SECRET, "SECRET_CANARY", "TOKEN_CANARY", "QUERY_CANARY"] {
            assert!(!logs.contains(canary), "the logs leak {canary}:\n{logs}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_finishes_twenty_slow_requests_refuses_new_ones_and_exits_0() {
        let sim = Sim::new(sim_config());
        let upstream = sim.serve_plain(bind().await);
        let p = start(&upstream).await;
        let client = http1_client();
        let url = format!("http://{}/sim/slow/2000", p.proxy);
        let requests: Vec<_> = (0..20)
            .map(|_| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move { send(&client, get(&url)).await.0.status() })
            })
            .collect();
        for _ in 0..200 {
            if sim.api_started() == 20 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(sim.api_started(), 20, "all 20 reached the upstream");
        let signalled = tokio::time::Instant::now();
        p.child.sigterm();

        // Draining: not ready, and the proxy's port refuses connections,
        // well before the slow requests are done.
        let (draining, refused) = p.draining_and_refusing().await;
        assert!(draining, "/readyz did not go to 503 while draining");
        assert!(refused, "new connections were still accepted after SIGTERM");
        assert!(
            signalled.elapsed() < Duration::from_millis(1500),
            "checked while the slow requests were still in flight"
        );

        for request in requests {
            assert_eq!(request.await.unwrap(), StatusCode::OK);
        }
        let out = p.child.exited().await;
        assert_eq!(out.status.code(), Some(0), "exit 0 after draining");
        let (_, access) = json_lines(&out);
        let slow = access
            .iter()
            .filter(|l| l["path"] == "/sim/slow/2000" && l["status"] == 200)
            .count();
        assert_eq!(slow, 20, "each finished request was logged");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_admin_address_in_use_exits_1() {
        let taken = bind().await;
        let sim = Sim::new(sim_config());
        let upstream = sim.serve_plain(bind().await);
        let extra = Extras {
            admin: Some(format!("addr = \"{}\"", taken.local_addr().unwrap())),
            ..Extras::default()
        };
        let proxy = free_addr().await;
        let toml = config_toml(&upstream, None, &extra)
            .replace("addr = \"127.0.0.1:0\"", &format!("addr = \"{proxy}\""));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, toml).unwrap();
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&path)
            .env(SECRET_ENV, SECRET)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = Running(Some(child)).exited().await;
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot bind admin.addr"), "{stderr}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn demo_prints_curl_commands_that_work_as_printed() {
        let mut child = Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let child = Running(Some(child));
        let (lines_tx, lines_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines_tx.send(line);
            }
        });
        let mut banner = Vec::new();
        while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(10)) {
            let end = line.contains("Ctrl-C");
            banner.push(line);
            if end {
                break;
            }
        }
        let commands: Vec<Vec<String>> = banner
            .iter()
            .map(|l| l.trim())
            .filter(|l| l.starts_with("curl "))
            .map(|l| l.split_whitespace().map(str::to_owned).collect())
            .collect();
        assert_eq!(commands.len(), 6, "{banner:#?}");
        let run = |args: &[String]| {
            // As printed, with a bound on time added.
            let out = Command::new(&args[0])
                .args(&args[1..])
                .args(["--max-time", "10"])
                .output()
                .expect("curl runs");
            assert!(out.status.success(), "{args:?}: {out:?}");
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let outputs = tokio::task::spawn_blocking(move || {
            commands
                .iter()
                .map(|c| (c.join(" "), run(c)))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap();
        let profile: serde_json::Value = serde_json::from_str(&outputs[0].1)
            .unwrap_or_else(|e| panic!("{}: {e}: {}", outputs[0].0, outputs[0].1));
        assert_eq!(profile["user"]["encodedId"], "SIM123", "{profile}");
        assert!(outputs[1].1.starts_with("HTTP/1.1 200"), "{}", outputs[1].1);
        assert!(
            outputs[2].1.contains("x-fitbit-proxy-error: forbidden"),
            "{}",
            outputs[2].1
        );
        assert_eq!(outputs[3].1, "ok\n");
        assert_eq!(outputs[4].1, r#"{"ready":true}"#);
        assert!(
            outputs[5]
                .1
                .contains("fitbit_proxy_requests_total{origin=\"upstream\",code=\"200\"} 2"),
            "{}",
            outputs[5].1
        );
        child.sigterm();
        let out = child.exited().await;
        assert_eq!(out.status.code(), Some(0));
    }
}
