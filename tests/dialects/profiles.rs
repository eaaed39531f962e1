//! Profiles and token options over real sockets (SPEC §10): the `generic`
//! profile asks for its token as configured (client in the form body,
//! scope, extra fields, no lifetime) and answers its own errors as RFC 9457
//! problem details; the proxy's 429 speaks the configured dialect; `check`
//! names every bad profile, dialect or token setting at once.

use std::process::Command;
use std::time::Duration;

use crate::support::binary::BIN;
use crate::support::*;
use fitbit_proxy::sim::{Dialect, SimConfig};
use http::StatusCode;

/// A generic-profile proxy in front of a simulator speaking `dialect`.
async fn generic(credentials: &str, rate_limit: &str, sim: SimConfig) -> Harness {
    let mut h = Setup::default().sim(sim).start().await;
    // The harness writes no top-level key (and asks for a lifetime): a
    // second proxy with the profile set, in front of the same simulator.
    let extras = Extras {
        credentials: format!("{credentials}\nexpires_in = 0"),
        rate_limit: rate_limit.to_owned(),
        ..Extras::default()
    };
    let toml = format!(
        "profile = \"generic\"\n{}",
        config_toml(&h.upstream, None, &extras)
    )
    .replace("\nexpires_in = 0", "");
    let config = parse_config(&toml, h.dir.path());
    assert_eq!(config.profile, fitbit_proxy::config::Profile::Generic);
    let (proxy, stop, task) = spawn_proxy(config, None).await;
    h.begin_stop();
    h.proxy = proxy;
    std::mem::forget((stop, task));
    h
}

fn last_token_request(h: &Harness) -> fitbit_proxy::sim::ReceivedToken {
    let requests = h.sim.token_requests();
    requests.last().cloned().expect("a token request")
}

#[tokio::test(start_paused = true)]
async fn generic_asks_for_its_token_as_configured_and_answers_problem_details() {
    let creds = "client_auth = \"post\"\nscope = \"read write\"\nparams = { audience = \"https://api.example/\" }\nexpires_in = 7200";
    let h = generic(
        creds,
        "headers = \"ietf\"\nquota = 1000\nwindow = \"1m\"",
        SimConfig {
            headers: Dialect::Ietf,
            ..sim_config()
        },
    )
    .await;
    let client = http1_client();
    let (res, _) = send(&client, get(&h.url("/v1/items"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let token = last_token_request(&h);
    assert!(
        !token.headers.contains_key("authorization"),
        "the secret is never in both places"
    );
    assert_eq!(token.form_value("client_id"), Some(CLIENT_ID));
    assert_eq!(token.form_value("client_secret"), Some(SECRET));
    assert_eq!(token.form_value("scope"), Some("read write"));
    assert_eq!(token.form_value("audience"), Some("https://api.example/"));
    assert_eq!(token.form_value("expires_in"), Some("7200"));
    // The proxy's own error: problem+json, and the kind in the header.
    let (res, body) = send(&client, get(&h.url("/oauth2/token"))).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(proxy_error(&res), Some("forbidden"));
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 403);
    assert_eq!(problem["title"], "Forbidden");
    assert!(problem["type"].as_str().unwrap().ends_with("forbidden"));
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("not forwarded"),
        "{problem}"
    );
}

#[tokio::test(start_paused = true)]
async fn without_expires_in_generic_sends_none_and_basic_sends_no_secret_in_the_body() {
    let h = generic(
        "",
        "headers = \"none\"\nquota = 100\nwindow = \"10s\"",
        sim_config(),
    )
    .await;
    send(&http1_client(), get(&h.url("/v1/x"))).await;
    let token = last_token_request(&h);
    assert!(token.headers.contains_key("authorization"));
    assert_eq!(token.form_value("expires_in"), None);
    assert_eq!(token.form_value("client_secret"), None);
    assert_eq!(
        token.form,
        [("grant_type".to_owned(), "client_credentials".to_owned())]
    );
}

/// The proxy's own 429 in the IETF dialect: its view in `RateLimit` and
/// `RateLimit-Policy`, agreeing with the body and `Retry-After`.
#[tokio::test(start_paused = true)]
async fn a_proxy_429_speaks_the_configured_dialect() {
    let h = generic(
        "",
        "headers = \"ietf\"\nquota = 4\nwindow = \"1m\"\nburst = 2\nmax_wait = \"1s\"",
        SimConfig {
            headers: Dialect::Ietf,
            quota: 4,
            window: Duration::from_secs(60),
            ..sim_config()
        },
    )
    .await;
    let client = http1_client();
    let mut refusal = None;
    for _ in 0..6 {
        let (res, body) = send(&client, get(&h.url("/v1/x"))).await;
        if proxy_error(&res) == Some("rate_limited") {
            refusal = Some((res, body));
            break;
        }
    }
    let (res, body) = refusal.expect("a proxy 429");
    let policy = res.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let current = res.headers()["ratelimit"].to_str().unwrap().to_owned();
    let retry = res.headers()["retry-after"].to_str().unwrap().to_owned();
    assert!(policy.starts_with("\"proxy\";q=4"), "{policy}");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let detail = problem["detail"].as_str().unwrap();
    let (r, t) = current
        .strip_prefix("\"proxy\";r=")
        .and_then(|rest| rest.split_once(";t="))
        .unwrap();
    assert!(
        detail.contains(&format!("{r} of 4 requests left")),
        "{detail} / {current}"
    );
    assert!(
        detail.contains(&format!("reset in {t} s")),
        "{detail} / {current}"
    );
    assert!(
        detail.contains(&format!("retry after {retry} s")),
        "{detail} / {retry}"
    );
    assert!(!res.headers().contains_key("fitbit-rate-limit-limit"));
}

/// Every bad profile, dialect and token setting named at once, each with
/// its key, value and line; exit 2.
#[test]
fn check_names_bad_dialects_resets_params_and_lifetimes_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[credentials]\nclient_id = \"a\"\nclient_secret_env = \"S\"\nexpires_in = 1234\nparams = { grant_type = \"password\", scope = \"x\" }\n[rate_limit]\nheaders = \"x-ratelimits\"\n",
            vec![
                "credentials.expires_in = 1234: must be one of 3600, 28800, 86400, 604800, 2592000, 31536000 (line 4,",
                "credentials.params.grant_type = \"password\": reserved",
                "credentials.params.scope = \"x\": reserved",
                "rate_limit.headers = \"x-ratelimits\": must be one of fitbit, ietf, ratelimit, x-ratelimit, x-rate-limit, none (line 7,",
            ],
        ),
        (
            "profile = \"fitbit\"\n[credentials]\nclient_id = \"a\"\nclient_secret_env = \"S\"\nexpires_in = 60\nparams = { client_secret = \"leak\" }\n[rate_limit]\nheaders = \"x-rate-limit\"\nwindow = \"2s\"\n",
            vec![
                "credentials.expires_in = 60: must be one of",
                "credentials.params.client_secret = \"<redacted>\": reserved",
                "rate_limit.reset: missing (required with headers = \"x-rate-limit\": \"delta\" or \"epoch\", as the API documents its reset) (line 8,",
                "rate_limit.window = \"2s\": must be from 5s to 24h (line 9,",
            ],
        ),
        (
            "profile = \"generic\"\n[credentials]\nclient_id = \"a\"\nclient_secret_env = \"S\"\nexpires_in = 0\n",
            vec![
                "upstream.url: missing (required with profile = \"generic\")",
                "credentials.token_url: missing (required with profile = \"generic\")",
                "credentials.expires_in = 0: must be a positive number of seconds (line 5,",
            ],
        ),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .env("S", "x")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stderr}");
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for line in want {
            assert!(stderr.contains(line), "{line:?} not in:\n{stderr}");
        }
        assert!(!stderr.contains("leak"), "a secret in params is not echoed");
    }
}
