//! The `fitbit-proxy` binary: command line → config → logging → run.
//! Exit codes: 0 clean shutdown, 1 runtime failure, 2 invalid config or
//! arguments (clap exits 2 on bad arguments by itself).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fitbit_proxy::config::LogFormat;
use fitbit_proxy::ops::logging;
use fitbit_proxy::sim::demo;
use fitbit_proxy::sim::{Dialect, Reset, SimConfig};
use fitbit_proxy::Config;

#[derive(Parser)]
#[command(
    name = "fitbit-proxy",
    version,
    about = "Authenticating, pacing reverse proxy for the Fitbit Web API"
)]
struct Cli {
    /// Path to proxy.toml.
    #[arg(
        long,
        global = true,
        env = "FITBIT_PROXY_CONFIG",
        default_value = "proxy.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the config and print it with every secret redacted.
    Check,
    /// Run a simulated Fitbit API and the proxy in front of it, on loopback.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
    },
    /// Run only the simulated Fitbit API, for developing services locally.
    Simulate {
        /// Where the simulator listens.
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: SocketAddr,
        #[command(flatten)]
        sim: SimArgs,
    },
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
    let command = cli.command.unwrap_or(Command::Run);
    match command {
        Command::Demo { listen } => {
            let _log = logging::init(LogFormat::Text);
            return exit_code(run_demo(listen, None));
        }
        Command::Simulate { listen, sim } => {
            let _log = logging::init(LogFormat::Text);
            return exit_code(run_demo(listen, Some(sim)));
        }
        Command::Run | Command::Check => {}
    }
    let config = match Config::load(&cli.config) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("{err}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Check => {
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.render_redacted());
            ExitCode::SUCCESS
        }
        _ => {
            // Kept to the end of `main`: its drop writes out queued lines,
            // the error line of a failed run included.
            let _log = logging::init(config.log.format);
            exit_code(run(config))
        }
    }
}

fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("fitbit-proxy: {err:#}");
            ExitCode::from(1)
        }
    }
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
    runtime()?.block_on(serve(config))
}

/// tokio's multi-threaded runtime, sized by `TOKIO_WORKER_THREADS` (default:
/// one worker per core); with one worker, the current-thread runtime: every
/// connection, the accept loop and the token refresher share one thread
/// with no work-stealing bookkeeping and no cross-thread wake-ups.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let one_worker = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|n| n.trim() == "1");
    let mut builder = if one_worker {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build()
}

async fn serve(config: Config) -> anyhow::Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let addr = config.listen.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind listen.addr {addr}"))?;
    fitbit_proxy::run(listener, config, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
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
