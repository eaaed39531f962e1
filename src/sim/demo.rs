//! `fitbit-proxy demo` and `fitbit-proxy simulate`: the simulated Fitbit API
//! on loopback, with (demo) or without (simulate) the proxy and its admin
//! listener in front of it. Needs no credentials and no network.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::sim::{Sim, SimConfig};

/// The demo's client secret lives only in this process.
const DEMO_SECRET_ENV: &str = "FITBIT_PROXY_DEMO_SECRET";

/// The admin listener's usual port, used by the demo when it is free.
const DEMO_ADMIN_PORT: u16 = 9090;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("demo config: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Run(#[from] crate::RunError),
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, DemoError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| DemoError::Bind { addr, source })
}

/// The admin listener on loopback: port 9090 if free, else any port.
async fn bind_admin() -> Result<(TcpListener, SocketAddr), DemoError> {
    let usual = SocketAddr::from(([127, 0, 0, 1], DEMO_ADMIN_PORT));
    let listener = match TcpListener::bind(usual).await {
        Ok(listener) => listener,
        Err(_) => bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?,
    };
    let addr = listener.local_addr().map_err(|source| DemoError::Bind {
        addr: usual,
        source,
    })?;
    Ok((listener, addr))
}

/// Runs the simulator and the proxy until `shutdown` resolves.
pub async fn demo(listen: SocketAddr, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    let sim_config = SimConfig::default();
    let secret = sim_config.client_secret.clone();
    let sim = Sim::new(sim_config.clone());
    let upstream = sim.serve_plain(bind("127.0.0.1:0".parse().expect("literal address")).await?);
    let listener = bind(listen).await?;
    let proxy = listener.local_addr().map_err(|source| DemoError::Bind {
        addr: listen,
        source,
    })?;
    let (admin_listener, admin) = bind_admin().await?;
    let toml = format!(
        r#"
[listen]
addr = "{proxy}"
[admin]
addr = "{admin}"
[upstream]
url = "{url}"
[credentials]
token_url = "{token_url}"
client_id = "{client_id}"
client_secret_env = "{DEMO_SECRET_ENV}"
"#,
        url = upstream.base_url(),
        token_url = upstream.token_url(),
        client_id = sim_config.client_id,
    );
    let env = move |name: &str| (name == DEMO_SECRET_ENV).then(|| secret.clone());
    let config = Config::from_toml_str_with_env(&toml, Path::new("<demo>"), &env)?;
    println!("{}", demo_banner(proxy, admin, &upstream.base_url()));
    crate::run_with_admin(listener, Some(admin_listener), config, shutdown).await?;
    Ok(())
}

fn demo_banner(proxy: SocketAddr, admin: SocketAddr, upstream: &str) -> String {
    format!(
        "fitbit-proxy demo\n\
         \x20 simulated Fitbit API: {upstream}\n\
         \x20 proxy:                http://{proxy}\n\
         \x20 admin:                http://{admin}\n\
         \x20 status page:          http://{admin}/\n\
         \n\
         Try, in another terminal:\n\
         \x20 curl -s http://{proxy}/1/user/-/profile.json\n\
         \x20 curl -si http://{proxy}/1/activities/date/today.json\n\
         \x20 curl -si http://{proxy}/oauth2/token\n\
         \x20 curl -s http://{admin}/healthz\n\
         \x20 curl -s http://{admin}/readyz\n\
         \x20 curl -s http://{admin}/metrics\n\
         \n\
         The first two are answered by the simulated API with a token the proxy fetched;\n\
         the third is refused (403 forbidden): the proxy owns the credentials.\n\
         The last three are the admin listener: liveness, readiness (is a token held?)\n\
         and Prometheus metrics. Every answer carries an x-request-id, logged with it.\n\
         Press Ctrl-C to stop."
    )
}

/// Runs only the simulated API (for developing internal services).
pub async fn simulate(
    listen: SocketAddr,
    sim_config: SimConfig,
    lag: u32,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let sim = Sim::new(sim_config.clone());
    sim.set_reported_lag(lag);
    let server = sim.serve_plain(bind(listen).await?);
    let reset = sim_config
        .headers
        .reset()
        .map(|r| format!(", reset as {}", r.name()))
        .unwrap_or_default();
    println!(
        "simulated Fitbit API on {base}\n\
         \x20 token endpoint: POST {token}\n\
         \x20 client_id = {id:?}, client secret = {secret:?} (simulator only)\n\
         \x20 quota: {quota} requests per {window}, remaining reported {lag} high\n\
         \x20 rate-limit headers: {headers}{reset}\n\
         Press Ctrl-C to stop.",
        headers = sim_config.headers.name(),
        quota = sim_config.quota,
        window = humantime::format_duration(sim_config.window),
        base = server.base_url(),
        token = server.token_url(),
        id = sim_config.client_id,
        secret = sim_config.client_secret,
    );
    shutdown.await;
    server.shutdown().await;
    Ok(())
}
