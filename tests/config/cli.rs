//! The binary's command line (SPEC §2): `check` and its exit codes, `run`
//! failing to bind, bad arguments. Runs the real executable.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_fitbit-proxy");
const CANARY: &str = "SECRET_CANARY_cli";

fn fitbit_proxy(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("FITBIT_CLIENT_SECRET", CANARY)
        .env_remove("FITBIT_PROXY_CONFIG")
        .output()
        .expect("run fitbit-proxy")
}

fn shipped_config() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml")).unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn check_prints_the_effective_config_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("proxy.toml"), shipped_config()).unwrap();
    let out = fitbit_proxy(&["check", "--config", "proxy.toml"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("[credentials]")
            && stdout.contains("client_secret_env = \"FITBIT_CLIENT_SECRET\""),
        "{stdout}"
    );
    assert!(stdout.contains("expires_in = 28800"), "{stdout}");
    assert!(!text(&out).contains(CANARY));
    // ./proxy.toml is the default path.
    let out = fitbit_proxy(&["check"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn check_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = shipped_config()
        .replace("expires_in = 28800", "expires_in = 1234")
        .replace("burst = 10", "burst = 0");
    std::fs::write(dir.path().join("bad.toml"), bad).unwrap();
    let out = fitbit_proxy(&["check", "--config", "bad.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml: credentials.expires_in = 1234: must be one of 3600, 28800, 86400, 604800, 2592000, 31536000"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.toml: rate_limit.burst = 0"),
        "{stderr}"
    );
    assert!(!text(&out).contains(CANARY));
}

#[test]
fn run_with_a_bad_config_exits_2_and_a_missing_one_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = fitbit_proxy(&["--config", "nowhere.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("nowhere.toml"), "{}", text(&out));
}

#[test]
fn run_exits_1_when_it_cannot_bind() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let config = shipped_config()
        .replace("addr = \"127.0.0.1:8080\"", &format!("addr = \"{addr}\""))
        .replace("addr = \"127.0.0.1:9090\"", "addr = \"\"");
    std::fs::write(dir.path().join("proxy.toml"), config).unwrap();
    let out = fitbit_proxy(&["run"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("cannot bind"), "{}", text(&out));
}

#[test]
fn unknown_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = fitbit_proxy(&["--no-such-flag"], dir.path());
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn simulate_takes_the_quota_window_from_the_command_line() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut child = Command::new(BIN)
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--quota",
            "2",
            "--window",
            "30s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    let addr = banner.rsplit("http://").next().unwrap().trim().to_string();
    let exchange = |request: String| {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    // sim-client:sim-secret, the simulator's own credentials.
    let token = exchange(
        "POST /oauth2/token HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic c2ltLWNsaWVudDpzaW0tc2VjcmV0\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 29\r\n\r\ngrant_type=client_credentials"
            .to_string(),
    );
    let body: serde_json::Value =
        serde_json::from_str(token.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    let bearer = body["access_token"].as_str().unwrap().to_string();
    let get = || {
        exchange(format!("GET /1/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {bearer}\r\n\r\n"))
    };
    let (first, second, third) = (get(), get(), get());
    assert!(
        first.starts_with("HTTP/1.1 200") && first.contains("fitbit-rate-limit-limit: 2"),
        "{first}"
    );
    assert!(first.contains("fitbit-rate-limit-reset: 30"), "{first}");
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(third.starts_with("HTTP/1.1 429"), "{third}");
    let _ = child.kill();
    let _ = child.wait();
}
