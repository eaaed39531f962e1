//! Callers (SPEC §13, C1–C3) through the proxy against the simulator: the
//! caller header is read, checked and never forwarded; per-caller metrics
//! stay within `max_callers` series and add up to the totals; and the
//! pacing line shares the slots fairly among callers (start-time fair
//! queuing) without an upstream 429. Time is tokio's paused clock.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fitbit_proxy::sim::{Dialect, Reset, SimConfig};
use http::{HeaderValue, StatusCode};
use prometheus_parse::{Scrape, Value};
use support::*;

/// The quota of the fairness runs: 60 requests per 30 s window.
const QUOTA: u32 = 60;
const WINDOW: Duration = Duration::from_secs(30);
/// Full windows of the fairness runs, after a first one to settle in.
const WINDOWS: u32 = 4;

fn x_caller(value: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(value).unwrap()
}

async fn metrics(h: &Harness) -> Scrape {
    let (res, body) = send(&http1_client(), get(&h.admin_url("/metrics"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).unwrap();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("exposition parses")
}

/// The value of each sample named `name`, by the value of its label
/// `label` (summed over its other labels).
fn by_label(m: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for s in m.samples.iter().filter(|s| s.metric == name) {
        let v = match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        };
        let key = s.labels.get(label).unwrap_or_default().to_owned();
        *out.entry(key).or_default() += v;
    }
    out
}

fn total(m: &Scrape, name: &str) -> f64 {
    by_label(m, name, "").values().sum()
}

/// The number of requests counted by a histogram (`…_count`), by caller.
fn histogram_counts(m: &Scrape, name: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for s in m.samples.iter().filter(|s| s.metric == name) {
        let Value::Histogram(buckets) = &s.value else {
            panic!("{name}: {:?}", s.value);
        };
        let count = buckets.iter().map(|b| b.count).fold(0.0, f64::max);
        let key = s.labels.get("caller").unwrap_or_default().to_owned();
        *out.entry(key).or_default() += count as u64;
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_caller_header_is_never_forwarded_and_a_bad_one_falls_back_counted() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    let huge = vec![b'a'; 10 * 1024];
    let cases: [(&str, Vec<&[u8]>); 5] = [
        ("named", vec![b"billing"]),
        ("none", vec![]),
        ("huge", vec![&huge]),
        ("control", vec![b"bill\ting"]),
        ("twice", vec![b"billing", b"reports"]),
    ];
    for (path, values) in &cases {
        let mut req = get(&h.url(&format!("/1/{path}")));
        for v in values {
            req.headers_mut().append("x-caller", x_caller(v));
        }
        let (res, _) = send(&client, req).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}: never an error");
    }
    let received = h.sim.received();
    assert_eq!(received.len(), cases.len());
    for r in &received {
        assert!(
            r.headers.get("x-caller").is_none(),
            "{}: {:?}",
            r.path,
            r.headers
        );
    }
    let m = metrics(&h).await;
    assert_eq!(total(&m, "fitbit_proxy_caller_header_invalid_total"), 3.0);
    let requests = by_label(&m, "fitbit_proxy_caller_requests_total", "caller");
    let want: BTreeMap<String, f64> =
        [("billing".to_owned(), 1.0), ("127.0.0.1".to_owned(), 4.0)].into();
    assert_eq!(requests, want);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn another_header_or_none_names_callers_as_configured() {
    let h = Setup::default()
        .admin()
        .callers("header = \"x-service\"")
        .start()
        .await;
    let client = http1_client();
    for (name, value) in [("x-service", "billing"), ("x-caller", "reports")] {
        let mut req = get(&h.url("/1/x"));
        req.headers_mut().insert(name, x_caller(value.as_bytes()));
        assert_eq!(send(&client, req).await.0.status(), StatusCode::OK);
    }
    let received = h.sim.received();
    assert!(received[0].headers.get("x-service").is_none());
    // Not the configured header: an ordinary header, passed on.
    assert_eq!(received[1].headers["x-caller"], "reports");
    let requests = by_label(
        &metrics(&h).await,
        "fitbit_proxy_caller_requests_total",
        "caller",
    );
    let want: BTreeMap<String, f64> =
        [("billing".to_owned(), 1.0), ("127.0.0.1".to_owned(), 1.0)].into();
    assert_eq!(requests, want);
    h.stop().await;

    let h = Setup::default()
        .admin()
        .callers("header = \"\"")
        .start()
        .await;
    let mut req = get(&h.url("/1/x"));
    req.headers_mut().insert("x-caller", x_caller(b"billing"));
    assert_eq!(send(&http1_client(), req).await.0.status(), StatusCode::OK);
    // Source addresses only: the header is the client's own business.
    assert_eq!(h.sim.received()[0].headers["x-caller"], "billing");
    let requests = by_label(
        &metrics(&h).await,
        "fitbit_proxy_caller_requests_total",
        "caller",
    );
    assert_eq!(requests.keys().collect::<Vec<_>>(), ["127.0.0.1"]);
    h.stop().await;
}

/// 10,000 distinct caller names: each per-caller metric has at most
/// `max_callers + 1` series (the first names seen, then `other`), and the
/// per-caller series add up to the totals.
#[tokio::test(start_paused = true)]
async fn ten_thousand_caller_names_make_at_most_max_callers_plus_one_series() {
    const MAX: usize = 50;
    const NAMES: usize = 10_000;
    const CLIENTS: usize = 8;
    let h = Setup::default()
        .admin()
        .callers(&format!("max_callers = {MAX}"))
        .start()
        .await;
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (next, url) = (Arc::clone(&next), h.url("/1/many"));
        tasks.push(tokio::spawn(async move {
            let client = http1_client();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= NAMES {
                    break;
                }
                let mut req = get(&url);
                req.headers_mut()
                    .insert("x-caller", x_caller(format!("svc-{n}").as_bytes()));
                assert_eq!(send(&client, req).await.0.status(), StatusCode::OK);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let m = metrics(&h).await;
    for name in [
        "fitbit_proxy_caller_requests_total",
        "fitbit_proxy_caller_sent_total",
    ] {
        let series = by_label(&m, name, "caller");
        assert_eq!(series.len(), MAX + 1, "{name}");
        assert!(series.contains_key("other"), "{name}");
        assert_eq!(series.values().sum::<f64>(), NAMES as f64, "{name}");
    }
    let waits = histogram_counts(&m, "fitbit_proxy_caller_pacing_wait_seconds");
    assert_eq!(waits.len(), MAX + 1);
    assert_eq!(waits.values().sum::<u64>(), NAMES as u64);
    assert_eq!(total(&m, "fitbit_proxy_requests_total"), NAMES as f64);
    assert_eq!(total(&m, "fitbit_proxy_caller_header_invalid_total"), 0.0);
    // Every line of the exposition is within the bound too.
    let callers: BTreeSet<&str> = m
        .samples
        .iter()
        .filter_map(|s| s.labels.get("caller"))
        .collect();
    assert_eq!(callers.len(), MAX + 1);
    h.stop().await;
}

/// What one fairness run saw.
struct Run {
    /// Requests the upstream accepted per caller, in the measured windows.
    shares: BTreeMap<String, u32>,
    /// The same by caller and replica (0 for the first proxy).
    by_replica: BTreeMap<(String, usize), u32>,
    /// Accepted in each measured window, all callers together.
    per_window: Vec<u32>,
    upstream_429: u64,
    /// The proxy's own refusals, per caller.
    refused: BTreeMap<String, usize>,
    metrics: Scrape,
}

impl Run {
    fn share(&self, caller: &str) -> f64 {
        let all: u32 = self.shares.values().sum();
        f64::from(self.shares.get(caller).copied().unwrap_or(0)) / f64::from(all)
    }
}

/// Callers `(name, clients)` each with `clients` loops sending one request
/// after another (a refusal is retried after a second), for a settling
/// window and `WINDOWS` more; the upstream allows `QUOTA` per `WINDOW`.
async fn compete(callers: &[(&'static str, usize)], settings: &str) -> Run {
    compete_in(callers, settings, Dialect::Fitbit, 1).await
}

/// [`compete`] with the upstream speaking `headers` (the proxy configured
/// for it), through `proxies` replicas sharing the quota
/// (`rate_limit.replicas`), each with all the callers' clients.
async fn compete_in(
    callers: &[(&'static str, usize)],
    settings: &str,
    headers: Dialect,
    proxies: u32,
) -> Run {
    let reset = headers
        .reset()
        .map(|r| format!("reset = \"{}\"\n", r.name()))
        .unwrap_or_default();
    let rate_limit = format!(
        "headers = \"{}\"\n{reset}quota = {QUOTA}\nwindow = \"30s\"\nburst = 2\nmax_wait = \"120s\"\nmax_queued = 1000\nreplicas = {proxies}",
        headers.name()
    );
    let h = Setup::default()
        .admin()
        .sim(SimConfig {
            quota: QUOTA,
            window: WINDOW,
            token_lifetime: Some(Duration::from_secs(28800)),
            headers,
            ..sim_config()
        })
        .rate_limit(&rate_limit)
        .callers(settings)
        .start()
        .await;
    let mut addrs = vec![h.proxy];
    let mut _replicas = Vec::new();
    for _ in 1..proxies {
        let extras = Extras {
            rate_limit: rate_limit.clone(),
            callers: settings.to_owned(),
            ..Extras::default()
        };
        let toml = config_toml(&h.upstream, None, &extras);
        let (addr, stop, task) = spawn_proxy(parse_config(&toml, h.dir.path()), None).await;
        addrs.push(addr);
        _replicas.push((stop, task));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for (p, proxy) in addrs.iter().enumerate() {
        for &(name, clients) in callers {
            for c in 0..clients {
                let url = format!("http://{proxy}/1/load/{name}/{p}/{c}");
                let stop = Arc::clone(&stop);
                tasks.push(tokio::spawn(async move {
                    let client = http1_client();
                    let mut refused = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let mut req = get(&url);
                        req.headers_mut()
                            .insert("x-caller", x_caller(name.as_bytes()));
                        let (res, _) = send(&client, req).await;
                        if res.status() != StatusCode::OK {
                            assert_eq!(proxy_error(&res), Some("rate_limited"), "{res:?}");
                            refused += 1;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                    (name, refused)
                }));
            }
        }
    }
    tokio::time::sleep(WINDOW * (WINDOWS + 1)).await;
    stop.store(true, Ordering::Relaxed);
    let mut refused = BTreeMap::new();
    for t in tasks {
        let (name, n) = t.await.unwrap();
        *refused.entry(name.to_owned()).or_default() += n;
    }
    let seen = h.sim.received();
    let start = seen[0].at + WINDOW;
    let mut shares = BTreeMap::new();
    let mut by_replica = BTreeMap::new();
    let mut per_window = vec![0; WINDOWS as usize];
    for r in seen
        .iter()
        .filter(|r| r.status == StatusCode::OK && r.at >= start)
    {
        let window = ((r.at - start).as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        if window >= per_window.len() {
            continue;
        }
        per_window[window] += 1;
        let caller = r.path.split('/').nth(3).unwrap().to_owned();
        let replica: usize = r.path.split('/').nth(4).unwrap().parse().unwrap();
        *by_replica.entry((caller.clone(), replica)).or_default() += 1;
        *shares.entry(caller).or_default() += 1;
    }
    let run = Run {
        shares,
        by_replica,
        per_window,
        upstream_429: h.sim.rate_limited(),
        refused,
        metrics: metrics(&h).await,
    };
    // Quota spent per caller, as the (first) proxy's metrics count it,
    // is what the upstream received from it through that proxy.
    let sent = by_label(&run.metrics, "fitbit_proxy_caller_sent_total", "caller");
    for &(name, _) in callers {
        let received = seen
            .iter()
            .filter(|r| r.path.starts_with(&format!("/1/load/{name}/0/")))
            .count();
        assert_eq!(sent.get(name).copied(), Some(received as f64), "{name}");
    }
    let refusals = by_label(
        &run.metrics,
        "fitbit_proxy_caller_paced_rejections_total",
        "caller",
    );
    assert_eq!(
        refusals.values().sum::<f64>(),
        total(&run.metrics, "fitbit_proxy_paced_rejections_total")
    );
    h.stop().await;
    eprintln!(
        "shares {:?} per window {:?} refused {:?} upstream 429s {}",
        run.shares, run.per_window, run.refused, run.upstream_429
    );
    run
}

/// Equal weights: the caller with one client gets half the slots while it
/// asks, though the other has twelve clients waiting (in arrival order it
/// would get about 1 in 13).
#[tokio::test(start_paused = true)]
async fn one_client_gets_its_fair_half_against_twelve() {
    let run = compete(&[("many", 12), ("one", 1)], "").await;
    assert_eq!(run.upstream_429, 0);
    assert!(run.share("one") >= 0.45, "{:?}", run.shares);
    for (i, n) in run.per_window.iter().enumerate() {
        assert!(*n * 100 >= QUOTA * 95, "window {i}: {n} of {QUOTA}");
    }
}

/// Weights 3:1, both callers saturating: 75 % and 25 % of the slots.
#[tokio::test(start_paused = true)]
async fn weights_3_to_1_share_the_slots_75_25() {
    let run = compete(
        &[("billing", 6), ("reports", 6)],
        "weights = { billing = 3, reports = 1 }",
    )
    .await;
    assert_eq!(run.upstream_429, 0);
    let billing = run.share("billing");
    assert!((billing - 0.75).abs() <= 0.05, "{:?}", run.shares);
    assert!(
        (run.share("reports") - 0.25).abs() <= 0.05,
        "{:?}",
        run.shares
    );
}

/// A caller alone uses the whole window: nothing is held back for callers
/// that are not asking (here one of a higher weight, configured but idle).
#[tokio::test(start_paused = true)]
async fn a_lone_caller_uses_the_whole_window() {
    let run = compete(&[("alone", 12)], "weights = { idle = 5 }").await;
    assert_eq!(run.upstream_429, 0);
    for (i, n) in run.per_window.iter().enumerate() {
        assert!(*n * 100 >= QUOTA * 95, "window {i}: {n} of {QUOTA}");
    }
}

/// The fair line in every rate-limit dialect: the caller with one client
/// gets its half against twelve, with no upstream 429.
#[tokio::test(start_paused = true)]
async fn the_line_is_fair_in_every_dialect() {
    for headers in [
        Dialect::Ietf,
        Dialect::RateLimit(Reset::Epoch),
        Dialect::XRateLimit(Reset::Delta),
        Dialect::XRateLimitDash(Reset::Epoch),
        Dialect::None,
    ] {
        let run = compete_in(&[("many", 12), ("one", 1)], "", headers, 1).await;
        assert_eq!(run.upstream_429, 0, "{headers:?}");
        assert!(run.share("one") >= 0.45, "{headers:?}: {:?}", run.shares);
    }
}

/// With replicas sharing the quota (`rate_limit.replicas = 2`), each
/// replica's line is fair on its own: the caller with one client on each
/// gets half of each replica's share.
#[tokio::test(start_paused = true)]
async fn each_replica_is_fair_on_its_own() {
    let run = compete_in(&[("many", 12), ("one", 1)], "", Dialect::Fitbit, 2).await;
    assert_eq!(run.upstream_429, 0);
    for replica in 0..2 {
        let of = |caller: &str| f64::from(run.by_replica[&(caller.to_owned(), replica)]);
        let share = of("one") / (of("one") + of("many"));
        assert!(share >= 0.45, "replica {replica}: {:?}", run.by_replica);
    }
    for (i, n) in run.per_window.iter().enumerate() {
        assert!(*n * 100 >= QUOTA * 95, "window {i}: {n} of {QUOTA}");
    }
}
