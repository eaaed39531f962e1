//! Shutdown: SIGTERM with requests in flight (5.01) and under load
//! (5.02), requests waiting for a pacing slot (5.03), the grace running
//! out (5.04), and draining that waits only for requests.

use std::collections::BTreeSet;
use std::time::Duration;

use fitbit_proxy::sim::{Sim, SimConfig};
use http::{Request, StatusCode};
use http_body_util::Full;

use super::SEC;
use crate::support::binary::*;
use crate::support::*;

fn id_of(v: &serde_json::Value) -> String {
    v["request_id"].as_str().unwrap_or_default().to_owned()
}

/// SIGTERM under load loses nothing accepted (5.02): eight clients (h1 and
/// h2c) send requests back to back, each with its own id; SIGTERM lands in
/// the middle. Every request the proxy accepted (one access-log line each)
/// got its complete 200, and every 200 a client got was logged: nothing
/// accepted was lost. The clients stop when a connection is refused, which
/// must come after the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request() {
    let (sim, upstream) = simulator().await;
    let p = Launch::default().start(&upstream).await;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let client = if c % 2 == 0 {
            http1_client()
        } else {
            h2c_client()
        };
        let url = format!("http://{}/sim/slow/50", p.proxy);
        clients.spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0);
            // Bounded: at most 400 requests of 50 ms each.
            for n in 0..400 {
                let id = format!("c{c}-{n}");
                let req = Request::get(&url)
                    .header("x-request-id", &id)
                    .body(Full::default())
                    .unwrap();
                match client.request(req).await {
                    Ok(res) => {
                        let status = res.status();
                        let body = http_body_util::BodyExt::collect(res.into_body()).await;
                        assert!(body.is_ok(), "{id}: an accepted answer was cut short");
                        assert_eq!(status, StatusCode::OK, "{id}");
                        ok.push(id);
                    }
                    Err(e) if e.is_connect() => break,
                    // Sent on a kept-alive connection the proxy was closing.
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    tokio::time::sleep(SEC).await;
    p.child.sigterm();
    let (mut answered, mut unsent) = (BTreeSet::new(), 0);
    while let Some(done) = clients.join_next().await {
        let (ok, failed) = done.unwrap();
        answered.extend(ok);
        unsent += failed;
    }
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    let lines = json_lines(&out);
    let logged: BTreeSet<String> = access_lines(&lines)
        .into_iter()
        .filter(|l| l["path"] == "/sim/slow/50")
        .map(|l| {
            assert_eq!(l["status"], 200, "{l}");
            assert_eq!(l["complete"], true, "{l}");
            id_of(l)
        })
        .collect();
    eprintln!(
        "SIGTERM under load: {} answered, {unsent} not taken on a closing connection",
        answered.len()
    );
    assert!(answered.len() > 20, "load before the signal");
    assert_eq!(logged, answered, "accepted = answered");
    assert_eq!(sim.api_started() as usize, answered.len(), "G6");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_twenty_slow_requests_refuses_new_ones_and_exits_0() {
    let (sim, upstream) = simulator().await;
    let p = Launch::with(Extras::default().listen("shutdown_grace = \"10s\""))
        .start(&upstream)
        .await;
    let client = http1_client();
    let url = format!("http://{}/sim/slow/2000", p.proxy);
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { send(&client, get(&url)).await.0.status() })
        })
        .collect();
    eventually(2 * SEC, || sim.api_started() == 20).await;
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
    let lines = json_lines(&out);
    let access = access_lines(&lines);
    let slow = access
        .iter()
        .filter(|l| l["path"] == "/sim/slow/2000" && l["status"] == 200)
        .count();
    assert_eq!(slow, 20, "each finished request was logged");
}

/// Requests waiting for a pacing slot at shutdown (5.03, decided): a request
/// waiting for a pacing slot when SIGTERM comes is served within
/// `shutdown_grace`, since its slot is at most `rate_limit.max_wait` away and
/// `check` warns when `max_wait` is longer than `shutdown_grace`. Here five
/// requests wait on a 1 request/s pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_pacing_slot_at_sigterm_are_served() {
    let sim = Sim::new(SimConfig {
        quota: 3600,
        ..sim_config()
    });
    let upstream = sim.serve_plain(bind().await);
    let p = Launch::with(
        Extras::default()
            .rate_limit("hourly_quota = 3600\nburst = 1\nmax_wait = \"10s\"")
            .listen("shutdown_grace = \"10s\""),
    )
    .start(&upstream)
    .await;
    let client = http1_client();
    let url = format!("http://{}{}", p.proxy, "/1/user/-/profile.json");
    let waiting: Vec<_> = (0..5)
        .map(|_| tokio::spawn(send_owned(client.clone(), url.clone())))
        .collect();
    // The first is served and the rest queue.
    eventually(10 * SEC, || sim.api_started() >= 1).await;
    p.child.sigterm();
    for w in waiting {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sim.api_started(), 5);
}

async fn send_owned(client: TestClient, url: String) -> StatusCode {
    send(&client, get(&url)).await.0.status()
}

/// Grace period exceeded (5.04): a request that outlasts `shutdown_grace` (1
/// s) is cut: the client sees its connection end without an answer, the
/// process exits 0, and a log line says how many connections were cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_shutdown_grace_remaining_connections_are_cut_and_counted() {
    let (sim, upstream) = simulator().await;
    let p = Launch::with(Extras::default().listen("shutdown_grace = \"1s\""))
        .start(&upstream)
        .await;
    let slow =
        tokio::spawn(http1_client().request(get(&format!("http://{}/sim/slow/60000", p.proxy))));
    eventually(2 * SEC, || sim.api_started() == 1).await;
    assert_eq!(sim.api_started(), 1);
    p.child.sigterm();
    let answer = tokio::time::timeout(30 * SEC, slow).await.unwrap().unwrap();
    assert!(answer.is_err(), "a request past the grace was answered");
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0), "exit 0 after the grace");
    let lines = json_lines(&out);
    let cut = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("shutdown_grace elapsed"))
        })
        .unwrap_or_else(|| panic!("no line about the cut: {lines:#?}"));
    assert_eq!(cut["cut"], 1, "{cut}");
    assert_eq!(cut["level"], "WARN");
}

/// Draining waits for requests, not for connections that never sent one.
#[tokio::test(start_paused = true)]
async fn draining_does_not_wait_for_connections_that_never_sent_a_request() {
    let h = Setup::default().start().await;
    let _silent = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    // Let the proxy accept it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    h.stop().await;
    assert!(
        started.elapsed() < SEC,
        "drain waited {:?}",
        started.elapsed()
    );
}
