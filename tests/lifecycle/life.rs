//! A whole life: readiness through every state (5.05), a restart that
//! fetches a new token and leaves nothing on disk (5.06), a panic that
//! stays in its own connection, and one in the token refresher (5.11).

use std::convert::Infallible;
use std::sync::Arc;

use fitbit_proxy::layers::Answers;
use fitbit_proxy::ops::metrics::Metrics;
use fitbit_proxy::sim::{Sim, TokenFailure};
use fitbit_proxy::Body;
use http::{Request, Response, StatusCode};

use super::SEC;
use crate::support::binary::*;
use crate::support::invariants::*;
use crate::support::*;

/// Readiness transitions (5.05): one run through every readiness state: no
/// token yet (503) → token (200) → the token endpoint fails until the token
/// expires (503 naming it) → it recovers (200) → draining (503). `/healthz`
/// is 200 throughout.
#[tokio::test(start_paused = true)]
async fn readiness_through_a_whole_life() {
    let mut h = Setup::default()
        .admin()
        .credentials("expires_in = 3600\nrefresh_before_expiry = \"5m\"")
        .start_with(|sim| sim.set_token_delay(2 * SEC))
        .await;
    let client = http1_client();
    let readyz = |h: &Harness| {
        let (client, url) = (client.clone(), h.admin_url("/readyz"));
        async move {
            let (res, body) = send(&client, get(&url)).await;
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (
                res.status(),
                json["reason"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let healthz = |h: &Harness| {
        let (client, url) = (client.clone(), h.admin_url("/healthz"));
        async move { send(&client, get(&url)).await.0.status() }
    };
    assert_eq!(readyz(&h).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(healthz(&h).await, StatusCode::OK);
    eventually(10 * SEC, || h.sim.tokens_issued() == 1).await;
    assert_eq!(readyz(&h).await.0, StatusCode::OK);

    h.sim.fail_token_requests(Some(TokenFailure::Status(500)));
    tokio::time::sleep(3600 * SEC).await;
    let (code, reason) = readyz(&h).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "the token expired");
    assert!(reason.contains("HTTP 500"), "{reason}");
    assert_eq!(healthz(&h).await, StatusCode::OK);

    h.sim.fail_token_requests(None);
    eventually(120 * SEC, || h.sim.tokens_issued() == 2).await;
    assert_eq!(readyz(&h).await.0, StatusCode::OK);

    let slow = tokio::spawn({
        let (client, url) = (client.clone(), h.url("/sim/slow/5000"));
        async move { send(&client, get(&url)).await.0.status() }
    });
    eventually(SEC, || h.sim.api_started() == 1).await;
    h.begin_stop();
    assert_eq!(
        readyz(&h).await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining".to_owned())
    );
    assert_eq!(healthz(&h).await, StatusCode::OK);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    h.stop().await;
}

/// `fitbit_proxy_task_restarts_total{task="token_refresher"}`.
async fn refresher_restarts(h: &Harness) -> u64 {
    let (_, body) = send(&http1_client(), get(&h.admin_url("/metrics"))).await;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("fitbit_proxy_task_restarts_total{task=\"token_refresher\"} "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the refresher's restart counter")
}

/// A panic in the token refresher (5.11), injected through the
/// `token_refresher` failpoint (src/failpoints.rs): the upstream revokes the
/// token, a request's 401 wakes the refresher, and it panics before
/// fetching. The panic is counted; with no valid token `/readyz` is 503;
/// the refresher is restarted 1 s later and fetches at once (2 s here), so
/// readiness is back 3 s after the panic, and the request that was waiting
/// for the new token is served with it.
#[tokio::test(start_paused = true)]
async fn a_panic_in_the_token_refresher_is_restarted_and_readiness_follows() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    let readyz = || {
        let (client, url) = (client.clone(), h.admin_url("/readyz"));
        async move { get_status(&client, &url).await }
    };
    eventually(10 * SEC, || h.sim.tokens_issued() == 1).await;
    assert_eq!(readyz().await, StatusCode::OK);
    assert_eq!(refresher_restarts(&h).await, 0);

    let token_url = h.config.credentials.token_url.to_string();
    fitbit_proxy::ops::failpoints::once("token_refresher", token_url, || {
        panic!("injected panic in the token refresher")
    });
    h.sim.set_token_delay(2 * SEC);
    h.sim.revoke_all();
    let waiting = spawn_get(&client, h.url("/1/x"));
    eventually_async(5 * SEC, || async { refresher_restarts(&h).await == 1 }).await;
    let panicked = tokio::time::Instant::now();
    assert_eq!(
        readyz().await,
        StatusCode::SERVICE_UNAVAILABLE,
        "no valid token while the refresher is down"
    );
    eventually_async(10 * SEC, || async { readyz().await == StatusCode::OK }).await;
    let back = panicked.elapsed();
    // The panic is seen by polling the metrics, a moment after it
    // happened: "3 s after" reads as a little under 3 s from there.
    assert!(
        (SEC * 5 / 2..=4 * SEC).contains(&back),
        "ready again {back:?} after the panic"
    );
    assert_eq!(waiting.await.unwrap(), StatusCode::OK);
    assert_eq!(h.sim.tokens_issued(), 2);
    assert_eq!(refresher_restarts(&h).await, 1);
    h.finish().await;
}

/// A restart fetches the token again and nothing persists (5.06): a run
/// fetches its token at start-up, once; after a clean stop nothing under its
/// working or temporary directory holds the token; a restart fetches a new
/// one (nothing was persisted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fetches_the_token_again_and_nothing_is_left_on_disk() {
    let (sim, upstream) = simulator().await;
    let cwd = tempfile::tempdir().unwrap();
    for run in 1..=2 {
        let launch = Launch {
            cwd: Some(cwd.path().to_owned()),
            ..Launch::default()
        };
        let p = launch.start(&upstream).await;
        assert_eq!(sim.token_fetches(), run, "one fetch at start-up");
        let (res, _) = send(&http1_client(), get(&format!("http://{}/1/x", p.proxy))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let token = sim.current_token().expect("a token");
        p.child.sigterm();
        let out = p.child.exited().await;
        assert_eq!(out.status.code(), Some(0));
        for dir in [cwd.path(), p.dir.path()] {
            assert!(
                !any_file_contains(dir, &token),
                "the token was written under {dir:?}"
            );
            assert!(!any_file_contains(dir, "TOKEN_CANARY"), "{dir:?}");
        }
        assert_no_canary("logs", &out.stderr);
    }
    assert_eq!(sim.tokens_issued(), 2);
}

/// Panics stay local (5.11): a service that panics on one path, served
/// through the public `inbound::serve`. The panic ends only its own
/// connection (HTTP/1) or stream (HTTP/2: hyper runs each stream as a task);
/// the other stream on the same h2 connection and every other connection are
/// served, and the listener keeps accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_request_stays_in_its_connection() {
    async fn service(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
        if req.uri().path() == "/panic" {
            panic!("a bug in one request");
        }
        Ok(Response::new(Body::full("fine")))
    }
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new(sim_config());
    let (upstream, _) = serve(&sim, Transport::Plain).await;
    let config = parse_config(
        &config_toml(&upstream, None, &Extras::default()),
        dir.path(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // The listener wants named (Unpin) futures, as the stack's are.
        let service = tower::service_fn(|req| Box::pin(service(req)));
        let metrics = Arc::new(Metrics::new());
        let refused = fitbit_proxy::stack::refusal(Arc::clone(&metrics));
        let listen = &config.listen;
        let serving = fitbit_proxy::inbound::Serving {
            service,
            refused,
            metrics,
            answers: Answers::default(),
            workers: None,
        };
        fitbit_proxy::inbound::serve(listener, serving, listen, None, async {
            let _ = stopped.await;
        })
        .await;
    });
    for client in [http1_client(), h2c_client()] {
        let panicked = client.request(get(&format!("http://{addr}/panic"))).await;
        assert!(panicked.is_err(), "a panicking request got an answer");
        let (res, body) = send(&client, get(&format!("http://{addr}/fine"))).await;
        assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"fine"[..]));
    }
    let (res, _) = send(&http1_client(), get(&format!("http://{addr}/again"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!server.is_finished(), "the listener stopped");
    let _ = stop.send(());
    tokio::time::timeout(10 * SEC, server)
        .await
        .unwrap()
        .unwrap();
}
