//! What the proxy shows of itself: no secret and no token ever leaves the
//! process except on the wire to its rightful destination (SPEC T7: the
//! real binary at `RUST_LOG=trace`, every output scanned for canaries);
//! what a client sends never breaks a log line; and no label of `/metrics`
//! holds anything a client chose.

use std::process::Command;

use crate::support::binary::{Launch, BIN};
use crate::support::invariants::*;
use crate::support::*;
use base64::Engine;
use fitbit_proxy::sim::TokenFailure;
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
    let (sim, upstream) = simulator().await;
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
    // The admin port: the status page, its data, readiness and metrics.
    for path in ["/", "/status.json", "/readyz", "/metrics"] {
        let res = send(&client, get(&format!("http://{}{path}", p.admin))).await;
        assert_eq!(res.0.status().is_success(), path != "/readyz", "{path}");
        record(res);
    }

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

/// Runs the real binary with `log.format = format` in front of a
/// simulator, sends `requests` (raw HTTP/1 bytes, each on its own
/// connection), then stops it with SIGTERM. Returns, per request, whether
/// the stack answered it (it carries the proxy's `x-request-id`), and the
/// log the binary wrote.
async fn log_of(format: &'static str, requests: &[Vec<u8>]) -> (Vec<bool>, String) {
    use tokio::io::AsyncWriteExt;
    let (_sim, upstream) = simulator().await;
    let launch = Launch {
        log_format: format,
        ..Launch::default()
    };
    let p = launch.start(&upstream).await;
    let mut through_stack = Vec::new();
    for bytes in requests {
        let mut conn = tokio::net::TcpStream::connect(p.proxy).await.unwrap();
        conn.write_all(bytes).await.unwrap();
        let (answer, _) = read_for(&mut conn, std::time::Duration::from_secs(5)).await;
        let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 "), "{answer:?}");
        // A head the HTTP parser refused is answered and logged too, but
        // nothing of it is logged: no path, so no marker.
        let refused_head = answer.contains("the request head is not valid http/1.1");
        through_stack.push(answer.contains("x-request-id:") && !refused_head);
    }
    p.child.sigterm();
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (through_stack, log)
}

/// Logs (2.10): CR, LF, ESC and quotes sent in the path, the method, the
/// request id and other fields never break the access log: the parser refuses
/// raw CR, LF and ESC before anything is logged; what is logged (quotes,
/// backslashes, braces, percent-encoded CR LF ESC) stays inside one line per
/// request, in text and in JSON (each line parses, the path and the request
/// id round-trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_control_characters_and_quotes_never_break_a_log_line() {
    let requests: Vec<Vec<u8>> = [
        &b"GET /1/inj0/%0d%0a%1b%5b31m%22%7d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"[..],
        b"GET /1/inj1/\"}{\\ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /1/inj2 HTTP/1.1\r\nHost: x\r\nX-Request-Id: inj2\"}\\n{\"level\":\"ERROR\"\r\nConnection: close\r\n\r\n",
        b"GET /1/inj3 HTTP/1.1\r\nHost: x\r\nUser-Agent: \"}\x1b[31m\r\nConnection: close\r\n\r\n",
        b"GET /1/inj4\x1b[31m HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /1/inj5\r\nX-Forged: 1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"G\"ET /1/inj6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"X-INJ7'!#$%&*+.^_`|~ /1/inj7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /1/inj8 HTTP/1.1\r\nHost: x\r\nUser-Agent: a\rb\r\nConnection: close\r\n\r\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    for format in ["text", "json"] {
        let (through_stack, log) = log_of(format, &requests).await;
        assert!(!log.contains('\x1b'), "{format}: a raw ESC in the log");
        assert!(!log.contains('\r'), "{format}: a raw CR in the log");
        let lines: Vec<&str> = log.lines().collect();
        for (i, logged) in through_stack.iter().enumerate() {
            let marker = format!("inj{i}");
            let found: Vec<&&str> = lines.iter().filter(|l| l.contains(&marker)).collect();
            let want = usize::from(*logged);
            assert_eq!(found.len(), want, "{format}: request {i}: {found:#?}");
            for line in found {
                assert!(line.contains("request"), "{format}: {line}");
                if format == "json" {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not one JSON record: {e}: {line}"));
                    assert!(v["path"].as_str().unwrap().starts_with("/1/inj"), "{v}");
                    if i == 2 {
                        assert_eq!(v["request_id"], "inj2\"}\\n{\"level\":\"ERROR\"", "{v}");
                    }
                }
            }
        }
        // The quoted request id and the path with quotes went through.
        assert!(through_stack[0] && through_stack[2], "{through_stack:?}");
        if format == "json" {
            for line in lines.iter().filter(|l| l.starts_with('{')) {
                serde_json::from_str::<serde_json::Value>(line)
                    .unwrap_or_else(|e| panic!("not one JSON record: {e}: {line}"));
            }
        }
        eprintln!("{format}: through the stack: {through_stack:?}");
    }
}

/// Every series `/metrics` shows (name and labels, without the value).
async fn series(h: &Harness) -> std::collections::BTreeSet<String> {
    let (_, body) = send(&http1_client(), get(&h.admin_url("/metrics"))).await;
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_owned())
        .collect()
}

/// Metrics (2.11): 10 000 distinct paths, queries, `Host`s and user agents
/// (forwarded and refused alike) add no series to `/metrics`: no label holds
/// a raw path, host, query or user agent. The SPEC §8 metrics stay present.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn distinct_paths_add_no_metric_series() {
    let h = Setup::default().admin().start().await;
    let client = h2c_client();
    let request = |i: usize| {
        // Mostly refused (403, answered by the proxy: cheap), some forwarded.
        let path = if i.is_multiple_of(10) {
            "/1/user"
        } else {
            "/oauth2/x"
        };
        let mut req = get(&h.url(&format!("{path}/{i}?q={i}")));
        let headers = req.headers_mut();
        headers.insert("user-agent", format!("agent-{i}").parse().unwrap());
        headers.insert("host", format!("host-{i}.internal").parse().unwrap());
        req
    };
    // Warm-up: one answer of each kind, so that their series exist.
    for i in [1, 10] {
        send(&client, request(i)).await;
    }
    let before = series(&h).await;
    for chunk in (0..10_000).collect::<Vec<_>>().chunks(100) {
        let batch: Vec<_> = chunk.iter().map(|i| send(&client, request(*i))).collect();
        for (res, _) in futures_util::future::join_all(batch).await {
            assert!(matches!(res.status().as_u16(), 200 | 403));
        }
    }
    let after = series(&h).await;
    assert_eq!(
        after.difference(&before).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "new series after 10 000 distinct paths"
    );
    for name in [
        "fitbit_proxy_requests_total",
        "fitbit_proxy_request_duration_seconds_bucket",
        "fitbit_proxy_queue_depth",
        "fitbit_proxy_token_expires_in_seconds",
    ] {
        assert!(after.iter().any(|s| s.starts_with(name)), "{name} missing");
    }
    assert_invariants(&h);
}
