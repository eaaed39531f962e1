//! No secret and no token ever leaves the process except on the wire to
//! its rightful destination (SPEC T7): the real binary runs with
//! `RUST_LOG=trace` for every crate, traffic of every kind goes through it,
//! and everything it printed or answered is scanned for canaries.

use std::process::Command;

use crate::support::binary::{Launch, BIN};
use crate::support::*;
use base64::Engine;
use fitbit_proxy::sim::{Sim, TokenFailure};
use http::Request;
use http_body_util::Full;

const CLIENT_CANARY: &str = "CLIENTAUTH_CANARY";

/// Every form a canary could leak in.
fn canaries() -> Vec<String> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{SECRET}"));
    vec![
        SECRET.into(),
        "SECRET_CANARY".into(),
        "TOKEN_CANARY".into(),
        CLIENT_CANARY.into(),
        basic,
    ]
}

fn assert_clean(what: &str, text: &str) {
    for canary in canaries() {
        assert!(!text.contains(&canary), "{what} leaks {canary}:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_secret_in_trace_logs_answers_or_check_output() {
    let sim = Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let launch = Launch {
        log_format: "text",
        rust_log: "trace",
        ..Launch::default()
    };
    let p = launch.start(&upstream).await;

    let check = Command::new(BIN)
        .args(["check", "--config"])
        .arg(p.config_path())
        .env(SECRET_ENV, SECRET)
        .output()
        .unwrap();
    assert!(check.status.success());
    assert_clean(
        "check",
        &format!(
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ),
    );

    let base = format!("http://{}", p.proxy);
    let client = http1_client();
    let mut answers = String::new();
    let mut record = |res: (http::Response<()>, bytes::Bytes)| {
        answers.push_str(&format!("{:?}{:?}", res.0.headers(), res.1));
    };
    let with_client_auth = |path: &str| {
        Request::get(format!("{base}{path}"))
            .header("authorization", format!("Bearer {CLIENT_CANARY}"))
            .header("proxy-authorization", format!("Basic {CLIENT_CANARY}"))
            .header("cookie", format!("session={CLIENT_CANARY}"))
            .body(Full::default())
            .unwrap()
    };
    record(send(&client, with_client_auth("/1/user/-/profile.json")).await);
    record(send(&h2c_client(), with_client_auth("/1/h2")).await);
    record(send(&client, with_client_auth("/oauth2/token")).await);
    record(send(&client, get(&format!("{base}/sim/status/500"))).await);
    // A revoked token: the proxy fetches another and replays.
    sim.revoke(&sim.current_token().unwrap());
    record(send(&client, get(&format!("{base}/1/after-revoke"))).await);
    // The token endpoint refuses the credentials; the next token dies.
    sim.fail_token_requests(Some(TokenFailure::InvalidClient));
    sim.revoke_all();
    record(send(&client, get(&format!("{base}/1/rejected"))).await);
    record(send(&client, get(&format!("{base}/1/rejected-again"))).await);
    assert!(
        sim.token_fetches() >= 3,
        "the scenario did not exercise the token endpoint"
    );

    p.child.sigterm();
    let out = p.child.exited().await;
    let logs = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(logs.contains("TRACE"), "trace logging was not on");
    assert!(
        logs.contains("credentials rejected"),
        "the rejection was not logged"
    );
    assert_clean("the logs", &logs);
    assert_clean("the answers", &answers);
    assert_eq!(out.status.code(), Some(0), "exit after SIGTERM");
}

#[test]
fn debug_output_of_config_and_tokens_is_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let toml = "[credentials]\nclient_id = \"x\"\nclient_secret = \"SECRET_CANARY_debug\"\n";
    let config = parse_config(toml, dir.path());
    assert_clean("Config's Debug", &format!("{config:?} {config:#?}"));
    assert_clean("render_redacted", &config.render_redacted());
    let grant = fitbit_proxy::token::exchange::parse_response(
        http::StatusCode::OK,
        br#"{"access_token":"TOKEN_CANARY_debug","expires_in":60,"token_type":"Bearer"}"#,
    )
    .unwrap();
    assert_clean("Grant's Debug", &format!("{grant:?}"));
}
