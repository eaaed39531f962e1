//! Pacing (SPEC P1–P9) through the proxy against the simulator, with
//! saturating demand over several quota windows. Time is tokio's paused
//! clock: minutes of quota windows run in a second of wall clock.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fitbit_proxy::sim::{Received, SimConfig};
use http::StatusCode;
use support::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const QUOTA: u32 = 30;
const WINDOW: Duration = Duration::from_secs(60);
const BURST: u32 = 5;

fn sim(quota: u32, window: Duration) -> SimConfig {
    SimConfig {
        quota,
        window,
        token_lifetime: Some(Duration::from_secs(28800)),
        ..sim_config()
    }
}

fn rate_limit(max_wait: &str, max_queued: u32) -> String {
    format!("hourly_quota = {QUOTA}\nburst = {BURST}\nmax_wait = \"{max_wait}\"\nmax_queued = {max_queued}\nreset_margin = \"2s\"")
}

async fn paced_proxy(max_wait: &str, max_queued: u32) -> Harness {
    Setup::default()
        .sim(sim(QUOTA, WINDOW))
        .rate_limit(&rate_limit(max_wait, max_queued))
        .start()
        .await
}

/// Sends the burst's requests, so that the next ones wait for the pace.
async fn spend_the_burst(h: &Harness) {
    let client = http1_client();
    for _ in 0..BURST {
        assert_eq!(get_status(&client, &h.url("/1/warm")).await, StatusCode::OK);
    }
}

/// `clients` loops, each sending one request after another for `duration`;
/// a proxy refusal is retried after its Retry-After (at most a second).
async fn saturate(h: &Harness, clients: usize, duration: Duration) {
    let passed_on = saturate_all(&[h.proxy], clients, duration).await;
    assert_eq!(passed_on, 0, "an upstream 429 reached the client");
}

/// `saturate` through several proxies at once, `clients` loops each;
/// returns how many upstream 429s the proxies passed on.
async fn saturate_all(
    proxies: &[std::net::SocketAddr],
    clients: usize,
    duration: Duration,
) -> usize {
    let stop = Arc::new(AtomicBool::new(false));
    let passed_on = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients * proxies.len() {
        let url = format!("http://{}/1/load/{c}", proxies[c % proxies.len()]);
        let stop = Arc::clone(&stop);
        let passed_on = Arc::clone(&passed_on);
        tasks.push(tokio::spawn(async move {
            let client = http1_client();
            while !stop.load(Ordering::Relaxed) {
                let (res, _) = send(&client, get(&url)).await;
                if res.status() != StatusCode::OK {
                    assert_eq!(
                        res.status(),
                        StatusCode::TOO_MANY_REQUESTS,
                        "unexpected answer"
                    );
                    if proxy_error(&res) != Some("rate_limited") {
                        passed_on.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    passed_on.load(Ordering::Relaxed)
}

/// The simulator's windows (aligned to its first spend), with the
/// accepted requests of each full window.
fn windows(seen: &[Received], window: Duration, full: usize) -> Vec<Vec<Instant>> {
    let start = seen.first().expect("traffic reached the upstream").at;
    let mut out = vec![Vec::new(); full];
    for r in seen.iter().filter(|r| r.status == StatusCode::OK) {
        let i = ((r.at - start).as_secs_f64() / window.as_secs_f64()) as usize;
        if i < full {
            out[i].push(r.at);
        }
    }
    out
}

/// P1–P3 for each full window: no upstream 429, ≥ 95 % used, and no
/// quarter holds more than its share plus the burst.
fn assert_paced(h: &Harness, used_by_others: u32) {
    assert_eq!(h.sim.rate_limited(), 0, "upstream 429s");
    let seen = h.sim.received();
    let start = seen[0].at;
    for (i, sent) in windows(&seen, WINDOW, 4).iter().enumerate() {
        let available = QUOTA - used_by_others;
        let used = sent.len() as u32;
        assert!(
            used * 100 >= available * 95,
            "window {i}: {used} of {available} used"
        );
        let window_start = start + WINDOW * i as u32;
        // Each window opens with its burst (a margin after the reset).
        let opening = sent
            .iter()
            .filter(|at| **at < window_start + Duration::from_secs(4))
            .count() as u32;
        assert!(
            opening >= BURST.min(available),
            "window {i}: only {opening} sent at its opening"
        );
        let mut quarters = [0u32; 4];
        for at in sent {
            quarters
                [((*at - window_start).as_secs_f64() / (WINDOW.as_secs_f64() / 4.0)) as usize] += 1;
        }
        for (q, n) in quarters.iter().enumerate() {
            assert!(
                *n <= available / 4 + BURST + 1,
                "window {i} quarter {q}: {n} requests ({quarters:?})"
            );
        }
    }
}

/// Five windows of saturating demand with the upstream's `remaining`
/// reported `lag` requests high: P1–P3 hold in each full window.
async fn five_paced_windows(lag: u32) {
    let h = paced_proxy("30s", 1000).await;
    h.sim.set_reported_lag(lag);
    saturate(&h, 8, WINDOW * 5).await;
    assert_paced(&h, 0);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn spends_each_window_fully_and_evenly_without_an_upstream_429() {
    five_paced_windows(0).await;
}

#[tokio::test(start_paused = true)]
async fn headers_that_lag_by_five_cause_no_429() {
    five_paced_windows(5).await;
}

#[tokio::test(start_paused = true)]
async fn another_consumer_of_the_quota_slows_the_proxy_down() {
    let h = paced_proxy("30s", 1000).await;
    // Another consumer spends 10 a window, a quarter into each window.
    let sim = h.sim.clone();
    let other = tokio::spawn(async move {
        tokio::time::sleep(WINDOW / 4).await;
        for _ in 0..6 {
            sim.spend_quota(10);
            tokio::time::sleep(WINDOW).await;
        }
    });
    saturate(&h, 8, WINDOW * 5).await;
    other.abort();
    assert_eq!(h.sim.rate_limited(), 0, "upstream 429s");
    let seen = h.sim.received();
    for (i, sent) in windows(&seen, WINDOW, 4).iter().enumerate().skip(1) {
        let used = sent.len() as u32;
        assert!(
            used <= QUOTA - 10,
            "window {i}: {used} sent while another consumer spent 10"
        );
        assert!(
            used * 100 >= (QUOTA - 10) * 90,
            "window {i}: only {used} of {} used",
            QUOTA - 10
        );
    }
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_served_in_arrival_order() {
    let h = paced_proxy("120s", 1000).await;
    // Spend the burst, so that the rest queue behind the pace.
    spend_the_burst(&h).await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let url = h.url(&format!("/1/order/{i:02}"));
        tasks.push(spawn_get(&http1_client(), url));
        // Let it reach the line before the next one arrives.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let order: Vec<String> = h
        .sim
        .received()
        .into_iter()
        .map(|r| r.path)
        .filter(|p| p.starts_with("/1/order/"))
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_slot_beyond_max_wait_is_refused_at_once_and_never_sent() {
    let h = paced_proxy("5s", 1000).await;
    spend_the_burst(&h).await;
    let client = http1_client();
    // The pace is now 2 s a request: two waiting put a third 6 s away.
    let mut waiting = Vec::new();
    for i in 0..2 {
        let url = h.url(&format!("/1/wait/{i}"));
        waiting.push(spawn_get(&http1_client(), url));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    let (res, body) = send(&client, get(&h.url("/1/too-far"))).await;
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "refused after {:?}",
        started.elapsed()
    );
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(proxy_error(&res), Some("rate_limited"));
    assert_fitbit_error(&body, "rate_limited");
    let retry = number(&res, "retry-after");
    assert!((5..=8).contains(&retry), "retry-after {retry}");
    assert_eq!(res.headers()["fitbit-rate-limit-limit"], "30");
    let remaining = number(&res, "fitbit-rate-limit-remaining");
    assert!(remaining <= 25, "remaining {remaining}");
    assert!(res.headers().contains_key("fitbit-rate-limit-reset"));
    for t in waiting {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert!(
        h.sim.received().iter().all(|r| r.path != "/1/too-far"),
        "a refused request reached the upstream"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn past_max_queued_is_503_and_a_client_that_gives_up_frees_its_place() {
    let h = paced_proxy("60s", 2).await;
    spend_the_burst(&h).await;
    let client = http1_client();
    let first = spawn_get(&http1_client(), h.url("/1/q/0"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let quitter = spawn_get(&http1_client(), h.url("/1/q/quitter"));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (res, body) = send(&client, get(&h.url("/1/q/full"))).await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(proxy_error(&res), Some("queue_full"));
    assert_fitbit_error(&body, "queue_full");
    assert!(res.headers().contains_key("retry-after"));
    // The quitter hangs up; its place is free again.
    quitter.abort();
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (res, _) = send(&client, get(&h.url("/1/q/after"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    let paths: Vec<String> = h.sim.received().into_iter().map(|r| r.path).collect();
    assert!(
        !paths
            .iter()
            .any(|p| p == "/1/q/full" || p == "/1/q/quitter"),
        "{paths:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn after_an_upstream_429_nothing_is_sent_until_the_reset() {
    let h = paced_proxy("120s", 1000).await;
    let client = http1_client();
    assert_eq!(
        send(&client, get(&h.url("/1/first"))).await.0.status(),
        StatusCode::OK
    );
    // Someone else empties the window behind the proxy's back.
    h.sim.spend_quota(QUOTA);
    let (res, _) = send(&client, get(&h.url("/1/rejected"))).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        proxy_error(&res),
        None,
        "the upstream's own 429 is passed through"
    );
    let rejected_at = h.sim.received().last().unwrap().at;
    let first_at = h.sim.received()[0].at;
    // Keep asking: nothing goes out before the reset plus the margin.
    saturate(&h, 4, WINDOW * 2).await;
    let seen = h.sim.received();
    let next = seen
        .iter()
        .find(|r| r.at > rejected_at)
        .expect("sending resumed");
    assert!(
        next.at >= first_at + WINDOW + Duration::from_secs(2),
        "sent {:?} after the 429",
        next.at - rejected_at
    );
    assert_eq!(h.sim.rate_limited(), 1, "only the one 429");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn gone_is_passed_through_and_malformed_headers_are_ignored() {
    let h = paced_proxy("30s", 1000).await;
    let client = http1_client();
    let (res, body) = send(&client, get(&h.url("/sim/status/410"))).await;
    assert_eq!(res.status(), StatusCode::GONE);
    assert_eq!(proxy_error(&res), None);
    assert!(!body.is_empty());
    assert_eq!(
        send(&client, get(&h.url("/1/after-gone"))).await.0.status(),
        StatusCode::OK
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_window_keeps_its_burst_when_its_first_answer_replans_the_pace() {
    // Two clients cannot use a burst of five at once: the first answers
    // teach the window's length and re-plan the pace, which must keep the
    // burst's remaining cells instead of draining them.
    let h = paced_proxy("30s", 1000).await;
    saturate(&h, 2, WINDOW * 3).await;
    assert_eq!(h.sim.rate_limited(), 0);
    let seen = h.sim.received();
    let start = seen[0].at;
    for (i, sent) in windows(&seen, WINDOW, 2).iter().enumerate().skip(1) {
        let window_start = start + WINDOW * i as u32;
        let opening = sent
            .iter()
            .filter(|at| **at < window_start + Duration::from_secs(4))
            .count() as u32;
        assert!(
            opening >= BURST,
            "window {i}: {opening} at its opening, burst {BURST}"
        );
        assert!(
            sent.len() as u32 * 100 >= QUOTA * 95,
            "window {i}: {} used",
            sent.len()
        );
    }
    h.stop().await;
}

/// Another proxy with the same client id in front of `h`'s simulator; it
/// runs while the returned handles are held.
async fn replica(
    h: &Harness,
    rate_limit: String,
) -> (SocketAddr, (oneshot::Sender<()>, JoinHandle<()>)) {
    let extras = Extras {
        rate_limit,
        ..Extras::default()
    };
    let toml = config_toml(&h.upstream, None, &extras);
    let (addr, stop, task) = spawn_proxy(parse_config(&toml, h.dir.path()), None).await;
    (addr, (stop, task))
}

/// `proxies` proxies in front of one simulator with one client id, each
/// told `replicas`: the harness (the first proxy), every proxy's address,
/// and what keeps the others running.
async fn sharing_one_quota(
    proxies: usize,
    replicas: u32,
) -> (
    Harness,
    Vec<SocketAddr>,
    Vec<(oneshot::Sender<()>, JoinHandle<()>)>,
) {
    let shared = format!("{}\nreplicas = {replicas}", rate_limit("30s", 1000));
    let h = Setup::default()
        .sim(sim(QUOTA, WINDOW))
        .rate_limit(&shared)
        .start()
        .await;
    let mut addrs = vec![h.proxy];
    let mut others = Vec::new();
    for _ in 1..proxies {
        let (addr, running) = replica(&h, shared.clone()).await;
        addrs.push(addr);
        others.push(running);
    }
    (h, addrs, others)
}

/// Accepted requests of each full window, by replica (`saturate_all`
/// sends client `c` through proxy `c % replicas`, path `/1/load/{c}`).
fn per_replica(seen: &[Received], replicas: usize, full: usize) -> Vec<Vec<u32>> {
    let start = seen.first().expect("traffic reached the upstream").at;
    let mut out = vec![vec![0; replicas]; full];
    for r in seen.iter().filter(|r| r.status == StatusCode::OK) {
        let i = ((r.at - start).as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        let c: usize = r.path.rsplit('/').next().unwrap().parse().unwrap();
        if i < full {
            out[i][c % replicas] += 1;
        }
    }
    out
}

/// Several replicas sharing one quota (4.17): three proxies with the same
/// client id and `replicas = 3` in front of one quota, saturating demand
/// through each for five windows: each keeps to its share (30 / 3 = 10 a
/// window), so the simulator answers no 429 at all, and the three shares fill
/// every window.
#[tokio::test(start_paused = true)]
async fn three_replicas_sharing_one_quota_use_it_all_without_an_upstream_429() {
    let (h, proxies, _others) = sharing_one_quota(3, 3).await;
    let passed_on = saturate_all(&proxies, 4, WINDOW * 5).await;
    assert_eq!(h.sim.rate_limited(), 0, "upstream 429s");
    assert_eq!(passed_on, 0);
    let windows = per_replica(&h.sim.received(), 3, 4);
    println!("requests per window and replica, replicas = 3: {windows:?} of {QUOTA}");
    for (i, by_replica) in windows.iter().enumerate() {
        let used: u32 = by_replica.iter().sum();
        assert!(used * 100 >= QUOTA * 95, "window {i}: {used} of {QUOTA}");
        assert!(
            by_replica.iter().all(|n| (1..=QUOTA / 3).contains(n)),
            "window {i}: {by_replica:?}, a share is {}",
            QUOTA / 3
        );
    }
    h.stop().await;
}

/// Several replicas sharing one quota (4.17), the trade-off: with one of
/// three replicas idle, the other two still keep to their shares. No upstream
/// 429, and a third of the quota goes unused (the price of not coordinating;
/// see `pacing::budget`).
#[tokio::test(start_paused = true)]
async fn with_one_replica_idle_the_others_keep_to_their_shares() {
    let (h, proxies, _others) = sharing_one_quota(2, 3).await;
    saturate_all(&proxies, 4, WINDOW * 3).await;
    assert_eq!(h.sim.rate_limited(), 0, "upstream 429s");
    let windows = per_replica(&h.sim.received(), 2, 2);
    println!("requests per window, two of three replicas busy: {windows:?}");
    assert!(
        windows.iter().flatten().all(|n| *n == QUOTA / 3),
        "{windows:?}"
    );
    h.stop().await;
}

/// Several replicas sharing one quota (4.17), misconfigured: two proxies on
/// one quota, each left at `replicas = 1`. Each counts only its own requests
/// and learns the other's from the headers (P6); both go for a window's last
/// units, so about one upstream 429 a window gets through. Pinned so that the
/// cost of forgetting the key stays known: every 429 is passed on and
/// honoured (P5), the quota is used.
#[tokio::test(start_paused = true)]
async fn two_proxies_left_at_one_replica_let_a_429_a_window_through() {
    let (h, proxies, _others) = sharing_one_quota(2, 1).await;
    let passed_on = saturate_all(&proxies, 4, WINDOW * 5).await;
    let rejected = h.sim.rate_limited();
    println!("replicas = 1 on two proxies: upstream 429s over 5 windows: {rejected}");
    assert_eq!(
        rejected as usize, passed_on,
        "every upstream 429 is passed on (P5)"
    );
    assert!(rejected <= 2 * 5, "{rejected} upstream 429s");
    for (i, by_replica) in per_replica(&h.sim.received(), 2, 4).iter().enumerate() {
        let used: u32 = by_replica.iter().sum();
        assert!(
            used <= QUOTA && used * 100 >= QUOTA * 80,
            "window {i}: {used}"
        );
        assert!(
            by_replica.iter().all(|n| *n > 0),
            "window {i}: {by_replica:?}"
        );
    }
    h.stop().await;
}
