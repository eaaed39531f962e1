//! Running without restarts (SPEC §12, RELIABILITY.md §5): the real binary
//! reloads its config on SIGHUP under load without failing a request,
//! refuses an invalid config and serves on with the old one, reports a key
//! that needs a restart, and picks up a corrected client secret and a
//! replaced TLS certificate from disk without a signal. Real time, every
//! wait bounded.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use fitbit_proxy::sim::TestCa;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use rustls::pki_types::{CertificateDer, ServerName};

use super::SEC;
use crate::support::binary::*;
use crate::support::*;

/// The poll interval of the secret and TLS files in these tests.
const POLL: &str = "200ms";
/// Only the reload's lines (and warnings, errors) are logged: no access
/// lines to fill the pipe under load.
const RELOAD_LOG: &str = "warn,fitbit_proxy::ops::reload=info";

/// The binary with a quota and burst so large that pacing never holds a
/// request back (the reload tests load it), logging at `rust_log`.
fn unpaced(rust_log: &'static str) -> Launch {
    Launch {
        extra: Extras::default()
            .rate_limit("hourly_quota = 1000000\nburst = 100000\nmax_wait = \"30s\"\n"),
        rust_log,
        ..Launch::default()
    }
}

async fn admin_get(p: &Proxy, path: &str) -> (StatusCode, String) {
    let (res, body) = send(&http1_client(), get(&format!("http://{}{path}", p.admin))).await;
    (res.status(), String::from_utf8_lossy(&body).into_owned())
}

/// The effective config as the admin port shows it (`/status.json`).
async fn effective_config(p: &Proxy) -> String {
    let (_, body) = admin_get(p, "/status.json").await;
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    status["config"].as_str().unwrap().to_owned()
}

/// `fitbit_proxy_config_reloads_total{result}` from `/metrics`.
async fn reloads(p: &Proxy, result: &str) -> u64 {
    let (_, text) = admin_get(p, "/metrics").await;
    let start = format!("fitbit_proxy_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&start))
        .unwrap_or_else(|| panic!("no {start} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Polls `probe` every 25 ms until it is true, for at most `limit`.
async fn within<F, Fut>(limit: Duration, what: &str, mut probe: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < limit {
        if probe().await {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{what}: not within {limit:?}");
}

/// Rewrites the config file with `edit` applied, by a rename (as editors
/// and configuration tools do), so the proxy never reads half a file.
fn edit_config(p: &Proxy, edit: impl FnOnce(String) -> String) {
    let path = p.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, edit(text)).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

/// Replaces the line starting with `key =` (first occurrence).
fn set_key(text: &str, key: &str, line: &str) -> String {
    let prefix = format!("{key} =");
    let mut found = false;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.trim_start().starts_with(&prefix) {
                found = true;
                line.to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    assert!(found, "no {key} in:\n{text}");
    out.join("\n") + "\n"
}

fn log_lines_with<'a>(lines: &'a [serde_json::Value], text: &str) -> Vec<&'a serde_json::Value> {
    lines
        .iter()
        .filter(|l| l.to_string().contains(text))
        .collect()
}

/// Clients sending requests back to back (h1 and h2c in turn), each at
/// most 3 000, until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    clients: tokio::task::JoinSet<(u32, Vec<String>)>,
}

impl Load {
    fn start(p: &Proxy, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut set = tokio::task::JoinSet::new();
        for c in 0..clients {
            let client = if c % 2 == 0 {
                http1_client()
            } else {
                h2c_client()
            };
            let url = format!("http://{}/1/user/-/profile.json", p.proxy);
            let stop = Arc::clone(&stop);
            set.spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                for n in 0..3000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let req = Request::get(&url)
                        .header("x-request-id", format!("c{c}-{n}"))
                        .body(Full::<Bytes>::default())
                        .unwrap();
                    match client.request(req).await {
                        Ok(res) if res.status() == StatusCode::OK => {
                            match res.into_body().collect().await {
                                Ok(_) => ok += 1,
                                Err(e) => failed.push(format!("c{c}-{n}: body cut: {e}")),
                            }
                        }
                        Ok(res) => failed.push(format!("c{c}-{n}: {}", res.status())),
                        Err(e) => failed.push(format!("c{c}-{n}: {e}")),
                    }
                }
                (ok, failed)
            });
        }
        Load { stop, clients: set }
    }

    /// Stops the clients (dropping their connections); the requests
    /// answered 200 and every failure.
    async fn finish(mut self) -> (u32, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut total, mut failures) = (0, Vec::new());
        while let Some(done) = self.clients.join_next().await {
            let (ok, failed) = done.unwrap();
            assert!(ok > 0, "every client got answers");
            total += ok;
            failures.extend(failed);
        }
        (total, failures)
    }
}

/// Under load, six SIGHUPs each change `rate_limit.max_wait` and `burst`:
/// no client request fails, each new value shows on the admin port, every
/// reload is counted and logged with the keys it changed, and the process
/// never exits (SPEC §12 R1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighups_under_load_change_the_rate_limits_and_fail_no_request() {
    let (_sim, upstream) = simulator().await;
    let mut p = unpaced(RELOAD_LOG).start(&upstream).await;
    let load = Load::start(&p, 6);
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 1..=6u32 {
        let (max_wait, burst) = (format!("{}s", 30 + i), 100_000 + i);
        edit_config(&p, |t| {
            let t = set_key(&t, "max_wait", &format!("max_wait = \"{max_wait}\""));
            set_key(&t, "burst", &format!("burst = {burst}"))
        });
        p.child.sighup();
        let want = format!("max_wait = \"{max_wait}\"");
        within(5 * SEC, &want, || async {
            let config = effective_config(&p).await;
            config.contains(&want) && config.contains(&format!("burst = {burst}"))
        })
        .await;
        assert!(p.child.alive(), "the proxy exited on SIGHUP {i}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let (total, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    assert!(total >= 60, "load ran: {total} requests");
    assert_eq!(
        (reloads(&p, "success").await, reloads(&p, "failure").await),
        (6, 0)
    );
    assert!(p.child.alive());
    p.child.sigterm();
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0), "clean exit after the reloads");
    let lines = json_lines(&out);
    let reloaded = log_lines_with(&lines, "config reloaded");
    assert_eq!(reloaded.len(), 6, "{reloaded:?}");
    for line in reloaded {
        let changed = line["changed"].as_str().unwrap_or_default();
        assert_eq!(changed, "rate_limit.burst, rate_limit.max_wait", "{line}");
    }
    eprintln!("{total} requests during 6 reloads, none failed");
}

/// A gauge or counter's value in `/metrics` (the first sample named so).
async fn sample(p: &Proxy, name: &str) -> f64 {
    let (_, text) = admin_get(p, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

/// Open file descriptors and live tasks once the clients are gone and
/// their connections closed.
async fn settled(p: &Proxy) -> (f64, f64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    (
        sample(p, "process_open_fds").await,
        sample(p, "fitbit_proxy_runtime_tasks").await,
    )
}

/// 20 SIGHUPs in 2 s while clients send, each with a new `max_wait` (9.10):
/// no request fails, no task or file descriptor is left behind, and the
/// last config wins (signals that come while a reload is pending fold
/// into it, so there may be fewer reloads than signals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sighup_storm_under_load_fails_nothing_leaks_nothing_and_the_last_config_wins() {
    let (_sim, upstream) = simulator().await;
    let mut p = unpaced(RELOAD_LOG).start(&upstream).await;
    // The same load once without reloads, for the baseline.
    let load = Load::start(&p, 6);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, failures) = load.finish().await;
    assert!(failures.is_empty(), "{failures:?}");
    let (fds_before, tasks_before) = settled(&p).await;
    let load = Load::start(&p, 6);
    for i in 1..=20u32 {
        edit_config(&p, |t| {
            set_key(&t, "max_wait", &format!("max_wait = \"{}s\"", 40 + i))
        });
        p.child.sighup();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    within(5 * SEC, "the last config in use", || async {
        effective_config(&p).await.contains("max_wait = \"1m\"")
    })
    .await;
    let (total, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    let (fds_after, tasks_after) = settled(&p).await;
    let (ok, failed) = (reloads(&p, "success").await, reloads(&p, "failure").await);
    assert!((1..=20).contains(&ok) && failed == 0, "{ok} / {failed}");
    assert!(
        fds_after <= fds_before + 4.0 && tasks_after <= tasks_before + 2.0,
        "fds {fds_before} -> {fds_after}, tasks {tasks_before} -> {tasks_after}"
    );
    assert!(p.child.alive());
    eprintln!(
        "{total} requests during 20 SIGHUPs ({ok} reloads), none failed; \
         fds {fds_before} -> {fds_after}, tasks {tasks_before} -> {tasks_after}"
    );
}

/// An invalid config on SIGHUP: refused with every problem logged (each
/// with its line), counted as a failure, and the old config serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_config_on_sighup_is_refused_and_the_old_one_serves_on() {
    let (_sim, upstream) = simulator().await;
    let launch = unpaced("info");
    let mut p = launch.start(&upstream).await;
    let before = effective_config(&p).await;
    edit_config(&p, |t| {
        let t = set_key(&t, "max_wait", "max_wait = \"soon\"");
        let t = set_key(&t, "burst", "burst = -5");
        t.replace("[listen]\n", "[listen]\nallow_list = []\n")
    });
    p.child.sighup();
    within(5 * SEC, "the failure counted", || async {
        reloads(&p, "failure").await == 1
    })
    .await;
    assert_eq!(reloads(&p, "success").await, 0);
    assert_eq!(
        effective_config(&p).await,
        before,
        "the old config serves on"
    );
    let url = format!("http://{}/1/user/-/profile.json", p.proxy);
    assert_eq!(get_status(&http1_client(), &url).await, StatusCode::OK);
    assert!(p.child.alive());
    p.child.sigterm();
    let out = p.child.exited().await;
    assert_eq!(out.status.code(), Some(0));
    let lines = json_lines(&out);
    let refused = log_lines_with(&lines, "config reload refused:");
    for key in ["rate_limit.max_wait", "rate_limit.burst", "allow_list"] {
        let line = refused
            .iter()
            .find(|l| l.to_string().contains(key))
            .unwrap_or_else(|| panic!("no refusal line names {key}: {refused:?}"));
        assert_eq!(line["level"], "ERROR", "{line}");
        assert!(
            line.to_string().contains("proxy.toml:"),
            "with its line: {line}"
        );
    }
    assert_eq!(refused.len(), 3, "one line per problem: {refused:?}");
    assert_eq!(
        log_lines_with(&lines, "the previous config serves on").len(),
        1
    );
}

/// A key that needs a new process (`listen.addr`) changed with a
/// reloadable one: the first is reported and kept, the second applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_only_key_is_reported_and_keeps_its_value() {
    let (_sim, upstream) = simulator().await;
    let launch = unpaced("info");
    let p = launch.start(&upstream).await;
    let elsewhere = free_addr().await;
    let old = format!("addr = \"{}\"", p.proxy);
    edit_config(&p, |t| {
        let t = t.replace(&old, &format!("addr = \"{elsewhere}\""));
        set_key(&t, "max_wait", "max_wait = \"12s\"")
    });
    p.child.sighup();
    within(5 * SEC, "the reload applied", || async {
        effective_config(&p).await.contains("max_wait = \"12s\"")
    })
    .await;
    let config = effective_config(&p).await;
    assert!(config.contains(&old), "listen.addr kept: {config}");
    assert_eq!(reloads(&p, "success").await, 1);
    let url = format!("http://{}/1/user/-/profile.json", p.proxy);
    assert_eq!(get_status(&http1_client(), &url).await, StatusCode::OK);
    assert!(
        tokio::net::TcpStream::connect(elsewhere).await.is_err(),
        "nothing listens on the new address"
    );
    p.child.sigterm();
    let out = p.child.exited().await;
    let lines = json_lines(&out);
    let restart = log_lines_with(&lines, "needs a restart");
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert_eq!(restart[0]["keys"], "listen.addr", "{}", restart[0]);
    let reloaded = log_lines_with(&lines, "config reloaded");
    assert_eq!(reloaded[0]["changed"], "rate_limit.max_wait");
}

/// A Kubernetes-style secret volume: `dir/secret` → `dir/..data/secret`,
/// `..data` a symlink to the current version's directory, swapped
/// atomically by a rename.
struct SecretVolume {
    dir: tempfile::TempDir,
    version: u32,
}

impl SecretVolume {
    fn new(secret: &str) -> SecretVolume {
        let dir = tempfile::tempdir().unwrap();
        let mut volume = SecretVolume { dir, version: 0 };
        volume.write(secret);
        std::os::unix::fs::symlink("..data/secret", volume.path()).unwrap();
        volume
    }

    /// The path the config names.
    fn path(&self) -> PathBuf {
        self.dir.path().join("secret")
    }

    fn write(&mut self, secret: &str) {
        self.version += 1;
        let base = self.dir.path();
        let version = base.join(format!("..v{}", self.version));
        std::fs::create_dir(&version).unwrap();
        std::fs::write(version.join("secret"), format!("{secret}\n")).unwrap();
        let tmp = base.join("..data_tmp");
        std::os::unix::fs::symlink(version.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, base.join("..data")).unwrap();
    }
}

/// `/readyz`'s status and body; nothing while the admin port is not up.
async fn readyz(p: &Proxy) -> Option<(StatusCode, String)> {
    let url = format!("http://{}/readyz", p.admin);
    let res = http1_client().request(get(&url)).await.ok()?;
    let status = res.status();
    let body = res.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The proxy with a wrong secret in `volume`, once `/readyz` says the
/// credentials were rejected; and the simulator it sends to.
async fn launch_with_wrong_secret(
    volume: &SecretVolume,
    poll: &str,
) -> (Proxy, fitbit_proxy::sim::ServerHandle) {
    let (_, upstream) = simulator().await;
    let launch = Launch {
        secret_file: Some(volume.path()),
        env: vec![("FITBIT_PROXY_FILE_POLL_INTERVAL", poll.to_owned())],
        ..Launch::default()
    };
    let p = launch.spawn(&upstream).await;
    within(10 * SEC, "credentials rejected", || async {
        readyz(&p).await.is_some_and(|(status, body)| {
            status == StatusCode::SERVICE_UNAVAILABLE && body.contains("invalid_client")
        })
    })
    .await;
    (p, upstream)
}

/// A wrong secret in `client_secret_file`, corrected on disk by a
/// Kubernetes-style symlink swap: `/readyz` is 200 without a signal, well
/// before the minute a rejected secret otherwise waits (SPEC §12 R2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_secret_file_makes_the_proxy_ready_without_a_signal() {
    let mut volume = SecretVolume::new("wrong-secret");
    let (mut p, _upstream) = launch_with_wrong_secret(&volume, POLL).await;
    volume.write(SECRET);
    let took = within(10 * SEC, "ready after the secret was corrected", || async {
        readyz(&p).await.is_some_and(|(s, _)| s == StatusCode::OK)
    })
    .await;
    assert!(reloads(&p, "success").await >= 1);
    let url = format!("http://{}/1/user/-/profile.json", p.proxy);
    assert_eq!(get_status(&http1_client(), &url).await, StatusCode::OK);
    assert!(p.child.alive());
    p.child.sigterm();
    let out = p.child.exited().await;
    let lines = json_lines(&out);
    let reloaded = log_lines_with(&lines, "config reloaded");
    assert!(
        reloaded
            .iter()
            .any(|l| l.to_string().contains("credentials.client_secret_file")),
        "{reloaded:?}"
    );
    assert!(!out
        .stderr
        .windows(SECRET.len())
        .any(|w| w == SECRET.as_bytes()));
    eprintln!("ready {took:?} after the secret file was corrected (poll {POLL})");
}

/// The same, with the files polled only once a minute: SIGHUP makes the
/// corrected secret count within seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrected_secret_file_makes_the_proxy_ready_at_once_after_sighup() {
    let mut volume = SecretVolume::new("wrong-secret");
    let (mut p, _upstream) = launch_with_wrong_secret(&volume, "60s").await;
    volume.write(SECRET);
    p.child.sighup();
    let took = within(5 * SEC, "ready after SIGHUP", || async {
        readyz(&p).await.is_some_and(|(s, _)| s == StatusCode::OK)
    })
    .await;
    assert_eq!(reloads(&p, "success").await, 1);
    assert!(p.child.alive());
    eprintln!("ready {took:?} after SIGHUP");
}

/// Writes a new certificate and key for `localhost` issued by `ca` into
/// `dir` (each by a rename); returns the leaf certificate.
fn write_certificate(dir: &Path, ca: &TestCa) -> CertificateDer<'static> {
    let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let cert_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    let key_pem = pem("PRIVATE KEY", key.secret_der());
    for (name, text) in [("proxy.key", key_pem), ("proxy.pem", cert_pem)] {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
    chain[0].clone()
}

type TlsStream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the proxy (HTTP/1.1 by ALPN) and the certificate
/// it was shown.
async fn handshake(p: &Proxy, ca: &TestCa) -> (TlsStream, CertificateDer<'static>) {
    let mut config = ca.client_config();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(p.proxy).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, leaf)
}

/// The inbound certificate and key replaced on disk: new handshakes are
/// shown the new certificate without a signal, and a connection opened
/// before keeps working (SPEC §12 R2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_certificate_replaced_on_disk_serves_new_handshakes() {
    let (_sim, upstream) = simulator().await;
    let ca = TestCa::new();
    let certs = tempfile::tempdir().unwrap();
    let first = write_certificate(certs.path(), &ca);
    let listen = format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        certs.path().join("proxy.pem"),
        certs.path().join("proxy.key")
    );
    let launch = Launch {
        extra: Extras::default().listen(&listen),
        env: vec![("FITBIT_PROXY_FILE_POLL_INTERVAL", POLL.to_owned())],
        ..Launch::default()
    };
    let mut p = launch.start(&upstream).await;
    let (open, shown) = handshake(&p, &ca).await;
    assert_eq!(shown, first);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(open))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = || {
        Request::get("/1/user/-/profile.json")
            .header("host", "localhost")
            .body(Full::default())
            .unwrap()
    };
    let res = send_on(&mut sender, request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();

    let second = write_certificate(certs.path(), &ca);
    assert_ne!(first, second);
    let took = within(10 * SEC, "the new certificate served", || async {
        handshake(&p, &ca).await.1 == second
    })
    .await;
    // The connection opened under the old certificate serves on.
    let res = send_on(&mut sender, request()).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    assert!(!conn.is_finished());
    assert!(reloads(&p, "success").await >= 1);
    assert!(p.child.alive());
    eprintln!("new certificate served {took:?} after it was written (poll {POLL})");
}

/// A reload reaches connections already open: a path denied by the new
/// `upstream.deny_paths` is refused on a connection opened before the
/// SIGHUP; the new `listen.allow` decides for connections accepted after
/// it (and a connection accepted before keeps being served).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_rules_reach_open_connections_and_the_allow_list_new_ones() {
    let (sim, upstream) = simulator().await;
    let mut p = Launch::default().start(&upstream).await;
    let tcp = tokio::net::TcpStream::connect(p.proxy).await.unwrap();
    let (mut open, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let request = |path: &str| {
        Request::get(path)
            .header("host", "localhost")
            .body(Full::default())
            .unwrap()
    };
    let profile = "/1/user/-/profile.json";
    let res = send_on(&mut open, request(profile)).await;
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();

    edit_config(&p, |t| {
        t.replace(
            "[upstream]\n",
            "[upstream]\ndeny_paths = [\"/oauth2/\", \"/1.1/oauth2/\", \"/1/user/\"]\n",
        )
        .replace("[listen]\n", "[listen]\nallow = [\"10.0.0.0/8\"]\n")
    });
    p.child.sighup();
    within(5 * SEC, "the reload applied", || async {
        reloads(&p, "success").await == 1
    })
    .await;
    let sent = sim.received().len();
    let res = send_on(&mut open, request(profile)).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "denied on the open connection"
    );
    assert_eq!(proxy_error_of(res.headers()), Some("forbidden"));
    res.into_body().collect().await.unwrap();
    let res = send_on(&mut open, request("/1/foods/log.json")).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the open connection is still allowed"
    );
    res.into_body().collect().await.unwrap();
    assert!(!conn.is_finished());
    // A new connection from 127.0.0.1 is outside the new allow list.
    let url = format!("http://{}/1/foods/log.json", p.proxy);
    assert_eq!(
        get_status(&http1_client(), &url).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        sim.received().len(),
        sent + 1,
        "only the allowed request went up"
    );
    assert!(p.child.alive());
}

fn proxy_error_of(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get("x-fitbit-proxy-error")
        .and_then(|v| v.to_str().ok())
}

/// One request on a connection of its own, once the connection is ready
/// for it (the previous answer fully read).
async fn send_on(
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> http::Response<hyper::body::Incoming> {
    sender.ready().await.expect("the connection stays open");
    sender.send_request(req).await.expect("an answer")
}
