//! `[shared]` in `proxy.toml`: defaults, every problem named with its key,
//! a password inside `redis_url` refused without being echoed (by `check`
//! too, which exits 2), and the real binary, logging at trace level, never
//! printing the Redis password or a token, whether the password is right
//! or wrong.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::binary::{Launch, BIN};
use crate::support::redis::RedisServer;
use crate::support::replicas::{readyz, status_of, until};
use crate::support::*;
use fitbit_proxy::sim::Sim;
use fitbit_proxy::Config;

const PASSWORD: &str = "REDIS_PW_CANARY_1";

fn base() -> String {
    format!(
        "[credentials]\nclient_id = \"{CLIENT_ID}\"\nclient_secret_env = \"{SECRET_ENV}\"\n[shared]\n"
    )
}

fn parse(shared: &str) -> Result<Config, String> {
    let env = |name: &str| match name {
        SECRET_ENV => Some(SECRET.to_owned()),
        "REDIS_PW" => Some(PASSWORD.to_owned()),
        _ => None,
    };
    Config::from_toml_str_with_env(&(base() + shared), Path::new("p.toml"), &env)
        .map_err(|e| e.to_string())
}

#[test]
fn shared_defaults_to_alone_with_documented_values() {
    let c = parse("").unwrap();
    assert_eq!(c.shared.redis, None);
    assert_eq!(c.shared.key_prefix, "fitbit-proxy");
    assert_eq!(c.shared.timeout, Duration::from_millis(100));
}

#[test]
fn a_password_comes_from_the_environment_or_a_file_and_shows_as_its_source() {
    let c = parse("redis_url = \"redis://10.0.0.5:6379/2\"\nredis_password_env = \"REDIS_PW\"")
        .unwrap();
    let redis = c.shared.redis.as_ref().unwrap();
    assert_eq!(redis.url, "redis://10.0.0.5:6379/2");
    assert_eq!(redis.password.as_ref().unwrap().expose(), PASSWORD);
    let rendered = c.render_redacted();
    assert!(
        rendered.contains("redis_password_env = \"REDIS_PW\""),
        "{rendered}"
    );
    assert!(!rendered.contains(PASSWORD) && !format!("{c:?}").contains(PASSWORD));
    let env = |name: &str| match name {
        SECRET_ENV => Some(SECRET.to_owned()),
        "REDIS_PW" => Some(PASSWORD.to_owned()),
        _ => None,
    };
    let again = Config::from_toml_str_with_env(&rendered, Path::new("p.toml"), &env).unwrap();
    assert_eq!(again.shared, c.shared, "check's output parses back");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("redis-password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let toml = format!(
        "redis_url = \"rediss://cache.example:6380\"\nredis_password_file = {:?}",
        file.display().to_string()
    );
    let c = parse(&toml).unwrap();
    let redis = c.shared.redis.unwrap();
    assert_eq!(redis.password.unwrap().expose(), PASSWORD);
}

#[test]
fn bad_shared_values_are_each_named() {
    // (the [shared] lines, what the message must say)
    let cases = [
        ("redis_url = \"redis://u:REDIS_PW_CANARY_1@h:6379\"", "shared.redis_url = \"<redacted>\": must not contain a password"),
        ("redis_url = \"redis://:REDIS_PW_CANARY_1@h\"", "shared.redis_url = \"<redacted>\""),
        ("redis_url = \"http://h:6379\"", "shared.redis_url = \"http://h:6379\": must start with redis://"),
        ("redis_url = \"rediss://h#insecure\"", "must not have a fragment"),
        ("redis_url = \"redis://h\"\nredis_password_env = \"NOPE\"", "shared.redis_password_env = \"NOPE\": environment variable NOPE is not set"),
        ("redis_url = \"redis://h\"\nredis_password_file = \"/nonexistent/pw\"", "shared.redis_password_file = \"/nonexistent/pw\": cannot read"),
        ("redis_url = \"redis://h\"\nredis_password_env = \"REDIS_PW\"\nredis_password_file = \"x\"", "shared: only one of redis_password_env, redis_password_file"),
        ("key_prefix = \"\"", "shared.key_prefix = \"\": must be 1 to 64"),
        ("key_prefix = \"a{b}\"", "hash tag"),
        ("key_prefix = \"has space\"", "shared.key_prefix"),
        ("timeout = \"0s\"", "shared.timeout = \"0s\": must be greater than 0"),
        ("timeout = \"10s\"", "shared.timeout = \"10s\": must be at most 5s"),
        ("redis_urll = \"\"", "shared.redis_urll: unknown key"),
    ];
    for (lines, want) in cases {
        let err = parse(lines).expect_err(lines);
        assert!(err.contains(want), "{lines}:\n{err}");
        assert!(
            !err.contains(PASSWORD),
            "{lines} echoes the password:\n{err}"
        );
    }
}

#[test]
fn a_password_without_a_redis_url_is_a_warning() {
    let c = parse("redis_password_env = \"REDIS_PW\"").unwrap();
    assert_eq!(c.shared.redis, None);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("shared.redis_url is empty")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn check_refuses_a_password_in_the_url_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        base() + &format!("redis_url = \"redis://:{PASSWORD}@h:6379\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("shared.redis_url = \"<redacted>\""),
        "{printed}"
    );
    assert!(!printed.contains(PASSWORD), "{printed}");
}

/// Runs the binary at trace level with the Redis password in a file, waits
/// until `/readyz` names `state`, revokes the token once, and returns
/// everything it printed.
async fn run_binary(redis: &RedisServer, password: &str, state: &str) -> String {
    let sim = Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let pw_dir = tempfile::tempdir().unwrap();
    let pw_file = pw_dir.path().join("redis-password");
    std::fs::write(&pw_file, password).unwrap();
    let launch = Launch {
        append: format!(
            "[shared]\nredis_url = \"{}\"\nredis_password_file = {:?}\n",
            redis.url(),
            pw_file.display().to_string()
        ),
        rust_log: "trace",
        ..Launch::default()
    };
    let proxy = launch.start(&upstream).await;
    until(
        &format!("shared {state}"),
        Duration::from_secs(15),
        || async { readyz(proxy.admin).await.1["shared"] == state },
    )
    .await;
    sim.revoke_all();
    assert_eq!(status_of(proxy.proxy, "/1/user/-/profile.json").await, 200);
    proxy.child.sigterm();
    let out = proxy.child.exited().await;
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_logs_hold_no_redis_password_and_no_token() {
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD]).await;
    let right = run_binary(&redis, PASSWORD, "connected").await;
    assert!(right.contains("Redis connected"), "{right}");
    let wrong = run_binary(&redis, "REDIS_PW_CANARY_wrong", "unreachable").await;
    assert!(wrong.contains("Redis refused the password"), "{wrong}");
    for (what, logs) in [("right", &right), ("wrong", &wrong)] {
        for canary in ["REDIS_PW_CANARY", "TOKEN_CANARY", "SECRET_CANARY", SECRET] {
            assert!(!logs.contains(canary), "{what} password run logs {canary}");
        }
    }
}
