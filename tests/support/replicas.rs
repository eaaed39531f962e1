//! Proxies that share state through Redis, started in-process on one
//! simulator: set-up, and the probes the shared-state tests read (readiness,
//! metrics, which token the simulator saw). Real time throughout: Redis
//! keeps its own clock.

use std::net::SocketAddr;
use std::time::Duration;

use fitbit_proxy::sim::{ServerHandle, Sim, SimConfig};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::*;

/// One proxy of a group.
pub struct Replica {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<()>,
}

/// Proxies on one simulator and one Redis.
pub struct Group {
    pub sim: Sim,
    pub replicas: Vec<Replica>,
    _upstream: ServerHandle,
    _dir: tempfile::TempDir,
}

/// The Redis call timeout of the tests: roomy enough that a machine busy
/// with other tests does not turn a slow answer into a fallback (which
/// would change the fetch counts the tests assert).
pub const CALL_TIMEOUT: &str = "500ms";

/// The `[shared]` section for `url`, plus `extra` lines.
pub fn shared_section(url: &str, extra: &str) -> String {
    format!("\n[shared]\nredis_url = \"{url}\"\ntimeout = \"{CALL_TIMEOUT}\"\n{extra}\n")
}

/// `n` proxies with admin listeners, in front of a simulator set up by
/// `sim`, sharing through `url`; `env` adds environment variables.
pub async fn group(
    n: usize,
    sim: SimConfig,
    url: &str,
    extra: &str,
    env: &[(&str, &str)],
) -> Group {
    group_with(n, sim, url, extra, env, "").await
}

/// [`group`] with `rate_limit` lines in `[rate_limit]`.
pub async fn group_with(
    n: usize,
    sim: SimConfig,
    url: &str,
    extra: &str,
    env: &[(&str, &str)],
    rate_limit: &str,
) -> Group {
    let sim = Sim::new(sim);
    let upstream = sim.serve_plain(bind().await);
    let dir = tempfile::tempdir().unwrap();
    let extras = Extras::default().rate_limit(rate_limit);
    let toml = config_toml(&upstream, None, &extras) + &shared_section(url, extra);
    let lookup = |name: &str| {
        (name == SECRET_ENV).then(|| SECRET.to_owned()).or_else(|| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    };
    let config =
        fitbit_proxy::Config::from_toml_str_with_env(&toml, &dir.path().join("t.toml"), &lookup)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let mut replicas = Vec::new();
    for _ in 0..n {
        let admin = bind().await;
        let admin_addr = admin.local_addr().unwrap();
        let (proxy, stop, task) = spawn_proxy(config.clone(), Some(admin)).await;
        replicas.push(Replica {
            proxy,
            admin: admin_addr,
            _stop: stop,
            _task: task,
        });
    }
    Group {
        sim,
        replicas,
        _upstream: upstream,
        _dir: dir,
    }
}

/// A simulator whose tokens live `lifetime`.
pub fn sim_with_lifetime(lifetime: Option<Duration>) -> SimConfig {
    SimConfig {
        token_lifetime: lifetime,
        ..sim_config()
    }
}

pub async fn readyz(admin: SocketAddr) -> (u16, serde_json::Value) {
    let (res, body) = send(&http1_client(), get(&format!("http://{admin}/readyz"))).await;
    (
        res.status().as_u16(),
        serde_json::from_slice(&body).unwrap(),
    )
}

/// `/readyz`'s `shared_reason` (empty when there is none).
pub async fn shared_reason(admin: SocketAddr) -> String {
    let (_, body) = readyz(admin).await;
    body["shared_reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub async fn metrics(admin: SocketAddr) -> String {
    let (_, body) = send(&http1_client(), get(&format!("http://{admin}/metrics"))).await;
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the first sample line starting with `series `.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `cond` every 50 ms for at most `limit` of real time.
pub async fn until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> F,
) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every replica is ready and names `state` for Redis.
pub async fn all_ready(g: &Group, state: &str, limit: Duration) {
    for r in &g.replicas {
        until(&format!("ready, shared {state}"), limit, || async {
            let (status, body) = readyz(r.admin).await;
            status == 200 && body["shared"] == state
        })
        .await;
    }
}

pub async fn status_of(proxy: SocketAddr, path: &str) -> u16 {
    let (res, _) = send(&http1_client(), get(&format!("http://{proxy}{path}"))).await;
    res.status().as_u16()
}

/// The token the last API request carried.
pub fn last_token(sim: &Sim) -> Option<String> {
    sim.received().last()?.authorization.clone()
}

/// Sends requests through every replica until each carries the
/// simulator's newest token (a replica takes a refreshed token when its own
/// refresh comes, a moment after the one that fetched it); every answer
/// must be 200.
pub async fn all_use_the_newest_token(g: &Group) {
    let newest = format!("Bearer {}", g.sim.current_token().unwrap());
    for r in &g.replicas {
        until(
            "the newest token in use",
            Duration::from_secs(2),
            || async {
                assert_eq!(status_of(r.proxy, "/1/user/-/profile.json").await, 200);
                last_token(&g.sim).as_deref() == Some(newest.as_str())
            },
        )
        .await;
    }
}

/// The replicas' `fitbit_proxy_shared_tokens_total{how}` added up.
pub async fn tokens_by(g: &Group, how: &str) -> f64 {
    let mut sum = 0.0;
    for r in &g.replicas {
        let text = metrics(r.admin).await;
        sum += sample(
            &text,
            &format!("fitbit_proxy_shared_tokens_total{{how=\"{how}\"}}"),
        );
    }
    sum
}
