//! Replicas sharing one token through a real `redis-server` (SPEC §11 S1,
//! S3, S4): one fetch per token lifetime for the group, a revoked token
//! replaced once, nothing usable in a dump of Redis, and every Redis fault
//! (paused, killed and restarted, unreachable at start, a wrong password,
//! scripts flushed) leaves requests served. Redis runs on its own clock, so
//! these tests run on real time, bounded in seconds; each waits for what it
//! needs with a bounded poll, never a fixed sleep it relies on.

#[path = "../support/mod.rs"]
mod support;

mod budget;
mod config;
mod faults;

use std::time::Duration;

use support::redis::RedisServer;
use support::replicas::*;
use support::*;

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

    let mut keys: Vec<String> = redis.query(::redis::cmd("KEYS").arg("*")).await;
    keys.sort();
    let named: Vec<&String> = keys.iter().filter(|k| !k.ends_with(":replicas")).collect();
    assert_eq!(
        named,
        [
            "fitbit-proxy:{sim-client}:budget",
            "fitbit-proxy:{sim-client}:token",
            "fitbit-proxy:{sim-client}:token:generation"
        ],
        "the budget, the token and its generation counter, and the heartbeat set"
    );
    assert!(keys.len() <= 4, "{keys:?}");
    let mut dump = Vec::new();
    for key in &keys {
        let kind: String = redis.query(::redis::cmd("TYPE").arg(key)).await;
        let values: Vec<Vec<u8>> = match kind.as_str() {
            "hash" => redis.query(::redis::cmd("HGETALL").arg(key)).await,
            "zset" => {
                redis
                    .query(::redis::cmd("ZRANGE").arg(key).arg(0).arg(-1))
                    .await
            }
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
