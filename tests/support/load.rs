//! Saturating demand through the proxy, bounded in count and in (tokio)
//! time, and the simulator's record cut into its quota windows: what the
//! pacing tests of every dialect measure (SPEC §6 P1–P3, §10 D1).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fitbit_proxy::sim::Received;
use http::StatusCode;
use tokio::time::Instant;

use super::{get, http1_client, proxy_error, send};

/// No client sends more than this many requests, whatever happens.
const MAX_REQUESTS_PER_CLIENT: usize = 20_000;

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// 200s.
    pub ok: usize,
    /// The proxy's own 429s.
    pub refused: usize,
    /// Upstream 429s passed through.
    pub upstream_429: usize,
    /// Anything else.
    pub other: usize,
}

/// `clients` loops, each sending one request after another to `proxy`
/// for `duration`; a proxy refusal is retried after its `Retry-After`
/// (at least a second, at most `max_pause`).
pub async fn saturate(
    proxy: SocketAddr,
    clients: usize,
    duration: Duration,
    max_pause: Duration,
) -> Seen {
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let mut tasks = Vec::new();
    for c in 0..clients {
        let url = format!("http://{proxy}/1/load/{c}");
        let (stop, counts) = (Arc::clone(&stop), Arc::clone(&counts));
        tasks.push(tokio::spawn(async move {
            let client = http1_client();
            for _ in 0..MAX_REQUESTS_PER_CLIENT {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (res, _) = send(&client, get(&url)).await;
                let (kind, pause) = match (res.status(), proxy_error(&res)) {
                    (StatusCode::OK, _) => (0, Duration::ZERO),
                    (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")) => {
                        let after = res.headers()["retry-after"].to_str().unwrap();
                        let after = Duration::from_secs(after.parse().unwrap());
                        (1, after.clamp(Duration::from_secs(1), max_pause))
                    }
                    (StatusCode::TOO_MANY_REQUESTS, _) => (2, Duration::from_secs(1)),
                    _ => (3, Duration::from_secs(1)),
                };
                counts[kind].fetch_add(1, Ordering::Relaxed);
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let n = |i: usize| counts[i].load(Ordering::Relaxed);
    Seen {
        ok: n(0),
        refused: n(1),
        upstream_429: n(2),
        other: n(3),
    }
}

/// The upstream's windows: the first began at `origin`, each `len` long.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub origin: Instant,
    pub len: Duration,
}

impl Windows {
    /// Accepted requests of windows `first..first + count`, each cut in
    /// four quarters.
    pub fn quarters(&self, seen: &[Received], first: u32, count: u32) -> Vec<[u32; 4]> {
        let mut out = vec![[0u32; 4]; count as usize];
        for r in seen.iter().filter(|r| r.status == StatusCode::OK) {
            let Some(since) = r.at.checked_duration_since(self.origin) else {
                continue;
            };
            let at = since.as_secs_f64() / self.len.as_secs_f64();
            let (index, quarter) = (at.floor() as u32, ((at.fract() * 4.0) as usize).min(3));
            if (first..first + count).contains(&index) {
                out[(index - first) as usize][quarter] += 1;
            }
        }
        out
    }
}
