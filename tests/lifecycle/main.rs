//! Catalog §5 (RELIABILITY.md), the proxy's life seen by its clients:
//! shutdown under load (5.02), pacing waiters at shutdown (5.03), the grace
//! period running out (5.04), readiness through a whole life (5.05), a
//! restart (5.06), panics (5.11); and from §3 the process-level limits:
//! running out of file descriptors (3.09), 5 000 requests against a slow
//! upstream (3.13), one connection's flood (3.10), the admin port's
//! isolation (3.15, with floods and slowloris on either port). What needs signals, rlimits or files runs the real
//! binary (tests/support/binary.rs) in real time with bounded waits; the
//! rest runs in-process.

#[path = "../support/mod.rs"]
mod support;

mod h2_goaway;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use fitbit_proxy::ops::metrics::Metrics;
use fitbit_proxy::sim::{Sim, SimConfig, TokenFailure};
use fitbit_proxy::Body;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use support::binary::*;
use support::invariants::*;
use support::*;

const SEC: Duration = Duration::from_secs(1);

fn id_of(v: &serde_json::Value) -> String {
    v["request_id"].as_str().unwrap_or_default().to_owned()
}

/// 5.02: eight clients (h1 and h2c) send requests back to back, each with
/// its own id; SIGTERM lands in the middle. Every request the proxy
/// accepted (one access-log line each) got its complete 200, and every
/// 200 a client got was logged: nothing accepted was lost. The clients
/// stop when a connection is refused, which must come after the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request() {
    let sim = Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let p = Launch::default().start(&upstream).await;
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..8 {
        let client = if c % 2 == 0 {
            http1_client()
        } else {
            h2c_client()
        };
        let url = format!("http://{}/sim/slow/50", p.proxy);
        clients.spawn(async move {
            let (mut ok, mut failed) = (Vec::new(), 0);
            // Bounded: at most 400 requests of 50 ms each.
            for n in 0..400 {
                let id = format!("c{c}-{n}");
                let req = Request::get(&url)
                    .header("x-request-id", &id)
                    .body(Full::default())
                    .unwrap();
                match client.request(req).await {
                    Ok(res) => {
                        let status = res.status();
                        let body = http_body_util::BodyExt::collect(res.into_body()).await;
                        assert!(body.is_ok(), "{id}: an accepted answer was cut short");
                        assert_eq!(status, StatusCode::OK, "{id}");
                        ok.push(id);
                    }
                    Err(e) if e.is_connect() => break,
                    // Sent on a kept-alive connection the proxy was closing.
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    tokio::time::sleep(SEC).await;
    p.child.sigterm();
    let (mut answered, mut unsent) = (BTreeSet::new(), 0);
    while let Some(done) = clients.join_next().await {
        let (ok, failed) = done.unwrap();
        answered.extend(ok);
        unsent += failed;
    }
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    let lines = json_lines(&out);
    let logged: BTreeSet<String> = access_lines(&lines)
        .into_iter()
        .filter(|l| l["path"] == "/sim/slow/50")
        .map(|l| {
            assert_eq!(l["status"], 200, "{l}");
            assert_eq!(l["complete"], true, "{l}");
            id_of(l)
        })
        .collect();
    eprintln!(
        "SIGTERM under load: {} answered, {unsent} not taken on a closing connection",
        answered.len()
    );
    assert!(answered.len() > 20, "load before the signal");
    assert_eq!(logged, answered, "accepted = answered");
    assert_eq!(sim.api_started() as usize, answered.len(), "G6");
}

/// 5.03, decided: a request waiting for a pacing slot when SIGTERM comes
/// is served within `shutdown_grace`, since its slot is at most
/// `rate_limit.max_wait` away and `check` warns when `max_wait` is longer
/// than `shutdown_grace`. Here five requests wait on a 1 request/s pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_waiting_for_a_pacing_slot_at_sigterm_are_served() {
    let sim = Sim::new(SimConfig {
        quota: 3600,
        ..sim_config()
    });
    let upstream = sim.serve_plain(bind().await);
    let launch = Launch {
        extra: Extras {
            rate_limit: "hourly_quota = 3600\nburst = 1\nmax_wait = \"10s\"".into(),
            listen: "shutdown_grace = \"10s\"".into(),
            ..Extras::default()
        },
        ..Launch::default()
    };
    let p = launch.start(&upstream).await;
    let client = http1_client();
    let url = format!("http://{}{}", p.proxy, "/1/user/-/profile.json");
    let waiting: Vec<_> = (0..5)
        .map(|_| tokio::spawn(send_owned(client.clone(), url.clone())))
        .collect();
    // Bounded: 2 s for the first to be served and the rest to queue.
    for _ in 0..200 {
        if sim.api_started() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.child.sigterm();
    for w in waiting {
        assert_eq!(w.await.unwrap(), StatusCode::OK);
    }
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sim.api_started(), 5);
}

async fn send_owned(client: TestClient, url: String) -> StatusCode {
    send(&client, get(&url)).await.0.status()
}

/// 5.04: a request that outlasts `shutdown_grace` (1 s) is cut: the client
/// sees its connection end without an answer, the process exits 0, and a
/// log line says how many connections were cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_shutdown_grace_remaining_connections_are_cut_and_counted() {
    let sim = Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let launch = Launch {
        extra: Extras {
            listen: "shutdown_grace = \"1s\"".into(),
            ..Extras::default()
        },
        ..Launch::default()
    };
    let p = launch.start(&upstream).await;
    let slow =
        tokio::spawn(http1_client().request(get(&format!("http://{}/sim/slow/60000", p.proxy))));
    for _ in 0..200 {
        if sim.api_started() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(sim.api_started(), 1);
    p.child.sigterm();
    let answer = tokio::time::timeout(30 * SEC, slow).await.unwrap().unwrap();
    assert!(answer.is_err(), "a request past the grace was answered");
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0), "exit 0 after the grace");
    let lines = json_lines(&out);
    let cut = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("shutdown_grace elapsed"))
        })
        .unwrap_or_else(|| panic!("no line about the cut: {lines:#?}"));
    assert_eq!(cut["cut"], 1, "{cut}");
    assert_eq!(cut["level"], "WARN");
}

/// 5.06: a run fetches its token at start-up, once; after a clean stop
/// nothing under its working or temporary directory holds the token; a
/// restart fetches a new one (nothing was persisted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_fetches_the_token_again_and_nothing_is_left_on_disk() {
    let sim = Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let cwd = tempfile::tempdir().unwrap();
    for run in 1..=2 {
        let launch = Launch {
            cwd: Some(cwd.path().to_owned()),
            ..Launch::default()
        };
        let p = launch.start(&upstream).await;
        assert_eq!(sim.token_fetches(), run, "one fetch at start-up");
        let (res, _) = send(&http1_client(), get(&format!("http://{}/1/x", p.proxy))).await;
        assert_eq!(res.status(), StatusCode::OK);
        let token = sim.current_token().expect("a token");
        p.child.sigterm();
        let out = p.child.exited().await;
        assert_eq!(out.status.code(), Some(0));
        for dir in [cwd.path(), p.dir.path()] {
            assert!(
                !any_file_contains(dir, &token),
                "the token was written under {dir:?}"
            );
            assert!(!any_file_contains(dir, "TOKEN_CANARY"), "{dir:?}");
        }
        assert_no_canary("logs", &out.stderr);
    }
    assert_eq!(sim.tokens_issued(), 2);
}

/// CPU time (user + system, in clock ticks) the process has used.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// 3.09: the binary under `ulimit -n 64`, sent 100 connections that hold
/// still. It runs out of descriptors: it logs it, backs off instead of
/// spinning (under a quarter of a core while out), and once the
/// connections close it serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_file_descriptors_the_proxy_backs_off_and_recovers() {
    let sim = Sim::new(sim_config());
    let upstream = sim.serve_plain(bind().await);
    let launch = Launch {
        nofile: Some(64),
        ..Launch::default()
    };
    let p = launch.start(&upstream).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(p.proxy).await.unwrap());
    }
    tokio::time::sleep(SEC).await;
    let before = cpu_ticks(p.child.pid());
    tokio::time::sleep(2 * SEC).await;
    let spent = cpu_ticks(p.child.pid()) - before;
    eprintln!("out of descriptors: {spent} ticks of CPU in 2 s");
    assert!(spent < 50, "{spent} ticks in 2 s: the accept loop spins");
    drop(held);
    let client = http1_client();
    let mut served = false;
    // Bounded: 10 s for the held connections to go and a request to pass.
    for _ in 0..100 {
        let req = client.request(get(&format!("http://{}/1/after", p.proxy)));
        if let Ok(Ok(res)) = tokio::time::timeout(SEC, req).await {
            served = res.status() == StatusCode::OK;
            if served {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "not serving again after the connections closed");
    p.child.sigterm();
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    let lines = json_lines(&out);
    let pauses = lines
        .iter()
        .filter(|l| {
            l["level"] == "ERROR"
                && l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("accept failed; pausing"))
        })
        .count();
    eprintln!("out of descriptors: {pauses} accept pauses logged");
    // About one a second while out; a loop that retried at once would
    // log (and block on its stderr pipe) hundreds.
    assert!((1..=30).contains(&pauses), "{pauses} accept pauses logged");
}

/// 5.05: one run through every readiness state: no token yet (503) →
/// token (200) → the token endpoint fails until the token expires (503
/// naming it) → it recovers (200) → draining (503). `/healthz` is 200
/// throughout.
#[tokio::test(start_paused = true)]
async fn readiness_through_a_whole_life() {
    let mut h = Setup::default()
        .admin()
        .credentials("expires_in = 3600\nrefresh_before_expiry = \"5m\"")
        .start_with(|sim| sim.set_token_delay(2 * SEC))
        .await;
    let client = http1_client();
    let readyz = |h: &Harness| {
        let (client, url) = (client.clone(), h.admin_url("/readyz"));
        async move {
            let (res, body) = send(&client, get(&url)).await;
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            (
                res.status(),
                json["reason"].as_str().unwrap_or("").to_owned(),
            )
        }
    };
    let healthz = |h: &Harness| {
        let (client, url) = (client.clone(), h.admin_url("/healthz"));
        async move { send(&client, get(&url)).await.0.status() }
    };
    assert_eq!(readyz(&h).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(healthz(&h).await, StatusCode::OK);
    eventually(10 * SEC, || h.sim.tokens_issued() == 1).await;
    assert_eq!(readyz(&h).await.0, StatusCode::OK);

    h.sim.fail_token_requests(Some(TokenFailure::Status(500)));
    tokio::time::sleep(3600 * SEC).await;
    let (code, reason) = readyz(&h).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "the token expired");
    assert!(reason.contains("HTTP 500"), "{reason}");
    assert_eq!(healthz(&h).await, StatusCode::OK);

    h.sim.fail_token_requests(None);
    eventually(120 * SEC, || h.sim.tokens_issued() == 2).await;
    assert_eq!(readyz(&h).await.0, StatusCode::OK);

    let slow = tokio::spawn({
        let (client, url) = (client.clone(), h.url("/sim/slow/5000"));
        async move { send(&client, get(&url)).await.0.status() }
    });
    eventually(SEC, || h.sim.api_started() == 1).await;
    h.begin_stop();
    assert_eq!(
        readyz(&h).await,
        (StatusCode::SERVICE_UNAVAILABLE, "draining".to_owned())
    );
    assert_eq!(healthz(&h).await, StatusCode::OK);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    h.stop().await;
}

/// 5.11: a service that panics on one path, served through the public
/// `inbound::serve`. The panic ends only its own connection (HTTP/1) or
/// stream (HTTP/2: hyper runs each stream as a task); the other stream on
/// the same h2 connection and every other connection are served, and the
/// listener keeps accepting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_one_request_stays_in_its_connection() {
    async fn service(req: Request<hyper::body::Incoming>) -> Result<Response<Body>, Infallible> {
        if req.uri().path() == "/panic" {
            panic!("a bug in one request");
        }
        Ok(Response::new(Body::full("fine")))
    }
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::new(sim_config());
    let (upstream, _) = serve(&sim, Transport::Plain).await;
    let config = parse_config(
        &config_toml(&upstream, None, &Extras::default()),
        dir.path(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        // The listener wants named (Unpin) futures, as the stack's are.
        let service = tower::service_fn(|req| Box::pin(service(req)));
        let refused = fitbit_proxy::stack::refusal(Arc::new(Metrics::new()));
        fitbit_proxy::inbound::serve(listener, service, refused, &config.listen, None, async {
            let _ = stopped.await;
        })
        .await;
    });
    for client in [http1_client(), h2c_client()] {
        let panicked = client.request(get(&format!("http://{addr}/panic"))).await;
        assert!(panicked.is_err(), "a panicking request got an answer");
        let (res, body) = send(&client, get(&format!("http://{addr}/fine"))).await;
        assert_eq!((res.status(), &body[..]), (StatusCode::OK, &b"fine"[..]));
    }
    let (res, _) = send(&http1_client(), get(&format!("http://{addr}/again"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(!server.is_finished(), "the listener stopped");
    let _ = stop.send(());
    tokio::time::timeout(10 * SEC, server)
        .await
        .unwrap()
        .unwrap();
}

/// 3.15: the admin listener answers only its own paths and never
/// forwards (nothing reaches the upstream, no token is attached); the
/// proxy's port forwards `/healthz`, `/readyz` and `/metrics` to the
/// upstream like any path, and never serves them itself. A slowloris
/// connection held on the data port does not stop the admin port, nor 50
/// on the admin port the data port.
#[tokio::test(start_paused = true)]
async fn the_admin_port_never_forwards_and_the_proxy_port_never_serves_admin_paths() {
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    eventually(5 * SEC, || h.sim.tokens_issued() == 1).await;
    let before = h.sim.api_started();
    for path in [
        "/1/user/-/profile.json",
        "/sim/slow/1",
        "/oauth2/token",
        "/",
    ] {
        let (res, body) = send(&client, get(&h.admin_url(path))).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_no_canary("an admin answer", &body);
    }
    let raw = raw_exchange(
        h.admin.unwrap(),
        b"GET http://evil.test/1/x HTTP/1.1\r\nHost: evil.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(first_status(&raw) >= 400, "{raw}");
    assert_nothing_forwarded_since(&h, before, "requests to the admin port");

    let mut slowloris = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut slowloris, b"GET / HTTP/1.1\r\n")
        .await
        .unwrap();
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (res, body) = send(&client, get(&h.url(path))).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        let echo: serde_json::Value = serde_json::from_slice(&body).expect("the upstream's echo");
        assert_eq!(echo["path"], path, "{echo}");
        let (res, _) = send(&client, get(&h.admin_url(path))).await;
        assert_eq!(res.status(), StatusCode::OK, "admin {path}");
    }
    assert_eq!(h.sim.api_started(), before + 3);

    // And the other way: 50 slowloris heads held on the admin port do not
    // touch the data port, and the admin port still answers.
    let mut held = Vec::new();
    for _ in 0..50 {
        let mut conn = tokio::net::TcpStream::connect(h.admin.unwrap())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"GET /metrics HTTP/1.1\r\n")
            .await
            .unwrap();
        held.push(conn);
    }
    let (res, _) = send(&client, get(&h.url("/1/during"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (res, _) = send(&client, get(&h.admin_url("/healthz"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop((held, slowloris));
    assert_invariants(&h);
    h.stop().await;
}

/// 1.24 on the data port: a client that opens 1 000 streams and cancels
/// each at once, on one connection after another, reading each until the
/// proxy cuts it off (at most 5 s), until `stop`; at most 5 000
/// connections. Returns how many it opened.
async fn rapid_reset_until(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> u32 {
    use support::h2frames::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut batch = PREFACE.to_vec();
    batch.extend(frame(SETTINGS, 0, 0, &[]));
    let block = request_block("GET", "/1/flood");
    for i in 0..1000u32 {
        batch.extend(frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block));
        batch.extend(frame(RST_STREAM, 0, 2 * i + 1, &CANCEL.to_be_bytes()));
    }
    let mut opened = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && opened < 5_000 {
        opened += 1;
        let Ok(Ok(mut conn)) =
            tokio::time::timeout(5 * SEC, tokio::net::TcpStream::connect(addr)).await
        else {
            continue;
        };
        let _ = tokio::time::timeout(5 * SEC, async {
            conn.write_all(&batch).await?;
            let mut sink = [0u8; 4096];
            while conn.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
    }
    opened
}

/// 3.15 with 1.24 and 3.01 on the data port: while two clients flood it
/// with rapid resets and 50 slowloris heads sit on it, `/metrics` and
/// `/readyz` are scraped on the admin port once a second for ten rounds;
/// each answers 200 within 5 s (a generous bound: real time, as floods
/// need, on a shared machine). Afterwards the data port serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_scrapes_answer_during_a_rapid_reset_flood_on_the_data_port() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let h = Setup::default().admin().start().await;
    eventually(5 * SEC, || h.sim.tokens_issued() == 1).await;
    let mut slowloris = Vec::new();
    for _ in 0..50 {
        let mut conn = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"GET / HTTP/1.1\r\n")
            .await
            .unwrap();
        slowloris.push(conn);
    }
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let floods: Vec<_> = (0..2)
        .map(|_| tokio::spawn(rapid_reset_until(h.proxy, stop.clone())))
        .collect();
    let client = http1_client();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        for path in ["/metrics", "/readyz"] {
            let asked = tokio::time::Instant::now();
            let scrape = tokio::time::timeout(5 * SEC, send(&client, get(&h.admin_url(path))));
            let (res, _) = scrape
                .await
                .unwrap_or_else(|_| panic!("admin {path} not answered within 5 s"));
            assert_eq!(res.status(), StatusCode::OK, "{path}");
            slowest = slowest.max(asked.elapsed());
        }
        tokio::time::sleep(SEC).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut connections = 0;
    for flood in floods {
        connections += flood.await.unwrap();
    }
    eprintln!(
        "3.15: {connections} rapid-reset connections of 1000 streams, {} reached the upstream; slowest admin answer {slowest:?}",
        h.sim.api_started()
    );
    assert!(connections >= 2, "the flood ran");
    let (res, _) = send(&h2c_client(), get(&h.url("/1/after"))).await;
    assert_eq!(res.status(), StatusCode::OK);
    drop(slowloris);
    assert_invariants(&h);
    h.stop().await;
}

/// 3.15 the other way, with 3.01 on the admin port: 100 connections (more
/// than its 64) trickle a request head into it, a byte a second. The data
/// port answers a request every second meanwhile without waiting, and once
/// the admin port's 10 s head deadline has dropped the first 64, it
/// answers again.
#[tokio::test(start_paused = true)]
async fn a_slowloris_on_the_admin_port_never_slows_the_data_port() {
    use tokio::io::AsyncWriteExt;
    let h = Setup::default().admin().start().await;
    let client = http1_client();
    eventually(5 * SEC, || h.sim.tokens_issued() == 1).await;
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut conn = tokio::net::TcpStream::connect(h.admin.unwrap())
            .await
            .unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\n").await.unwrap();
        held.push(conn);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..30 {
            tokio::time::sleep(SEC).await;
            for conn in &mut held {
                let _ = conn.write_all(b"x").await;
            }
        }
    });
    for second in 0..15 {
        let asked = tokio::time::Instant::now();
        let (res, _) = send(&client, get(&h.url(&format!("/1/during/{second}")))).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            asked.elapsed() < SEC,
            "second {second}: {:?}",
            asked.elapsed()
        );
        tokio::time::sleep(SEC).await;
    }
    let fresh = http1_client();
    let healthz = tokio::time::timeout(5 * SEC, send(&fresh, get(&h.admin_url("/healthz"))));
    let (res, _) = healthz.await.expect("the admin port answers again");
    assert_eq!(res.status(), StatusCode::OK);
    trickle.abort();
    assert_invariants(&h);
    h.stop().await;
}

/// Open file descriptors of this test process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// 3.13: 5 000 requests at once (25 h2c connections of 200 streams)
/// against an upstream that takes 3 s, with `request_timeout = "1s"`. The
/// upstream is HTTP/2 over TLS, so in-flight upstream requests are bounded
/// by its stream limit and the rest wait. Every request is answered by the
/// proxy, 504 at its timeout (or 502 for a stream the upstream refused);
/// afterwards tasks and file descriptors come back to where they
/// were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_requests_on_a_slow_upstream_leave_nothing_behind() {
    let h = Setup::default()
        .tls()
        .admin()
        .upstream("request_timeout = \"1s\"")
        .start()
        .await;
    let warm = send(&http1_client(), get(&h.url("/1/warm"))).await.0;
    assert_eq!(warm.status(), StatusCode::OK);
    let metrics = tokio::runtime::Handle::current().metrics();
    let (tasks_before, fds_before) = (metrics.num_alive_tasks(), open_fds());
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..25 {
        let client = h2c_client();
        for _ in 0..200 {
            let (client, url) = (client.clone(), h.url("/sim/slow/3000"));
            all.spawn(async move { send(&client, get(&url)).await });
        }
    }
    let (mut peak_tasks, mut peak_fds) = (0, 0);
    let mut codes = std::collections::BTreeMap::new();
    while let Some(done) = all.join_next().await {
        peak_tasks = peak_tasks.max(metrics.num_alive_tasks());
        peak_fds = peak_fds.max(open_fds());
        let (res, body) = done.unwrap();
        assert_no_canary("an answer", &body);
        *codes.entry(res.status().as_u16()).or_insert(0) += 1;
    }
    eprintln!("5000 on a slow upstream: {codes:?}; peak {peak_tasks} tasks, {peak_fds} fds (from {tasks_before}, {fds_before}); upstream saw {}", h.sim.api_started());
    // 504 at the timeout; 502 (0 to ~10 % from run to run) where the
    // upstream refused streams past its limit before the client knew it.
    assert!(codes.keys().all(|c| [502, 504].contains(c)), "{codes:?}");
    eventually(20 * SEC, || {
        metrics.num_alive_tasks() <= tasks_before + 10 && open_fds() <= fds_before + 20
    })
    .await;
    let mut want = vec![(("upstream", "200"), 1.0)];
    for (code, label) in [(502, "502"), (504, "504")] {
        if let Some(n) = codes.get(&code) {
            want.push((("proxy", label), f64::from(*n)));
        }
    }
    assert_outcomes(&h, &want).await;
    assert_invariants(&h);
    h.stop().await;
}

/// 5 000 pipelined HTTP/1 requests written at once on one connection,
/// their answers read as they come; returns how many were answered 200.
async fn pipelined_flood(proxy: std::net::SocketAddr) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(proxy).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let writer = tokio::spawn(async move {
        let one = b"GET /1/pipelined HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..5_000 {
            write.write_all(one).await.unwrap();
        }
        write
    });
    let (mut answered, mut tail, mut buf) = (0, Vec::new(), vec![0u8; 64 * 1024]);
    while answered < 5_000 {
        let n = read.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {answered} answers");
        tail.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&tail).into_owned();
        answered += text.matches("HTTP/1.1 200 OK").count();
        let keep = text.len().saturating_sub("HTTP/1.1 200 OK".len() - 1);
        tail.drain(..keep);
    }
    drop(writer.await.unwrap());
    answered
}

/// 3.10: one h2c connection keeps 200 streams open (its limit), reopening
/// each as it ends, for 3 s, and one HTTP/1 connection pipelines 5 000
/// requests; meanwhile ten other clients each send a request every
/// 100 ms. Their p99 latency stays under a generous 3 s (the CPU is shared
/// with the other tests): one connection's flood does not starve the
/// others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connections_flood_does_not_starve_other_clients() {
    let h = Setup::default().admin().start().await;
    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flood_client = h2c_client();
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let (client, url, on) = (flood_client.clone(), h.url("/1/flood"), flooding.clone());
        flood.spawn(async move {
            let mut n = 0u32;
            // Bounded: 3 s of flooding or 500 requests per stream.
            while on.load(std::sync::atomic::Ordering::Relaxed) && n < 500 {
                assert_eq!(send(&client, get(&url)).await.0.status(), StatusCode::OK);
                n += 1;
            }
            n
        });
    }
    let pipelined = tokio::spawn(pipelined_flood(h.proxy));
    let mut others = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let (client, url) = (http1_client(), h.url("/1/other"));
        others.spawn(async move {
            let mut took = Vec::new();
            for _ in 0..30 {
                let started = tokio::time::Instant::now();
                assert_eq!(send(&client, get(&url)).await.0.status(), StatusCode::OK);
                took.push(started.elapsed());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            took
        });
    }
    let mut latencies = Vec::new();
    while let Some(took) = others.join_next().await {
        latencies.extend(took.unwrap());
    }
    flooding.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut flooded = 0;
    while let Some(n) = flood.join_next().await {
        flooded += n.unwrap();
    }
    let pipelined = pipelined.await.unwrap();
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "flood of {flooded} requests on one connection; the others' p50 {:?}, p99 {p99:?}",
        latencies[latencies.len() / 2]
    );
    eprintln!("pipelined: {pipelined} answered on one HTTP/1 connection");
    assert!(flooded > 1000, "the flood ran ({flooded})");
    assert_eq!(pipelined, 5_000);
    assert!(p99 < 3 * SEC, "p99 {p99:?} under the flood");
    assert_invariants(&h);
    h.stop().await;
}

/// Draining waits for requests, not for connections that never sent one.
#[tokio::test(start_paused = true)]
async fn draining_does_not_wait_for_connections_that_never_sent_a_request() {
    let h = Setup::default().start().await;
    let _silent = tokio::net::TcpStream::connect(h.proxy).await.unwrap();
    // Let the proxy accept it.
    tokio::time::sleep(Duration::from_millis(10)).await;
    let started = tokio::time::Instant::now();
    h.stop().await;
    assert!(
        started.elapsed() < SEC,
        "drain waited {:?}",
        started.elapsed()
    );
}
