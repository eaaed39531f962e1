//! Every pacing rule of SPEC §6 in every rate-limit dialect of §10 (D1):
//! the simulator speaks the dialect, the proxy is configured for it, and
//! saturating clients run through it over real loopback sockets on paused
//! tokio time. Each row is a window length (10 s, 30 s, 1 h); each runs
//! every dialect with accurate and with lagging headers, the proxy started
//! 2 s into a window, half-way through, and 3 s before its end (D4). For
//! every full window: no upstream 429, at least 95 % of the quota used,
//! and every quarter at least 10 % of the quota (spread, P3).

use std::time::Duration;

use crate::support::load::{saturate, Windows};
use crate::support::*;
use fitbit_proxy::sim::{Dialect, Reset, SimConfig};
use tokio::time::Instant;

/// Every dialect the simulator speaks, with the reset units of the three
/// whose reset differs by vendor.
const DIALECTS: [Dialect; 8] = [
    Dialect::Fitbit,
    Dialect::Ietf,
    Dialect::RateLimit(Reset::Epoch),
    Dialect::RateLimit(Reset::Delta),
    Dialect::XRateLimit(Reset::Epoch),
    Dialect::XRateLimit(Reset::Delta),
    Dialect::XRateLimitDash(Reset::Epoch),
    Dialect::None,
];

const CLIENTS: usize = 16;

/// One row: a window length and the quota, burst and reset margin that go
/// with it (a margin of 2 s is a fifth of a 10 s window).
#[derive(Clone, Copy)]
struct Row {
    window: Duration,
    quota: u32,
    burst: u32,
    margin: &'static str,
    /// Full windows measured after the one the proxy starts in.
    full: u32,
}

/// The `[rate_limit]` lines that tell the proxy the upstream's dialect.
fn rate_limit(dialect: Dialect, row: Row) -> String {
    let reset = dialect
        .reset()
        .map(|r| format!("reset = \"{}\"\n", r.name()))
        .unwrap_or_default();
    format!(
        "headers = \"{}\"\n{reset}quota = {}\nwindow = \"{}s\"\nburst = {}\nmax_wait = \"{}s\"\nreset_margin = \"{}\"\n",
        dialect.name(),
        row.quota,
        row.window.as_secs(),
        row.burst,
        row.window.as_secs(),
        row.margin,
    )
}

/// One run: the proxy started `offset` into a window of the upstream, in
/// front of a simulator speaking `dialect`, its headers `lag` high.
/// Returns the accepted requests per quarter of each full window, or what
/// went wrong.
async fn run(
    dialect: Dialect,
    row: Row,
    lag: u32,
    offset: Duration,
) -> Result<Vec<[u32; 4]>, String> {
    let origin = Instant::now() - offset;
    let sim = SimConfig {
        quota: row.quota,
        window: row.window,
        headers: dialect,
        window_offset: Some(offset),
        token_lifetime: Some(Duration::from_secs(31_536_000)),
        ..sim_config()
    };
    // Connections wait for minutes on hour-long windows: their idle and
    // send bounds are set past that, so that paused time jumps from send
    // to send rather than through every idle check.
    let h = Setup::default()
        .sim(sim)
        .listen("header_read_timeout = \"2h\"\nsend_timeout = \"2h\"")
        .rate_limit(&rate_limit(dialect, row))
        .start_with(|sim| sim.set_reported_lag(lag))
        .await;
    let duration = (row.window - offset) + row.window * row.full + Duration::from_secs(1);
    let seen = saturate(h.proxy, CLIENTS, duration, row.window / 4).await;
    let windows = Windows {
        origin,
        len: row.window,
    };
    let quarters = windows.quarters(&h.sim.received(), 1, row.full);
    let upstream_429 = h.sim.rate_limited();
    h.stop().await;
    let mut problems = Vec::new();
    if upstream_429 > 0 || seen.upstream_429 > 0 || seen.other > 0 {
        problems.push(format!(
            "{upstream_429} upstream 429s, {} other answers",
            seen.other
        ));
    }
    for (i, q) in quarters.iter().enumerate() {
        let used: u32 = q.iter().sum();
        if used * 100 < row.quota * 95 {
            problems.push(format!("window {}: {used} of {} used", i + 1, row.quota));
        }
        if q.iter().any(|n| n * 10 < row.quota) {
            problems.push(format!("window {}: quarters {q:?}", i + 1));
        }
    }
    if problems.is_empty() {
        Ok(quarters)
    } else {
        Err(format!("{quarters:?}: {}", problems.join("; ")))
    }
}

/// Every dialect, accurate and lagging, from the three start offsets;
/// prints one line per run, and fails with every run that broke a rule.
async fn every_dialect(row: Row) {
    let w = row.window;
    let offsets = [Duration::from_secs(2), w / 2, w - Duration::from_secs(3)];
    let mut failures = Vec::new();
    for dialect in DIALECTS {
        for lag in [0, 5] {
            for offset in offsets {
                let label = format!(
                    "{:<13} {:<5} lag {lag} start {:>5}s into {}s",
                    dialect.name(),
                    dialect.reset().map_or("", |r| r.name()),
                    offset.as_secs(),
                    w.as_secs()
                );
                match run(dialect, row, lag, offset).await {
                    Ok(quarters) => {
                        println!("{label}: per quarter {quarters:?}, quota {}", row.quota)
                    }
                    Err(why) => {
                        println!("{label}: FAILED {why}");
                        failures.push(format!("{label}: {why}"));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(start_paused = true)]
async fn every_dialect_paces_ten_second_windows() {
    every_dialect(Row {
        window: Duration::from_secs(10),
        quota: 20,
        burst: 5,
        margin: "1s",
        full: 3,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn every_dialect_paces_thirty_second_windows() {
    every_dialect(Row {
        window: Duration::from_secs(30),
        quota: 60,
        burst: 10,
        margin: "2s",
        full: 3,
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn every_dialect_paces_one_hour_windows() {
    every_dialect(Row {
        window: Duration::from_secs(3600),
        quota: 60,
        burst: 10,
        margin: "2s",
        full: 2,
    })
    .await;
}
