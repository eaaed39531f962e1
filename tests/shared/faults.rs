//! Redis failing under replicas that share a token (SPEC §11 S3, S4): a
//! paused server, a killed and restarted one, one unreachable at start-up,
//! a wrong password, flushed scripts. Whatever Redis does, requests are
//! served (a replica fetches its own token), `/readyz` stays 200 and names
//! the state, and the replicas share again once Redis is back. Real time,
//! every wait bounded.

use std::time::Duration;

use crate::support::redis::RedisServer;
use crate::support::replicas::*;
use crate::support::*;

const SECS_10: Duration = Duration::from_secs(10);
/// Reconnecting waits out the breaker (3 s) and a retry delay (up to 8 s).
const REJOIN: Duration = Duration::from_secs(20);

/// Revokes every token, then sends one request through each replica: all
/// must be answered 200 (replayed with a new token).
async fn revoke_and_serve(g: &Group) {
    g.sim.revoke_all();
    for r in &g.replicas {
        assert_eq!(status_of(r.proxy, "/1/user/-/profile.json").await, 200);
    }
}

#[tokio::test]
async fn a_paused_redis_leaves_requests_served_and_is_rejoined() {
    let redis = RedisServer::start().await;
    let g = group(2, sim_config(), &redis.url(), "", &[]).await;
    all_ready(&g, "connected", SECS_10).await;
    assert_eq!(g.sim.token_fetches(), 1);

    redis.pause();
    revoke_and_serve(&g).await;
    assert_eq!(g.sim.token_fetches(), 3, "each replica fetched its own");
    all_ready(&g, "unreachable", SECS_10).await;
    let reason = shared_reason(g.replicas[0].admin).await;
    assert!(
        reason.contains(&format!("no answer from Redis within {CALL_TIMEOUT}")),
        "{reason}"
    );
    let text = metrics(g.replicas[0].admin).await;
    assert_eq!(sample(&text, "fitbit_proxy_shared_state_up"), 0.0);
    assert_eq!(
        sample(&text, "fitbit_proxy_shared_breaker{state=\"open\"}"),
        1.0
    );
    assert!(sample(&text, "fitbit_proxy_shared_breaker_opened_total") >= 1.0);
    assert_eq!(
        sample(&text, "fitbit_proxy_shared_tokens_total{how=\"alone\"}"),
        1.0
    );

    redis.resume();
    all_ready(&g, "connected", REJOIN).await;
    revoke_and_serve(&g).await;
    assert_eq!(g.sim.token_fetches(), 4, "shared again: one fetch for both");
}

#[tokio::test]
async fn a_killed_redis_is_rejoined_when_it_restarts_empty() {
    let mut redis = RedisServer::start().await;
    let g = group(2, sim_config(), &redis.url(), "", &[]).await;
    all_ready(&g, "connected", SECS_10).await;

    redis.kill();
    all_ready(&g, "unreachable", SECS_10).await;
    revoke_and_serve(&g).await;
    assert_eq!(g.sim.token_fetches(), 3, "each replica fetched its own");

    // A fresh server: no keys, no scripts (the first EVALSHA gets NOSCRIPT).
    redis.restart().await;
    all_ready(&g, "connected", REJOIN).await;
    revoke_and_serve(&g).await;
    assert_eq!(g.sim.token_fetches(), 4, "shared again: one fetch for both");
    all_use_the_newest_token(&g).await;
}

#[tokio::test]
async fn flushed_scripts_are_loaded_again() {
    let redis = RedisServer::start().await;
    let g = group(2, sim_config(), &redis.url(), "", &[]).await;
    all_ready(&g, "connected", SECS_10).await;
    let () = redis.query(::redis::cmd("SCRIPT").arg("FLUSH")).await;
    revoke_and_serve(&g).await;
    assert_eq!(
        g.sim.token_fetches(),
        2,
        "no replica fell back to its own token"
    );
    assert_eq!(tokens_by(&g, "alone").await, 0.0);
    let info: String = redis.query(::redis::cmd("INFO").arg("memory")).await;
    assert!(!info.contains("number_of_cached_scripts:0"), "{info}");
}

#[tokio::test]
async fn an_unreachable_redis_at_start_up_leaves_the_proxy_alone_and_it_says_so() {
    let port = bind().await.local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}");
    let g = group(1, sim_config(), &url, "", &[]).await;
    all_ready(&g, "unreachable", SECS_10).await;
    let admin = g.replicas[0].admin;
    let reason = shared_reason(admin).await;
    assert!(reason.starts_with("cannot connect to Redis"), "{reason}");
    let (_, status) = send(&http1_client(), get(&format!("http://{admin}/status.json"))).await;
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["shared"]["state"], "unreachable", "{status}");
    assert_eq!(status["shared"]["reason"], reason.as_str(), "{status}");
    assert_eq!(status_of(g.replicas[0].proxy, "/1/x.json").await, 200);
    assert_eq!(g.sim.token_fetches(), 1);
    let text = metrics(admin).await;
    assert_eq!(sample(&text, "fitbit_proxy_shared_state_up"), 0.0);
    assert_eq!(
        sample(&text, "fitbit_proxy_shared_tokens_total{how=\"alone\"}"),
        1.0
    );
    assert!(
        sample(
            &text,
            "fitbit_proxy_shared_call_errors_total{op=\"connect\",kind=\"io\"}"
        ) >= 1.0
    );

    // Redis comes up later: the proxy joins it.
    let _redis = RedisServer::start_on(port).await;
    all_ready(&g, "connected", REJOIN).await;
    assert_eq!(
        sample(&metrics(admin).await, "fitbit_proxy_shared_state_up"),
        1.0
    );
}

#[tokio::test]
async fn a_wrong_password_is_named_and_the_proxy_runs_alone() {
    const RIGHT: &str = "REDIS_PW_CANARY_right";
    const WRONG: &str = "REDIS_PW_CANARY_wrong";
    let redis = RedisServer::start_with(&["--requirepass", RIGHT]).await;
    let extra = "redis_password_env = \"REDIS_PW\"";
    let wrong = group(1, sim_config(), &redis.url(), extra, &[("REDIS_PW", WRONG)]).await;
    all_ready(&wrong, "unreachable", SECS_10).await;
    let admin = wrong.replicas[0].admin;
    let reason = shared_reason(admin).await;
    assert!(reason.contains("Redis refused the password"), "{reason}");
    assert_eq!(status_of(wrong.replicas[0].proxy, "/1/x.json").await, 200);
    let text = metrics(admin).await;
    assert!(
        sample(
            &text,
            "fitbit_proxy_shared_call_errors_total{op=\"connect\",kind=\"auth\"}"
        ) >= 1.0
    );
    for shown in [readyz(admin).await.1.to_string(), text] {
        assert!(!shown.contains("REDIS_PW_CANARY"), "{shown}");
    }

    let right = group(1, sim_config(), &redis.url(), extra, &[("REDIS_PW", RIGHT)]).await;
    all_ready(&right, "connected", SECS_10).await;
}

#[tokio::test]
async fn rediss_to_a_server_without_tls_is_named_and_the_proxy_runs_alone() {
    let redis = RedisServer::start().await;
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let g = group(1, sim_config(), &url, "", &[]).await;
    all_ready(&g, "unreachable", SECS_10).await;
    let reason = shared_reason(g.replicas[0].admin).await;
    assert!(reason.starts_with("cannot connect to Redis"), "{reason}");
    assert_eq!(status_of(g.replicas[0].proxy, "/1/x.json").await, 200);
}
