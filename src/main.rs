//! The `fitbit-proxy` binary: command line → config → logging → run.
//! Exit codes: 0 clean shutdown, 1 runtime failure, 2 invalid config or
//! arguments (clap exits 2 on bad arguments by itself).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, Parser, Subcommand};
use fitbit_proxy::config::LogFormat;
use fitbit_proxy::inbound::Workers;
use fitbit_proxy::ops::logging;
use fitbit_proxy::sim::demo;
use fitbit_proxy::sim::{Dialect, Reset, SimConfig};
use fitbit_proxy::Config;

/// jemalloc, configured (.cargo/config.toml) to give what a burst freed back
/// to the OS within a second, from a background thread.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "fitbit-proxy",
    version,
    about = "Authenticating, pacing reverse proxy for the Fitbit Web API"
)]
struct Cli {
    /// With no command: `run`'s config.
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The config file of `run` and `check` (and of no command at all); `demo`
/// and `simulate` build their own, so they do not take one. Not clap's
/// `env`: its help shows `[env: FITBIT_PROXY_CONFIG=]` when the variable is
/// unset, and a value from the environment would hide which of
/// `fitbit-proxy --config A run` and the variable was meant.
#[derive(clap::Args)]
struct ConfigArg {
    /// Path to proxy.toml [default: $FITBIT_PROXY_CONFIG, else ./proxy.toml]
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
}

/// The variable naming the config file when `--config` is not given.
const CONFIG_ENV: &str = "FITBIT_PROXY_CONFIG";

impl ConfigArg {
    /// `--config` after the command, else before it, else the variable,
    /// else `proxy.toml`.
    fn resolve(self, before_command: ConfigArg) -> PathBuf {
        self.config
            .or(before_command.config)
            .or_else(|| {
                std::env::var_os(CONFIG_ENV)
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from("proxy.toml"))
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run(ConfigArg),
    /// Validate the config and print it with every secret redacted.
    Check(ConfigArg),
    /// Run a simulated Fitbit API and the proxy in front of it, on loopback.
    Demo {
        /// Where the proxy listens: IP:PORT or HOST:PORT (a name is
        /// resolved, a loopback address preferred).
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR", value_parser = listen_addr)]
        listen: SocketAddr,
    },
    /// Run only the simulated Fitbit API, for developing services locally.
    Simulate {
        /// Where the simulator listens: IP:PORT or HOST:PORT (a name is
        /// resolved, a loopback address preferred).
        #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR", value_parser = listen_addr)]
        listen: SocketAddr,
        #[command(flatten)]
        sim: SimArgs,
    },
}

/// `--listen`: an address as is, or `HOST:PORT` resolved; of the host's
/// addresses a loopback one is preferred (IPv4 first), so that
/// `localhost:8080` stays on this machine whatever order the resolver gives.
fn listen_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if text
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err("expected IP:PORT or HOST:PORT, e.g. 127.0.0.1:8080 or localhost:8080".into());
    }
    let addrs = text
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {text}: {err}"))?;
    addrs
        .min_by_key(|a| (!a.ip().is_loopback(), !a.is_ipv4()))
        .ok_or_else(|| format!("{text} resolves to no address"))
}

/// How the simulated API behaves (`simulate` only).
#[derive(clap::Args)]
struct SimArgs {
    /// Requests allowed per quota window.
    #[arg(long, default_value_t = 150)]
    quota: u32,
    /// Length of a quota window, e.g. "30s", "1h".
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    window: Duration,
    /// Lifetime of the tokens it grants, e.g. "10s" (default: what was asked).
    #[arg(long, value_parser = humantime::parse_duration)]
    token_lifetime: Option<Duration>,
    /// Report the remaining quota this many above the truth, as Fitbit's
    /// approximate headers may.
    #[arg(long, default_value_t = 0)]
    lag: u32,
    /// The rate-limit headers to send: fitbit, ietf, ratelimit,
    /// x-ratelimit, x-rate-limit, or none (a 429 carries only Retry-After).
    #[arg(long, default_value = "fitbit", value_parser = dialect_name)]
    headers: String,
    /// How a *-Reset header is written (ratelimit, x-ratelimit and
    /// x-rate-limit): "delta" (seconds) or "epoch" (a Unix time).
    #[arg(long, default_value = "delta", value_parser = reset_unit)]
    reset: Reset,
    /// The simulator's clock runs this far ahead ("5s") or behind ("-5s")
    /// in Date and epoch resets.
    #[arg(long, default_value = "0s", value_parser = signed_seconds, allow_hyphen_values = true)]
    clock_skew: i64,
    /// Retry-After on a 429 as "seconds" or as an HTTP "date".
    #[arg(long, default_value = "seconds", value_parser = ["seconds", "date"])]
    retry_after: String,
    /// Open the first quota window this long before start-up (default: at
    /// the first request).
    #[arg(long, value_parser = humantime::parse_duration)]
    window_offset: Option<Duration>,
}

fn dialect_name(name: &str) -> Result<String, String> {
    match Dialect::parse(name, Some(Reset::Delta)) {
        Some(_) => Ok(name.to_owned()),
        None => Err(format!("must be one of {}", Dialect::NAMES)),
    }
}

fn reset_unit(name: &str) -> Result<Reset, String> {
    Reset::parse(name).ok_or_else(|| r#"must be "delta" or "epoch""#.to_owned())
}

/// `"5s"`, `"-1m"`: whole seconds, either way.
fn signed_seconds(text: &str) -> Result<i64, String> {
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let d = humantime::parse_duration(magnitude).map_err(|e| e.to_string())?;
    i64::try_from(d.as_secs())
        .map(|s| sign * s)
        .map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (check, config) = match cli
        .command
        .unwrap_or(Command::Run(ConfigArg { config: None }))
    {
        command @ (Command::Demo { .. } | Command::Simulate { .. })
            if cli.config.config.is_some() =>
        {
            let name = if matches!(command, Command::Demo { .. }) {
                "demo"
            } else {
                "simulate"
            };
            Cli::command()
                .error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!("`{name}` runs on a config of its own and takes no --config"),
                )
                .exit()
        }
        Command::Demo { listen } => {
            let _log = logging::init(LogFormat::Text);
            return exit_code(run_demo(listen, None));
        }
        Command::Simulate { listen, sim } => {
            let _log = logging::init(LogFormat::Text);
            return exit_code(run_demo(listen, Some(sim)));
        }
        Command::Run(arg) => (false, arg.resolve(cli.config)),
        Command::Check(arg) => (true, arg.resolve(cli.config)),
    };
    let config = match Config::load(&config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    if check {
        for warning in &config.warnings {
            eprintln!("warning: {warning}");
        }
        print!("{}", config.render_redacted());
        return ExitCode::SUCCESS;
    }
    // Kept to the end of `main`: its drop writes out queued lines, the
    // error line of a failed run included.
    let _log = logging::init(config.log.format);
    exit_code(run(config))
}

/// Exit code 1 for a runtime failure, logged once: as one log line (so that
/// with `log.format = "json"` it is JSON like every other line), naming
/// each cause once.
fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{}", describe(&err));
            ExitCode::from(1)
        }
    }
}

/// The error and its causes joined by `: `, each once: a message that
/// already quotes its cause (`cannot bind 127.0.0.1:8080: Address already
/// in use`) is not followed by that cause again.
fn describe(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}

#[tokio::main]
async fn run_demo(listen: SocketAddr, simulate_only: Option<SimArgs>) -> anyhow::Result<()> {
    match simulate_only {
        None => demo::demo(listen, shutdown_signal()).await?,
        Some(args) => {
            let headers = Dialect::parse(&args.headers, Some(args.reset))
                .and_then(Result::ok)
                .unwrap_or(Dialect::Fitbit);
            let sim = SimConfig {
                quota: args.quota,
                window: args.window,
                token_lifetime: args.token_lifetime,
                headers,
                retry_after_date: args.retry_after == "date",
                clock_skew_secs: args.clock_skew,
                window_offset: args.window_offset,
                ..SimConfig::default()
            };
            demo::simulate(listen, sim, args.lag, shutdown_signal()).await?;
        }
    }
    Ok(())
}

fn run(config: Config) -> anyhow::Result<()> {
    let workers = workers().context("cannot start the serving threads")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let served = runtime.block_on(serve(config, workers.clone()));
    // The serving threads stop (and are joined) after the main runtime.
    drop(runtime);
    drop(workers);
    served
}

/// The threads that serve connections, one current-thread runtime each
/// (`inbound/workers.rs`): `TOKIO_WORKER_THREADS` of them (tokio's own
/// variable), else one per core. With one, none: the main runtime, which
/// always runs the accept loop, the admin port, the token refresher and
/// reloads on the main thread, serves the connections too.
fn workers() -> std::io::Result<Option<Arc<Workers>>> {
    let n = std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|n| n.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if n <= 1 {
        return Ok(None);
    }
    Workers::start(n).map(|w| Some(Arc::new(w)))
}

async fn serve(config: Config, workers: Option<Arc<Workers>>) -> anyhow::Result<()> {
    // First of all, so that a SIGHUP never ends the process (its default
    // action), not even one that arrives while the proxy starts.
    let reloads = reload_signals()?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let addr = config.listen.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind listen.addr {addr}"))?;
    fitbit_proxy::run_with_reloads(listener, config, shutdown_signal(), reloads, workers).await?;
    tracing::info!("stopped");
    Ok(())
}

/// One message per SIGHUP: reload the config. Signals that arrive while a
/// reload is pending are folded into it.
#[cfg(unix)]
fn reload_signals() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let _ = tx.try_send(());
        }
    });
    Ok(rx)
}

#[cfg(not(unix))]
fn reload_signals() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    std::mem::forget(tx);
    Ok(rx)
}

/// Resolves on the first SIGTERM or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown signal received; draining");
}
