//! What an operator sees: the access log's `client` and `error` fields,
//! requests hyper refuses before the stack (a head over the limit, a
//! malformed `Content-Length`) answered, logged and counted once each, and
//! the metrics beside the request counts: build info, process metrics,
//! open connections by protocol.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use fitbit_proxy::sim::{Sim, SimConfig};
use http::StatusCode;
use prometheus_parse::{Scrape, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::binary::{access_lines, json_lines, Launch};
use crate::support::*;
use crate::{scrape, value};

/// One raw HTTP/1 answer: status, headers (names lowercased), body.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// The answers in `raw`, in order (bodies framed by Content-Length).
fn answers(mut raw: &str) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some((head, rest)) = raw.split_once("\r\n\r\n") {
        let mut lines = head.lines();
        let status = first_status(lines.next().unwrap_or_default());
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .get("content-length")
            .map_or(0, |v| v.parse().unwrap());
        out.push(Answer {
            status,
            headers,
            body: rest[..len].to_owned(),
        });
        raw = &rest[len..];
    }
    out
}

/// Sends `bytes` on a fresh connection and reads until the proxy closes
/// it (at most 10 s); returns the connection's own address too.
async fn exchange(proxy: SocketAddr, bytes: &[u8]) -> (SocketAddr, Vec<Answer>) {
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    let local = stream.local_addr().unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    // A refusal closes with the rest of the head unread, which may reset
    // the connection after the answer: what was read before counts.
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy kept the connection open");
    (local, answers(&String::from_utf8_lossy(&out)))
}

/// Asserts the proxy's own answer for a refused head: status, kind, a
/// request id, Fitbit's error shape, and the connection closed.
fn assert_refusal(answer: &Answer, status: u16, code: &str) -> String {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.headers["x-fitbit-proxy-error"], code, "{answer:?}");
    assert_eq!(answer.headers["connection"], "close", "{answer:?}");
    assert_eq!(answer.headers["content-type"], "application/json");
    assert!(answer.headers.contains_key("date"), "{answer:?}");
    assert_fitbit_error(answer.body.as_bytes(), code);
    let id = answer.headers["x-request-id"].clone();
    assert_eq!(id.len(), 32, "{answer:?}");
    id
}

async fn metrics(admin: SocketAddr) -> Scrape {
    let (res, body) = send(&http1_client(), get(&format!("http://{admin}/metrics"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    scrape(&String::from_utf8_lossy(&body))
}

/// A 70 KB header (431), a malformed Content-Length (400) on a fresh
/// connection, and the same after a request with a body on one connection
/// (hyper serves it on, rather than the driver): each is answered by the
/// proxy with a request id, once in `requests_total`, once in the access
/// log with the client's address and the error kind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_hyper_refuses_are_answered_counted_and_logged_once() {
    let sim = Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let p = Launch::default().start(&upstream).await;

    let big = format!(
        "GET /1/x HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let (big_from, big_answers) = exchange(p.proxy, big.as_bytes()).await;
    assert_eq!(big_answers.len(), 1, "{big_answers:?}");
    let big_id = assert_refusal(&big_answers[0], 431, "header_too_large");

    let bad_cl = b"POST /1/x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello";
    let (bad_from, bad_answers) = exchange(p.proxy, bad_cl).await;
    assert_eq!(bad_answers.len(), 1, "{bad_answers:?}");
    let bad_id = assert_refusal(&bad_answers[0], 400, "bad_request");

    let after_body = b"POST /1/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                       GET /1/y HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\n";
    let (second_from, second_answers) = exchange(p.proxy, after_body).await;
    let statuses: Vec<u16> = second_answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 400], "{second_answers:?}");
    let second_id = assert_refusal(&second_answers[1], 400, "bad_request");
    assert_ne!(second_answers[0].headers["x-request-id"], second_id);

    let m = metrics(p.admin).await;
    let count = |code| {
        value(
            &m,
            "fitbit_proxy_requests_total",
            &[("origin", "proxy"), ("code", code)],
        )
    };
    assert_eq!(count("431"), 1.0);
    assert_eq!(count("400"), 2.0);
    assert_eq!(
        value(
            &m,
            "fitbit_proxy_requests_total",
            &[("origin", "upstream"), ("code", "200")]
        ),
        1.0
    );
    assert_eq!(sim.api_started(), 1, "only the valid POST was forwarded");

    p.child.sigterm();
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    let all = json_lines(&out);
    let access = access_lines(&all);
    assert_eq!(access.len(), 4, "{access:#?}");
    for (id, from, status, error) in [
        (&big_id, big_from, 431, "header_too_large"),
        (&bad_id, bad_from, 400, "bad_request"),
        (&second_id, second_from, 400, "bad_request"),
    ] {
        let lines: Vec<_> = access.iter().filter(|l| l["request_id"] == **id).collect();
        assert_eq!(lines.len(), 1, "{id}: {access:#?}");
        let line = lines[0];
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["origin"], "proxy", "{line}");
        assert_eq!(line["error"], error, "{line}");
        assert_eq!(line["client"], from.to_string(), "{line}");
        assert_eq!(line["caller"], from.ip().to_string(), "{line}");
        assert_eq!(line["complete"], true, "{line}");
        assert!(line["bytes"].as_u64().is_some_and(|b| b > 0), "{line}");
        // The head could not be read: no method or path to tell.
        assert!(
            line.get("method").is_none() && line.get("path").is_none(),
            "{line}"
        );
    }
    let forwarded: Vec<_> = access.iter().filter(|l| l["status"] == 200).collect();
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0]["client"], second_from.to_string());
    assert!(forwarded[0].get("error").is_none(), "{}", forwarded[0]);
}

/// Every access-log line names the peer in `client` and the caller in
/// `caller` (the `x-caller` header's name, else the peer's address); the
/// proxy's own answers name their kind in `error` (the
/// `x-fitbit-proxy-error` value), the upstream's have none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_lines_name_the_client_and_the_error_kind() {
    let sim = Sim::new(SimConfig {
        quota: 1,
        window: Duration::from_secs(3600),
        ..sim_config()
    });
    let upstream = sim.serve_plain(bind().await);
    let mut launch = Launch::default();
    launch.extra.rate_limit = "hourly_quota = 1\nburst = 1".into();
    let p = launch.start(&upstream).await;
    let mut seen = Vec::new();
    for (path, caller) in [
        ("/1/user/-/profile.json", ""),
        ("/1/again.json", "x-caller: billing\r\n"),
        ("/oauth2/token", "x-caller: bad name\r\n"),
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{caller}Connection: close\r\n\r\n");
        let (from, answers) = exchange(p.proxy, request.as_bytes()).await;
        assert_eq!(answers.len(), 1, "{path}: {answers:?}");
        seen.push((
            from,
            answers[0].status,
            answers[0].headers["x-request-id"].clone(),
        ));
    }
    let statuses: Vec<u16> = seen.iter().map(|s| s.1).collect();
    assert_eq!(statuses, [200, 429, 403]);
    p.child.sigterm();
    let out = p.child.exited().await;
    let all = json_lines(&out);
    let access = access_lines(&all);
    assert_eq!(access.len(), 3, "{access:#?}");
    for (((from, status, id), error), caller) in seen
        .iter()
        .zip([None, Some("rate_limited"), Some("forbidden")])
        .zip([None, Some("billing"), None])
    {
        let line = access
            .iter()
            .find(|l| l["request_id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id}: {access:#?}"));
        assert_eq!(line["status"], *status, "{line}");
        assert_eq!(line["client"], from.to_string(), "{line}");
        let caller = caller.map_or_else(|| from.ip().to_string(), str::to_owned);
        assert_eq!(line["caller"], caller, "{line}");
        assert_eq!(line["error"].as_str(), error, "{line}");
        assert_eq!(
            line["origin"],
            if error.is_some() { "proxy" } else { "upstream" }
        );
    }
}

/// `fitbit_proxy_open_connections` follows connections as they open and
/// close, by protocol; the build and the process are described beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_connections_by_protocol_build_info_and_process_metrics() {
    let h = Setup::default().admin().start().await;
    let admin = h.admin.unwrap();
    let open = |m: &Scrape, protocol| {
        value(
            m,
            "fitbit_proxy_open_connections",
            &[("protocol", protocol)],
        )
    };
    let m = metrics(admin).await;
    assert_eq!((open(&m, "http1"), open(&m, "h2")), (0.0, 0.0));

    // Each client keeps its one connection open in its pool.
    let (h1, h2) = (http1_client(), h2c_client());
    for client in [&h1, &h2] {
        let (res, _) = send(client, get(&h.url("/1/user/-/profile.json"))).await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    let m = metrics(admin).await;
    assert_eq!((open(&m, "http1"), open(&m, "h2")), (1.0, 1.0));
    // A second h1 connection, held open between requests.
    let mut raw = TcpStream::connect(h.proxy).await.unwrap();
    raw.write_all(b"GET /1/x HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    assert!(raw.read(&mut buf).await.unwrap() > 0);
    let m = metrics(admin).await;
    assert_eq!((open(&m, "http1"), open(&m, "h2")), (2.0, 1.0));

    drop((h1, h2, raw));
    eventually_async(Duration::from_secs(10), || async {
        let m = metrics(admin).await;
        (open(&m, "http1"), open(&m, "h2")) == (0.0, 0.0)
    })
    .await;

    let build: Vec<_> = m_samples(&metrics(admin).await, "fitbit_proxy_build_info");
    assert_eq!(build.len(), 1, "{build:?}");
    assert_eq!(
        build[0].labels.get("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(build[0]
        .labels
        .get("revision")
        .is_some_and(|r| !r.is_empty()));
    assert!(build[0]
        .labels
        .get("rustversion")
        .is_some_and(|r| r.contains('.')));
    assert!(matches!(build[0].value, Value::Gauge(v) if v == 1.0));

    let m = metrics(admin).await;
    let process = |name| value(&m, name, &[]);
    assert!(process("process_cpu_seconds_total") > 0.0);
    assert!(process("process_resident_memory_bytes") > 1e6);
    assert!(process("process_virtual_memory_bytes") >= process("process_resident_memory_bytes"));
    assert!(process("process_open_fds") >= 3.0);
    assert!(process("process_max_fds") >= process("process_open_fds"));
    assert!(process("process_threads") >= 2.0);
    assert!(process("process_start_time_seconds") > 1.5e9);
    h.stop().await;
}

fn m_samples(scrape: &Scrape, name: &str) -> Vec<prometheus_parse::Sample> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .cloned()
        .collect()
}
