//! Test harness: the simulated Fitbit API and the proxy, both on
//! `127.0.0.1:0`, wired together through a generated config. Nothing sleeps
//! waiting for start-up: listeners are bound before anything runs.

#![allow(dead_code, unreachable_pub, unused_imports)]

pub mod binary;
pub mod faulty;
pub mod h2frames;
pub mod invariants;
pub mod load;
pub mod raw;
pub mod raw_upstream;
pub mod redis;
pub mod replicas;

pub use raw::{first_status, raw_exchange, read_for, read_until_closed, statuses};

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use fitbit_proxy::sim::{ServerHandle, Sim, SimConfig, TestCa};
use fitbit_proxy::Config;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const CLIENT_ID: &str = "sim-client";
pub const SECRET: &str = "SECRET_CANARY_harness";
pub const SECRET_ENV: &str = "HARNESS_SECRET";

/// How the upstream is served.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
}

/// A running proxy in front of a simulator.
pub struct Harness {
    pub sim: Sim,
    pub upstream: ServerHandle,
    pub proxy: SocketAddr,
    /// The admin listener, when the setup asked for one.
    pub admin: Option<SocketAddr>,
    pub config: Config,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

pub fn sim_config() -> SimConfig {
    SimConfig {
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        token_prefix: "TOKEN_CANARY_".into(),
        // Tests not about pacing must not be paced: pacing tests set their own.
        quota: 1_000_000,
        ..SimConfig::default()
    }
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback")
}

/// A simulator with the harness's config, served plainly on loopback.
pub async fn simulator() -> (Sim, ServerHandle) {
    let sim = Sim::new(sim_config());
    let handle = sim.serve_plain(bind().await);
    (sim, handle)
}

/// Serves `sim` plainly or over TLS with a fresh CA; returns the handle and
/// the CA (so its PEM can be trusted through `upstream.ca_file`).
pub async fn serve(sim: &Sim, transport: Transport) -> (ServerHandle, Option<TestCa>) {
    match transport {
        Transport::Plain => (sim.serve_plain(bind().await), None),
        Transport::Tls => {
            let ca = TestCa::new();
            (sim.serve_tls(bind().await, &ca), Some(ca))
        }
    }
}

/// Extra TOML lines for each section of the generated config.
#[derive(Default, Clone)]
pub struct Extras {
    pub listen: String,
    pub upstream: String,
    pub credentials: String,
    pub rate_limit: String,
    /// Replaces the `[admin]` section's `addr = ""` when set.
    pub admin: Option<String>,
    /// The `[callers]` section's lines.
    pub callers: String,
}

impl Extras {
    pub fn listen(mut self, extra: &str) -> Self {
        self.listen = extra.to_owned();
        self
    }
    pub fn rate_limit(mut self, extra: &str) -> Self {
        self.rate_limit = extra.to_owned();
        self
    }
}

/// The config a test starts from: upstream and token endpoint on `handle`,
/// admin off, plus `extra` lines per section.
pub fn config_toml(handle: &ServerHandle, ca_file: Option<&Path>, extra: &Extras) -> String {
    let ca = ca_file
        .map(|p| format!("ca_file = {:?}\n", p.display().to_string()))
        .unwrap_or_default();
    format!(
        r#"
[listen]
addr = "127.0.0.1:0"
{listen}
[admin]
{admin}

[upstream]
url = "{url}"
{ca}{upstream}
[credentials]
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret_env = "{SECRET_ENV}"
{credentials}
[rate_limit]
{rate_limit}
[callers]
{callers}
"#,
        url = handle.base_url(),
        token_url = handle.token_url(),
        listen = extra.listen,
        upstream = extra.upstream,
        credentials = if extra.credentials.contains("expires_in") {
            extra.credentials.clone()
        } else {
            format!("expires_in = 3600\n{}", extra.credentials)
        },
        rate_limit = if extra.rate_limit.is_empty() {
            "hourly_quota = 1000000\nburst = 100000".to_string()
        } else {
            extra.rate_limit.clone()
        },
        admin = extra.admin.as_deref().unwrap_or("addr = \"\""),
        callers = extra.callers,
    )
}

/// Writes a certificate and key for `localhost` issued by `ca` into `dir`;
/// the `[listen]` lines that serve TLS with them.
pub fn tls_listen(dir: &Path, ca: &TestCa) -> String {
    let (chain, key) = ca.issue(&["localhost", "127.0.0.1"]);
    let cert_pem: String = chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
    std::fs::write(dir.join("proxy.pem"), cert_pem).unwrap();
    std::fs::write(dir.join("proxy.key"), pem("PRIVATE KEY", key.secret_der())).unwrap();
    format!(
        "tls_cert = {:?}\ntls_key = {:?}",
        dir.join("proxy.pem"),
        dir.join("proxy.key")
    )
}

pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

pub fn parse_config(toml: &str, dir: &Path) -> Config {
    let env = |name: &str| (name == SECRET_ENV).then(|| SECRET.to_string());
    Config::from_toml_str_with_env(toml, &dir.join("test.toml"), &env)
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}\n{toml}"))
}

/// Runs the proxy with `config` on a fresh loopback listener, and the
/// admin listener on `admin` when given.
pub async fn spawn_proxy(
    config: Config,
    admin: Option<TcpListener>,
) -> (SocketAddr, oneshot::Sender<()>, JoinHandle<()>) {
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        fitbit_proxy::run_with_admin(listener, admin, config, async {
            let _ = stopped.await;
        })
        .await
        .expect("proxy runs");
    });
    (addr, stop, task)
}

/// Builder for the common case: a simulator and the proxy in front of it.
/// Starting also counts panics from then on (G4, [`invariants::count_panics`]),
/// so that any test can end with [`invariants::assert_invariants`].
pub struct Setup {
    pub sim_config: SimConfig,
    pub transport: Transport,
    pub extra: Extras,
    /// Serve the admin listener on a fresh loopback port.
    pub admin: bool,
    /// Forward to this URL (an in-test upstream) instead of the
    /// simulator's API; the simulator still serves the token endpoint.
    pub upstream_url: Option<String>,
    /// Fetch tokens from this URL instead of the simulator's endpoint.
    pub token_url: Option<String>,
    /// A CA (PEM) for `upstream.ca_file`, for a TLS peer of the test's own.
    pub ca_pem: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            sim_config: sim_config(),
            transport: Transport::Plain,
            extra: Extras::default(),
            admin: false,
            upstream_url: None,
            token_url: None,
            ca_pem: None,
        }
    }
}

impl Setup {
    pub fn tls(mut self) -> Self {
        self.transport = Transport::Tls;
        self
    }
    pub fn listen(mut self, extra: &str) -> Self {
        self.extra.listen = extra.to_owned();
        self
    }
    pub fn upstream(mut self, extra: &str) -> Self {
        self.extra.upstream = extra.to_owned();
        self
    }
    pub fn credentials(mut self, extra: &str) -> Self {
        self.extra.credentials = extra.to_owned();
        self
    }
    pub fn rate_limit(mut self, extra: &str) -> Self {
        self.extra.rate_limit = extra.to_owned();
        self
    }

    pub fn callers(mut self, extra: &str) -> Self {
        self.extra.callers = extra.to_owned();
        self
    }

    /// Turns the admin listener on (`Harness::admin`).
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    pub fn sim(mut self, sim_config: SimConfig) -> Self {
        self.sim_config = sim_config;
        self
    }

    /// Forwards to `url` instead of the simulator's API.
    pub fn upstream_url(mut self, url: impl Into<String>) -> Self {
        self.upstream_url = Some(url.into());
        self
    }

    /// Fetches tokens from `url` instead of the simulator.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// Trusts the CA `pem` for the upstream and the token endpoint.
    pub fn trust(mut self, pem: impl Into<String>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    pub async fn start(self) -> Harness {
        self.start_with(|_| {}).await
    }

    /// Starts, scripting the simulator before the proxy's first token fetch.
    pub async fn start_with(mut self, script: impl FnOnce(&Sim)) -> Harness {
        invariants::count_panics();
        let admin_listener = if self.admin { Some(bind().await) } else { None };
        let admin = admin_listener.as_ref().map(|l| l.local_addr().unwrap());
        if let Some(addr) = admin {
            self.extra.admin = Some(format!("addr = \"{addr}\""));
        }
        let sim = Sim::new(self.sim_config);
        script(&sim);
        let (upstream, ca) = serve(&sim, self.transport).await;
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = self.ca_pem.or_else(|| ca.map(|ca| ca.cert_pem()));
        let ca_file = ca_pem.map(|pem| {
            let path = dir.path().join("ca.pem");
            std::fs::write(&path, pem).expect("write ca.pem");
            path
        });
        let mut toml = config_toml(&upstream, ca_file.as_deref(), &self.extra);
        for (key, old, new) in [
            ("url", upstream.base_url(), self.upstream_url),
            ("token_url", upstream.token_url(), self.token_url),
        ] {
            if let Some(new) = new {
                let old = format!("\n{key} = \"{old}\"");
                assert!(toml.contains(&old), "{toml}");
                toml = toml.replacen(&old, &format!("\n{key} = \"{new}\""), 1);
            }
        }
        let config = parse_config(&toml, dir.path());
        let (proxy, stop, task) = spawn_proxy(config.clone(), admin_listener).await;
        Harness {
            sim,
            upstream,
            proxy,
            admin,
            config,
            dir,
            stop: Some(stop),
            task,
        }
    }
}

impl Harness {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy, path)
    }

    /// The admin listener's URL for `path`; panics without `Setup::admin`.
    pub fn admin_url(&self, path: &str) -> String {
        let addr = self.admin.expect("started with Setup::admin()");
        format!("http://{addr}{path}")
    }

    /// Signals shutdown without waiting for the drain.
    pub fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the proxy and waits for it to drain.
    pub async fn stop(mut self) {
        self.begin_stop();
        let _ = (&mut self.task).await;
    }

    /// Whether `run` has returned (the drain is over).
    pub fn finished(&self) -> bool {
        self.task.is_finished()
    }
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn http1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::default()).unwrap()
}

/// Sends and collects the whole answer.
pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> (Response<()>, Bytes) {
    let res = client
        .request(req)
        .await
        .expect("request reaches the proxy");
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.expect("body").to_bytes();
    (Response::from_parts(parts, ()), bytes)
}

/// The status of a GET for `url`.
pub async fn get_status(client: &TestClient, url: &str) -> StatusCode {
    send(client, get(url)).await.0.status()
}

/// [`get_status`] in a task of its own, so that it can wait (for a
/// pacing slot, a token, the upstream) while the test goes on.
pub fn spawn_get(client: &TestClient, url: String) -> JoinHandle<StatusCode> {
    let client = client.clone();
    tokio::spawn(async move { get_status(&client, &url).await })
}

/// The answer's field `name` as a number (`retry-after`, the rate-limit
/// fields).
pub fn number(res: &Response<()>, name: &str) -> u64 {
    let value = res.headers()[name].to_str().unwrap();
    value
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {value:?}: {e}"))
}

/// The `x-fitbit-proxy-error` code of a proxy-generated answer.
pub fn proxy_error(res: &Response<()>) -> Option<&str> {
    res.headers()
        .get("x-fitbit-proxy-error")
        .map(|v| v.to_str().unwrap())
}

/// Asserts the body is in Fitbit's error shape with `code` as errorType.
pub fn assert_fitbit_error(body: &[u8], code: &str) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("JSON error body");
    assert_eq!(v["success"], false, "{v}");
    assert_eq!(v["errors"][0]["errorType"], code, "{v}");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

/// Waits (in small steps of tokio time) until `cond` holds; panics after
/// `limit` of tokio time. Under paused time each step also lets I/O run.
pub async fn eventually(limit: std::time::Duration, mut cond: impl FnMut() -> bool) {
    eventually_async(limit, || std::future::ready(cond())).await;
}

/// [`eventually`] for a condition that has to ask over the network (an
/// admin endpoint, say).
pub async fn eventually_async<F: std::future::Future<Output = bool>>(
    limit: std::time::Duration,
    mut cond: impl FnMut() -> F,
) {
    eventually_seen(limit, || {
        let holds = cond();
        async move { holds.await.then_some(()).ok_or("false") }
    })
    .await;
}

/// [`eventually_async`] for a look that says what it saw when the
/// condition does not hold (`Err(seen)`): the panic after `limit` shows the
/// last of it.
pub async fn eventually_seen<D, F>(limit: std::time::Duration, mut look: impl FnMut() -> F)
where
    D: std::fmt::Display,
    F: std::future::Future<Output = Result<(), D>>,
{
    let step = std::time::Duration::from_millis(1);
    let deadline = tokio::time::Instant::now() + limit;
    while let Err(seen) = look().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}; last seen: {seen}"
        );
        tokio::time::sleep(step).await;
    }
}
