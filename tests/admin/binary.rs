//! The admin side of the real binary, in real time: the JSON access log,
//! an admin address already in use, and the demo's printed commands.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};

use crate::support::binary::*;

use crate::*;

/// Every stderr line as JSON (all of them must be), and the access lines.
fn json_lines(out: &Output) -> (Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let all = crate::support::binary::json_lines(out);
    let access = access_lines(&all).into_iter().cloned().collect();
    (all, access)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_access_log_has_one_line_per_request_with_its_fields_and_no_secret() {
    let (_sim, upstream) = simulator().await;
    let p = Launch::default().start(&upstream).await;
    let client = http1_client();
    let base = format!("http://{}", p.proxy);
    let req = Request::get(format!(
        "{base}/1/user/-/profile.json?token=QUERY_CANARY&x=1"
    ))
    .header("x-request-id", "from-the-client")
    .body(Full::default())
    .unwrap();
    let (ok, ok_body) = send(&client, req).await;
    assert_eq!(ok.status(), StatusCode::OK);
    let (refused, refused_body) = send(&client, get(&format!("{base}/oauth2/token"))).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    p.child.sigterm();
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));

    let (all, access) = json_lines(&out);
    assert!(!all.is_empty());
    assert_eq!(access.len(), 2, "one line per request: {access:#?}");
    let first = &access[0];
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/1/user/-/profile.json");
    assert_eq!(first["status"], 200);
    assert_eq!(first["origin"], "upstream");
    assert_eq!(first["request_id"], "from-the-client");
    assert_eq!(first["bytes"], ok_body.len() as u64);
    assert_eq!(first["complete"], true);
    assert!(first["duration_ms"].as_f64().is_some_and(|d| d >= 0.0));
    let second = &access[1];
    assert_eq!(second["path"], "/oauth2/token");
    assert_eq!(second["status"], 403);
    assert_eq!(second["origin"], "proxy");
    assert_eq!(second["bytes"], refused_body.len() as u64);
    assert_eq!(
        second["request_id"],
        refused.headers()["x-request-id"].to_str().unwrap()
    );
    let logs = String::from_utf8_lossy(&out.stderr);
    for canary in [SECRET, "SECRET_CANARY", "TOKEN_CANARY", "QUERY_CANARY"] {
        assert!(!logs.contains(canary), "the logs leak {canary}:\n{logs}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_address_in_use_exits_1() {
    let taken = bind().await;
    let (_sim, upstream) = simulator().await;
    let launch = Launch {
        admin: Some(taken.local_addr().unwrap()),
        ..Launch::default()
    };
    let out = launch.spawn(&upstream).await.child.exited().await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot bind admin.addr"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_prints_curl_commands_that_work_as_printed() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Running(Some(child));
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut banner = Vec::new();
    while let Ok(line) = lines_rx.recv_timeout(Duration::from_secs(10)) {
        let end = line.contains("Ctrl-C");
        banner.push(line);
        if end {
            break;
        }
    }
    let commands: Vec<Vec<String>> = banner
        .iter()
        .map(|l| l.trim())
        .filter(|l| l.starts_with("curl "))
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    assert_eq!(commands.len(), 6, "{banner:#?}");
    let run = |args: &[String]| {
        // As printed, with a bound on time added.
        let out = Command::new(&args[0])
            .args(&args[1..])
            .args(["--max-time", "10"])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let outputs = tokio::task::spawn_blocking(move || {
        commands
            .iter()
            .map(|c| (c.join(" "), run(c)))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let profile: serde_json::Value = serde_json::from_str(&outputs[0].1)
        .unwrap_or_else(|e| panic!("{}: {e}: {}", outputs[0].0, outputs[0].1));
    assert_eq!(profile["user"]["encodedId"], "SIM123", "{profile}");
    assert!(outputs[1].1.starts_with("HTTP/1.1 200"), "{}", outputs[1].1);
    assert!(
        outputs[2].1.contains("x-fitbit-proxy-error: forbidden"),
        "{}",
        outputs[2].1
    );
    assert_eq!(outputs[3].1, "ok\n");
    assert_eq!(outputs[4].1, r#"{"ready":true,"shared":"disabled"}"#);
    assert!(
        outputs[5]
            .1
            .contains("fitbit_proxy_requests_total{origin=\"upstream\",code=\"200\"} 2"),
        "{}",
        outputs[5].1
    );
    child.sigterm();
    let out = child.exited().await;
    assert_eq!(out.status.code(), Some(0));
}
