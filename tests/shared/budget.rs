//! One quota for replicas sharing a budget through a real `redis-server`
//! (the shared budget and its faults): under demand on some replicas, and demand that moves,
//! the group uses every full window and causes no upstream 429; a learned
//! window length that is short does not drift the windows into a 429; with Redis
//! stopped mid-window, then killed and restarted, every answer is the
//! upstream's or the proxy's own with `Retry-After`, `/readyz` stays 200
//! naming the state, and the first full window after recovery is used.
//! Redis keeps real time, so these run on short (5 s) windows, every loop
//! bounded in time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::support::redis::RedisServer;
use crate::support::replicas::*;
use crate::support::*;
use fitbit_proxy::config::Dialect;
use fitbit_proxy::sim::{Sim, SimConfig};

const QUOTA: u32 = 20;
const WINDOW: Duration = Duration::from_secs(5);
/// 95 % of a window.
const FULL: u32 = QUOTA * 95 / 100;

fn sim() -> SimConfig {
    SimConfig {
        quota: QUOTA,
        window: WINDOW,
        ..sim_config()
    }
}

/// These tests keep real time with three replicas, a simulator and their
/// clients on one runtime thread each: run one at a time, so that they do
/// not starve each other of the CPU (a replica late by a second sees its
/// window differently from the upstream).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rate_limit() -> String {
    format!("quota = {QUOTA}\nwindow = \"5s\"\nreplicas = 3\n")
}

async fn replicas3(redis: &RedisServer) -> Group {
    let g = group_with(3, sim(), &redis.url(), "", &[], &rate_limit()).await;
    all_ready(&g, "connected", Duration::from_secs(10)).await;
    g
}

/// What clients were answered: statuses, and every answer that was not
/// the upstream's 200 (it must be the proxy's, with `Retry-After`).
#[derive(Default)]
struct Answers {
    by_status: BTreeMap<u16, u32>,
    bad: Vec<String>,
}

/// `clients` loops sending through `proxy` one request after another until
/// `until`.
fn drive(
    proxy: SocketAddr,
    clients: usize,
    until: Instant,
    seen: &Arc<Mutex<Answers>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let seen = Arc::clone(seen);
            tokio::spawn(async move {
                let client = http1_client();
                while Instant::now() < until {
                    let (res, _) = send(
                        &client,
                        get(&format!("http://{proxy}/1/user/-/profile.json")),
                    )
                    .await;
                    let status = res.status().as_u16();
                    let own = res.headers().contains_key("x-fitbit-proxy-error");
                    let retry = res.headers().contains_key("retry-after");
                    let mut seen = seen.lock().unwrap();
                    *seen.by_status.entry(status).or_default() += 1;
                    let fine = status == 200 || (own && retry && (status == 429 || status == 503));
                    if !fine {
                        seen.bad
                            .push(format!("{status} own={own} retry-after={retry}"));
                    }
                }
            })
        })
        .collect()
}

/// Requests the simulator counted (answered 200) in each of its windows,
/// which run back to back from the first spend; with each window's start.
fn used_per_window(sim: &Sim) -> Vec<(Instant, u32)> {
    let received = sim.received();
    let Some(first) = received.iter().find(|r| r.status == 200).map(|r| r.at) else {
        return Vec::new();
    };
    let mut windows: BTreeMap<u32, u32> = BTreeMap::new();
    for r in received.iter().filter(|r| r.status == 200) {
        let k = ((r.at - first).as_secs_f64() / WINDOW.as_secs_f64()) as u32;
        *windows.entry(k).or_default() += 1;
    }
    let last = windows.keys().last().copied().unwrap_or(0);
    (0..=last)
        .map(|k| (first + WINDOW * k, windows.get(&k).copied().unwrap_or(0)))
        .collect()
}

/// The windows wholly within `[from, to]`.
fn full_windows(sim: &Sim, from: Instant, to: Instant) -> Vec<u32> {
    used_per_window(sim)
        .into_iter()
        .filter(|(start, _)| *start >= from && *start + WINDOW <= to)
        .map(|(_, used)| used)
        .collect()
}

#[tokio::test]
async fn demand_on_two_of_three_then_moving_uses_every_window_without_a_429() {
    demand_moves(Dialect::Fitbit, "").await;
}

/// The same in another dialect: the IETF fields, which give the window's
/// length (`w`), reconcile the shared budget alike.
#[tokio::test]
async fn the_ietf_dialect_shares_the_quota_alike() {
    demand_moves(Dialect::Ietf, "headers = \"ietf\"\n").await;
}

/// Saturating demand on 2 of 3 replicas, then on the third only.
async fn demand_moves(dialect: Dialect, rate_limit_extra: &str) {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start().await;
    let sim = SimConfig {
        headers: dialect,
        ..sim()
    };
    let g = group_with(
        3,
        sim,
        &redis.url(),
        "",
        &[],
        &(rate_limit() + rate_limit_extra),
    )
    .await;
    all_ready(&g, "connected", Duration::from_secs(10)).await;
    let seen = Arc::new(Mutex::new(Answers::default()));
    let start = Instant::now();
    // Two of three replicas busy, then only the third.
    let switch = start + Duration::from_secs(13);
    let end = switch + Duration::from_secs(12);
    let mut tasks = drive(g.replicas[0].proxy, 2, switch, &seen);
    tasks.extend(drive(g.replicas[1].proxy, 2, switch, &seen));
    tokio::time::sleep_until(switch).await;
    let late = drive(g.replicas[2].proxy, 3, end, &seen);
    for t in tasks.into_iter().chain(late) {
        let _ = t.await;
    }
    let seen = seen.lock().unwrap();
    assert!(seen.bad.is_empty(), "{:?}", seen.bad);
    assert_eq!(
        g.sim.rate_limited(),
        0,
        "no upstream 429: {:?}",
        seen.by_status
    );
    // The first window is learned (its end is not known at first).
    let windows = full_windows(&g.sim, start + WINDOW, end);
    assert!(windows.len() >= 3, "{:?}", used_per_window(&g.sim));
    for used in &windows {
        assert!(
            *used >= FULL,
            "a window used {used} of {QUOTA}: {windows:?}"
        );
    }
}

/// Polls every replica's `/readyz` until stopped: each must be 200 and
/// name the shared budget's state; returns the states seen.
fn watch_readiness(g: &Group, stop: Instant) -> tokio::task::JoinHandle<Vec<String>> {
    let admins: Vec<SocketAddr> = g.replicas.iter().map(|r| r.admin).collect();
    tokio::spawn(async move {
        let mut states = Vec::new();
        while Instant::now() < stop {
            for admin in &admins {
                let (status, body) = readyz(*admin).await;
                assert_eq!(status, 200, "{body}");
                let state = format!(
                    "{}/{}",
                    body["shared"].as_str().unwrap(),
                    body["shared_budget"].as_str().unwrap()
                );
                if states.last() != Some(&state) {
                    states.push(state);
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        states
    })
}

async fn all_sharing(g: &Group, limit: Duration) {
    for r in &g.replicas {
        until("the shared budget in use", limit, || async {
            let (status, body) = readyz(r.admin).await;
            status == 200 && body["shared"] == "connected" && body["shared_budget"] == "shared"
        })
        .await;
        // The status page says the same, with the replicas seen alive.
        let n = g.replicas.len() as u64;
        until(
            "status.json: shared budget, every replica seen",
            limit,
            || async {
                let (_, body) = send(
                    &http1_client(),
                    get(&format!("http://{}/status.json", r.admin)),
                )
                .await;
                let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
                status["shared"]["budget"] == "shared" && status["shared"]["replicas"] == n
            },
        )
        .await;
    }
}

#[tokio::test]
async fn redis_stopped_then_killed_costs_no_429_and_the_window_after_is_used() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let mut redis = RedisServer::start().await;
    let g = replicas3(&redis).await;
    let seen = Arc::new(Mutex::new(Answers::default()));
    let end = Instant::now() + Duration::from_secs(75);
    let mut tasks = Vec::new();
    for r in &g.replicas {
        tasks.extend(drive(r.proxy, 2, end, &seen));
    }
    let readiness = watch_readiness(&g, end);

    // Stopped for 3 s in the middle of a window.
    tokio::time::sleep(Duration::from_millis(7500)).await;
    let mut events = Vec::new();
    let t = || {
        format!(
            "{:.2}",
            g.sim
                .received()
                .first()
                .map_or(0.0, |r| r.at.elapsed().as_secs_f64())
        )
    };
    events.push(format!("stop {}", t()));
    redis.pause();
    tokio::time::sleep(Duration::from_secs(3)).await;
    redis.resume();
    events.push(format!("cont {}", t()));
    all_sharing(&g, Duration::from_secs(20)).await;
    events.push(format!("shared {}", t()));

    // Killed, then a fresh server on the same port: no keys, no scripts.
    redis.kill();
    events.push(format!("kill {}", t()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.restart().await;
    events.push(format!("restart {}", t()));
    all_sharing(&g, Duration::from_secs(20)).await;
    events.push(format!("shared {}", t()));
    let recovered = Instant::now();
    let text = metrics(g.replicas[0].admin).await;
    assert!(
        sample(&text, "fitbit_proxy_shared_fallback_windows_total") >= 2.0,
        "{text}"
    );
    assert!(
        sample(
            &text,
            "fitbit_proxy_shared_call_errors_total{op=\"budget_reserve\",kind=\"timeout\"}"
        ) >= 1.0
    );
    let measured_until = recovered + WINDOW * 3;
    assert!(measured_until < end);
    tokio::time::sleep_until(measured_until).await;

    let states = readiness.await.unwrap();
    for t in tasks {
        t.abort();
    }
    let t0 = g.sim.received()[0].at;
    let timeline: Vec<String> = g
        .sim
        .received()
        .iter()
        .filter(|r| r.status != 200)
        .map(|r| format!("{} at {:.2}", r.status, (r.at - t0).as_secs_f64()))
        .collect();
    let windows: Vec<(String, u32)> = used_per_window(&g.sim)
        .iter()
        .map(|(s, n)| (format!("{:.2}", (*s - t0).as_secs_f64()), *n))
        .collect();
    eprintln!("events: {events:?}\nnot 200: {timeline:?}\nwindows: {windows:?}");
    let seen = seen.lock().unwrap();
    assert!(seen.bad.is_empty(), "{:?}", seen.bad);
    assert_eq!(
        g.sim.rate_limited(),
        0,
        "no upstream 429: {:?}",
        seen.by_status
    );
    assert!(
        states.iter().any(|s| s.ends_with("/fallback")),
        "{states:?}"
    );
    assert!(
        states.last().is_some_and(|s| s == "connected/shared"),
        "{states:?}"
    );
    let after = full_windows(&g.sim, recovered, measured_until);
    assert!(!after.is_empty(), "{:?}", used_per_window(&g.sim));
    assert!(
        after[0] >= FULL,
        "the first full window after recovery: {after:?}"
    );
}

/// A learned window length is only a guess of each next window's end: the
/// window's first answer replaces it. Here the length in Redis is made
/// 0.8 s short (a length read off whole-second resets can be off by about
/// that much) while three replicas keep every window full. Taken as a
/// bound (the earlier of it and the readings), the guess moved 0.8 s
/// earlier every window until, past the margin, a window's first slots
/// went before the upstream's reset: upstream 429s.
#[tokio::test]
async fn a_learned_window_length_that_is_short_does_not_drift_into_a_429() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start().await;
    let g = replicas3(&redis).await;
    let seen = Arc::new(Mutex::new(Answers::default()));
    let end = Instant::now() + Duration::from_secs(30);
    let tasks: Vec<_> = g
        .replicas
        .iter()
        .flat_map(|r| drive(r.proxy, 2, end, &seen))
        .collect();
    let budget_key = || async {
        let keys: Vec<String> = redis.query(::redis::cmd("KEYS").arg("*:budget")).await;
        keys.into_iter().next()
    };
    until(
        "a learned window length",
        Duration::from_secs(15),
        || async {
            let Some(key) = budget_key().await else {
                return false;
            };
            let len: Option<i64> = redis.query(::redis::cmd("HGET").arg(key).arg("len")).await;
            len.is_some_and(|len| len > 0)
        },
    )
    .await;
    let key = budget_key().await.unwrap();
    let short = WINDOW.as_millis() as i64 - 800;
    let () = redis
        .query(::redis::cmd("HSET").arg(&key).arg("len").arg(short))
        .await;
    for t in tasks {
        let _ = t.await;
    }
    let len: i64 = redis.query(::redis::cmd("HGET").arg(&key).arg("len")).await;
    assert_eq!(len, short, "the length stays the learned one");
    let seen = seen.lock().unwrap();
    assert!(seen.bad.is_empty(), "{:?}", seen.bad);
    assert_eq!(
        g.sim.rate_limited(),
        0,
        "no upstream 429: {:?}, per window {:?}",
        seen.by_status,
        used_per_window(&g.sim)
    );
}
