//! Pacing report: drives the simulated Fitbit API through the proxy with
//! saturating demand for many simulated quota windows (tokio's paused
//! clock: hours of windows in seconds) and prints, per scenario, the share
//! of each window's quota used, upstream 429s, and the p50/p99 time a
//! request waited for its slot; one row per rate-limit dialect too (the
//! simulator speaking it, the proxy configured for it); and, in a second
//! table, callers competing for the slots (`x-caller`, `[callers]
//! weights`): each caller's share of the quota in each window.
//!
//! `cargo bench --bench pacing_report` (env `WINDOWS`, default 20).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fitbit_proxy::sim::{Dialect, Reset, Sim, SimConfig};
use fitbit_proxy::Config;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::time::Instant;

const QUOTA: u32 = 150;
const WINDOW: Duration = Duration::from_secs(3600);
const CLIENTS: usize = 16;

struct Scenario {
    name: &'static str,
    lag: u32,
    other_per_window: u32,
    headers: Dialect,
    /// Callers `(name, clients, weight)`; all clients share one caller
    /// unless set.
    callers: &'static [(&'static str, usize, u32)],
}

/// The clients of every scenario but the callers' ones.
const ONE_CALLER: &[(&str, usize, u32)] = &[("report", CLIENTS, 1)];

impl Scenario {
    fn fitbit(name: &'static str, lag: u32, other_per_window: u32) -> Self {
        Scenario {
            name,
            lag,
            other_per_window,
            headers: Dialect::Fitbit,
            callers: ONE_CALLER,
        }
    }

    fn callers(name: &'static str, callers: &'static [(&'static str, usize, u32)]) -> Self {
        Scenario {
            callers,
            ..Scenario::fitbit(name, 0, 0)
        }
    }

    fn dialect(name: &'static str, headers: Dialect) -> Self {
        Scenario {
            name,
            lag: 0,
            other_per_window: 0,
            headers,
            callers: ONE_CALLER,
        }
    }
}

struct Outcome {
    used: Vec<u32>,
    /// Per caller (in the scenario's order): its requests in each window.
    used_by: Vec<Vec<u32>>,
    upstream_429: u64,
    refused: u64,
    waits: Vec<Duration>,
}

fn main() {
    let windows: u32 = std::env::var("WINDOWS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(20);
    let scenarios = [
        Scenario::fitbit("accurate headers", 0, 0),
        Scenario::fitbit("headers lag by 5", 5, 0),
        Scenario::fitbit("second consumer, 30/window", 0, 30),
        Scenario::dialect("dialect ietf", Dialect::Ietf),
        Scenario::dialect(
            "dialect ratelimit (epoch)",
            Dialect::RateLimit(Reset::Epoch),
        ),
        Scenario::dialect(
            "dialect x-ratelimit (epoch)",
            Dialect::XRateLimit(Reset::Epoch),
        ),
        Scenario::dialect(
            "dialect x-ratelimit (delta)",
            Dialect::XRateLimit(Reset::Delta),
        ),
        Scenario::dialect(
            "dialect x-rate-limit (epoch)",
            Dialect::XRateLimitDash(Reset::Epoch),
        ),
        Scenario::dialect("dialect none (Retry-After only)", Dialect::None),
    ];
    println!("pacing report: quota {QUOTA} per {}s window, burst 10, {CLIENTS} saturating clients, {windows} windows", WINDOW.as_secs());
    println!();
    println!("| scenario | windows | quota used (min / mean) | upstream 429s | proxy 429s | wait p50 | wait p99 |");
    println!("|---|---|---|---|---|---|---|");
    for s in &scenarios {
        let o = paused(s, windows);
        let available = f64::from(QUOTA - s.other_per_window);
        let shares: Vec<f64> = o
            .used
            .iter()
            .map(|u| f64::from(*u) / available * 100.0)
            .collect();
        let min = shares.iter().cloned().fold(f64::INFINITY, f64::min);
        let mean = shares.iter().sum::<f64>() / shares.len() as f64;
        let mut waits = o.waits;
        waits.sort();
        let pct = |p: f64| {
            waits
                .get(((waits.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or_default()
        };
        println!(
            "| {} | {} | {min:.1} % / {mean:.1} % | {} | {} | {:.1} s | {:.1} s |",
            s.name,
            o.used.len(),
            o.upstream_429,
            o.refused,
            pct(0.5).as_secs_f64(),
            pct(0.99).as_secs_f64()
        );
    }
    callers_table(windows);
}

fn paused(s: &Scenario, windows: u32) -> Outcome {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run(s, windows))
}

/// Callers competing for the slots: each one's share of each window's
/// quota (min / mean over the windows).
fn callers_table(windows: u32) {
    let scenarios = [
        Scenario::callers(
            "12 clients vs 1, equal weights",
            &[("many", 12, 1), ("one", 1, 1)],
        ),
        Scenario::callers(
            "12 clients vs 1, weights 1:3",
            &[("many", 12, 1), ("one", 1, 3)],
        ),
        Scenario::callers(
            "6 clients vs 6, weights 3:1",
            &[("billing", 6, 3), ("reports", 6, 1)],
        ),
    ];
    println!();
    println!("| callers | windows | caller (clients, weight): share of each window (min / mean) | quota used (mean) | upstream 429s | proxy 429s |");
    println!("|---|---|---|---|---|---|");
    for s in &scenarios {
        let o = paused(s, windows);
        let shares: Vec<String> = s
            .callers
            .iter()
            .zip(&o.used_by)
            .map(|((name, clients, weight), used)| {
                let share: Vec<f64> = used
                    .iter()
                    .zip(&o.used)
                    .map(|(mine, all)| f64::from(*mine) / f64::from((*all).max(1)) * 100.0)
                    .collect();
                let min = share.iter().cloned().fold(f64::INFINITY, f64::min);
                let mean = share.iter().sum::<f64>() / share.len() as f64;
                format!("{name} ({clients}, {weight}): {min:.1} % / {mean:.1} %")
            })
            .collect();
        let used = o.used.iter().sum::<u32>() as f64 / (o.used.len() as f64 * f64::from(QUOTA));
        println!(
            "| {} | {} | {} | {:.1} % | {} | {} |",
            s.name,
            o.used.len(),
            shares.join("; "),
            used * 100.0,
            o.upstream_429,
            o.refused,
        );
    }
}

async fn run(s: &Scenario, windows: u32) -> Outcome {
    let sim = Sim::new(SimConfig {
        quota: QUOTA,
        window: WINDOW,
        token_lifetime: Some(Duration::from_secs(31536000)),
        headers: s.headers,
        ..SimConfig::default()
    });
    sim.set_reported_lag(s.lag);
    let upstream = sim.serve_plain(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let reset = s
        .headers
        .reset()
        .map(|r| format!("reset = \"{}\"\n", r.name()))
        .unwrap_or_default();
    let weights: Vec<String> = s
        .callers
        .iter()
        .map(|(name, _, weight)| format!("{name} = {weight}"))
        .collect();
    let weights = weights.join(", ");
    let toml = format!(
        "[callers]\nweights = {{ {weights} }}\n[admin]\naddr = \"\"\n[upstream]\nurl = \"{}\"\n[credentials]\ntoken_url = \"{}\"\nclient_id = \"sim-client\"\nclient_secret_env = \"S\"\n[rate_limit]\nmax_wait = \"30m\"\nheaders = \"{}\"\n{reset}quota = {QUOTA}\nwindow = \"{}s\"\n",
        upstream.base_url(),
        upstream.token_url(),
        s.headers.name(),
        WINDOW.as_secs(),
    );
    let env = |_: &str| Some("sim-secret".to_string());
    let config = Config::from_toml_str_with_env(&toml, Path::new("report.toml"), &env).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    let (stop_proxy, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fitbit_proxy::run(listener, config, async {
        let _ = stopped.await;
    }));

    let stop = Arc::new(AtomicBool::new(false));
    let waits = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0u64));
    let mut tasks = Vec::new();
    let clients = s
        .callers
        .iter()
        .flat_map(|&(name, clients, _)| (0..clients).map(move |c| (name, c)));
    for (caller, c) in clients {
        let (stop, waits, refused) = (Arc::clone(&stop), Arc::clone(&waits), Arc::clone(&refused));
        let url = format!("http://{proxy}/1/report/{caller}/{c}");
        tasks.push(tokio::spawn(async move {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let req = http::Request::get(&url)
                    .header("x-caller", caller)
                    .body(Full::default())
                    .unwrap();
                let Ok(res) = client.request(req).await else {
                    continue;
                };
                let status = res.status();
                let _ = res.into_body().collect().await;
                if status == StatusCode::OK {
                    waits.lock().unwrap().push(started.elapsed());
                } else {
                    *refused.lock().unwrap() += 1;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        }));
    }
    let other = {
        let sim = sim.clone();
        let n = s.other_per_window;
        tokio::spawn(async move {
            if n == 0 {
                return;
            }
            tokio::time::sleep(WINDOW / 3).await;
            loop {
                sim.spend_quota(n);
                tokio::time::sleep(WINDOW).await;
            }
        })
    };
    tokio::time::sleep(WINDOW * windows).await;
    stop.store(true, Ordering::Relaxed);
    other.abort();
    for t in tasks {
        let _ = t.await;
    }
    let _ = stop_proxy.send(());
    let _ = server.await;

    let seen = sim.received();
    let start = seen[0].at;
    let full = windows.saturating_sub(1) as usize;
    let mut used = vec![0u32; full];
    let mut used_by = vec![vec![0u32; full]; s.callers.len()];
    for r in seen.iter().filter(|r| r.status == StatusCode::OK) {
        let i = ((r.at - start).as_secs_f64() / WINDOW.as_secs_f64()) as usize;
        if i < full {
            used[i] += 1;
            let caller = r.path.split('/').nth(3).unwrap_or_default();
            if let Some(k) = s.callers.iter().position(|(name, _, _)| *name == caller) {
                used_by[k][i] += 1;
            }
        }
    }
    let waits = std::mem::take(&mut *waits.lock().unwrap());
    let refused = *refused.lock().unwrap();
    Outcome {
        used,
        used_by,
        upstream_429: sim.rate_limited(),
        refused,
        waits,
    }
}
