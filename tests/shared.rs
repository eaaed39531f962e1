//! Replicas sharing one token through a real `redis-server` (SPEC §11 S1,
//! S3, S4): one fetch per token lifetime for the group, a revoked token
//! replaced once, nothing usable in a dump of Redis, and every Redis fault
//! (paused, killed and restarted, unreachable at start, a wrong password,
//! scripts flushed) leaves requests served. Redis runs on its own clock, so
//! these tests run on real time, bounded in seconds; each waits for what it
//! needs with a bounded poll, never a fixed sleep it relies on.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use fitbit_proxy::sim::{ServerHandle, Sim, SimConfig};
use support::redis::RedisServer;
use support::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// One proxy of a group.
struct Replica {
    proxy: SocketAddr,
    admin: SocketAddr,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<()>,
}

/// Proxies on one simulator and one Redis.
struct Group {
    sim: Sim,
    replicas: Vec<Replica>,
    _upstream: ServerHandle,
    _dir: tempfile::TempDir,
}

/// The `[shared]` section for `url`, plus `extra` lines.
fn shared_section(url: &str, extra: &str) -> String {
    format!("\n[shared]\nredis_url = \"{url}\"\ntimeout = \"100ms\"\n{extra}\n")
}

/// `n` proxies with admin listeners, in front of a simulator set up by
/// `sim`, sharing through `url`; `env` adds environment variables.
async fn group(n: usize, sim: SimConfig, url: &str, extra: &str, env: &[(&str, &str)]) -> Group {
    let sim = Sim::new(sim);
    let upstream = sim.serve_plain(bind().await);
    let dir = tempfile::tempdir().unwrap();
    let toml = config_toml(&upstream, None, &Extras::default()) + &shared_section(url, extra);
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
        let (proxy, stop, task) = spawn_proxy_with_admin(config.clone(), Some(admin)).await;
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
fn sim_with_lifetime(lifetime: Option<Duration>) -> SimConfig {
    SimConfig {
        token_lifetime: lifetime,
        ..sim_config()
    }
}

async fn readyz(admin: SocketAddr) -> (u16, serde_json::Value) {
    let (res, body) = send(&http1_client(), get(&format!("http://{admin}/readyz"))).await;
    (
        res.status().as_u16(),
        serde_json::from_slice(&body).unwrap(),
    )
}

async fn metrics(admin: SocketAddr) -> String {
    let (_, body) = send(&http1_client(), get(&format!("http://{admin}/metrics"))).await;
    String::from_utf8(body.to_vec()).unwrap()
}

/// The value of the first sample line starting with `series `.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// Polls `cond` every 50 ms for at most `limit` of real time.
async fn until<F: std::future::Future<Output = bool>>(
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
async fn all_ready(g: &Group, state: &str, limit: Duration) {
    for r in &g.replicas {
        until(&format!("ready, shared {state}"), limit, || async {
            let (status, body) = readyz(r.admin).await;
            status == 200 && body["shared"] == state
        })
        .await;
    }
}

async fn status_of(proxy: SocketAddr, path: &str) -> u16 {
    let (res, _) = send(&http1_client(), get(&format!("http://{proxy}{path}"))).await;
    res.status().as_u16()
}

/// The token the last API request carried.
fn last_token(sim: &Sim) -> Option<String> {
    sim.received().last()?.authorization.clone()
}

/// Sends requests through every replica until each carries the
/// simulator's newest token (a replica takes a refreshed token when its own
/// refresh comes, a moment after the one that fetched it); every answer
/// must be 200.
async fn all_use_the_newest_token(g: &Group) {
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
async fn tokens_by(g: &Group, how: &str) -> f64 {
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

#[tokio::test]
async fn three_replicas_fetch_one_token_per_lifetime_and_refresh_it_once() {
    let redis = RedisServer::start().await;
    // A 6 s token is refreshed at half-life, 2.7 to 3 s after its fetch.
    let sim = sim_with_lifetime(Some(Duration::from_secs(6)));
    let g = group(3, sim, &redis.url(), "", &[]).await;
    all_ready(&g, "connected", Duration::from_secs(10)).await;
    assert_eq!(g.sim.token_fetches(), 1, "one fetch for three replicas");
    all_use_the_newest_token(&g).await;
    assert_eq!(
        (
            tokens_by(&g, "fetched").await,
            tokens_by(&g, "adopted").await
        ),
        (1.0, 2.0)
    );

    // Two refreshes ahead of expiry, each done once for the group.
    until("two refreshes", Duration::from_secs(10), || async {
        g.sim.token_fetches() >= 3
    })
    .await;
    all_use_the_newest_token(&g).await;
    assert_eq!(g.sim.token_fetches(), 3);
    assert_eq!(
        (
            tokens_by(&g, "fetched").await,
            tokens_by(&g, "adopted").await
        ),
        (3.0, 6.0)
    );
    assert_eq!(tokens_by(&g, "alone").await, 0.0);
}

#[tokio::test]
async fn a_revoked_token_is_replaced_once_for_the_group() {
    let redis = RedisServer::start().await;
    let g = group(3, sim_config(), &redis.url(), "", &[]).await;
    all_ready(&g, "connected", Duration::from_secs(10)).await;
    assert_eq!(g.sim.token_fetches(), 1);
    g.sim.revoke_all();
    // Every replica sees 401s for the revoked token at once; each request
    // is replayed with the one new token.
    let mut sends = Vec::new();
    for r in &g.replicas {
        for _ in 0..5 {
            sends.push(tokio::spawn(status_of(r.proxy, "/1/user/-/profile.json")));
        }
    }
    for s in sends {
        assert_eq!(s.await.unwrap(), 200);
    }
    assert_eq!(
        g.sim.token_fetches(),
        2,
        "one fetch replaces the revoked token"
    );
    all_use_the_newest_token(&g).await;
    // A late 401 for the old token on a replica that already holds the new
    // one changes nothing: the old token is no longer anyone's.
    assert_eq!(
        status_of(g.replicas[0].proxy, "/1/activities.json").await,
        200
    );
    assert_eq!(g.sim.token_fetches(), 2);
}

#[tokio::test]
async fn a_dump_of_redis_holds_no_token_and_no_secret() {
    let redis = RedisServer::start().await;
    let g = group(2, sim_config(), &redis.url(), "", &[]).await;
    all_ready(&g, "connected", Duration::from_secs(10)).await;
    g.sim.revoke_all();
    assert_eq!(status_of(g.replicas[0].proxy, "/1/x.json").await, 200);
    assert_eq!(g.sim.token_fetches(), 2);

    let keys: Vec<String> = redis.query(::redis::cmd("KEYS").arg("*")).await;
    assert_eq!(
        keys.len(),
        2,
        "the token and its generation counter: {keys:?}"
    );
    let mut dump = Vec::new();
    for key in &keys {
        assert!(key.starts_with("fitbit-proxy:{sim-client}:token"), "{key}");
        let kind: String = redis.query(::redis::cmd("TYPE").arg(key)).await;
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "hash" => redis.query(::redis::cmd("HGETALL").arg(key)).await,
            "string" => vec![redis.query(::redis::cmd("GET").arg(key)).await],
            other => panic!("{key} is a {other}"),
        };
        dump.extend(values.into_iter().flatten());
        dump.extend_from_slice(key.as_bytes());
    }
    let token = g.sim.current_token().unwrap();
    for canary in [token.as_str(), "TOKEN_CANARY", SECRET, "SECRET_CANARY"] {
        assert!(
            !dump.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "the dump holds {canary}"
        );
    }
}
