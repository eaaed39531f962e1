//! Configuration: `proxy.toml` → raw serde structs (`raw.rs`) → validation
//! (`validate.rs`) → the typed `Config` the rest of the crate uses. Every
//! problem is collected and reported at once as `PATH: key = value: what is wrong`.

mod error;
mod files;
mod hosts;
mod raw;
mod render;
mod secret;
mod url;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

pub use secret::Secret;

pub use error::{ConfigError, Problem};
pub use hosts::canonical_host;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from, for messages.
    pub source: PathBuf,
    pub listen: ListenConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub credentials: CredentialsConfig,
    pub rate_limit: RateLimitConfig,
    pub log: LogConfig,
    pub shared: SharedConfig,
    /// Things that are allowed but deserve a warning at start-up
    /// (literal secret, plain-http upstream off loopback…).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub allow: Vec<IpNet>,
    /// The names a request may give the proxy in `Host` (or `:authority`),
    /// in [`canonical_host`] form; empty: any name.
    pub hosts: Vec<String>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    /// A client that takes no response bytes for this long is cut off.
    pub send_timeout: Duration,
    pub max_request_body: u64,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `None` when `admin.addr = ""`.
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// scheme + authority only (`https://api.fitbit.com`), path is `/`.
    pub url: Uri,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub deny_paths: Vec<String>,
    pub allow_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CredentialsConfig {
    pub token_url: Uri,
    pub client_id: String,
    pub client_secret: Secret,
    pub secret_source: SecretSource,
    pub expires_in: u32,
    pub refresh_before_expiry: Duration,
}

/// Where the client secret came from (printed by `check`, never the value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Literal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub hourly_quota: u32,
    pub burst: u32,
    pub max_wait: Duration,
    pub max_queued: usize,
    pub reset_margin: Duration,
    /// Proxies sharing this client id (this quota); each spends its share.
    pub replicas: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    pub format: LogFormat,
}

/// `[shared]`: state shared with the other replicas on this client id.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedConfig {
    /// `None` when `redis_url = ""`: the proxy is alone.
    pub redis: Option<RedisConfig>,
    /// Keys live under `{key_prefix}:{client_id}:…`.
    pub key_prefix: String,
    /// The longest one Redis call may take; slower counts as a failure.
    pub timeout: Duration,
}

/// Where Redis is and how to log in. The URL never carries a password
/// (validation refuses one), so it may be logged and printed.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS).
    pub url: String,
    pub password: Option<Secret>,
    /// Where the password came from (printed by `check`, never the value).
    pub password_source: Option<SecretSource>,
}

impl Config {
    /// Reads and validates the config file at `path`; relative paths inside it
    /// are resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                path,
                vec![Problem::file(format!("cannot read the config file: {e}"))],
            )
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `text` as if read from `source`, reading the
    /// client secret's environment variable from the process environment.
    pub fn from_toml_str(text: &str, source: &Path) -> Result<Config, ConfigError> {
        Config::from_toml_str_with_env(text, source, &|name| std::env::var(name).ok())
    }

    /// Like [`Config::from_toml_str`], with `env` standing in for the process
    /// environment (so tests need not mutate it).
    pub fn from_toml_str_with_env(
        text: &str,
        source: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw = raw::parse(text).map_err(|problems| ConfigError::new(source, problems))?;
        validate::validate(raw, source, env).map_err(|problems| ConfigError::new(source, problems))
    }

    /// The effective configuration, every default filled in, as TOML in the
    /// order of `proxy.toml`; the client secret appears only as its source.
    /// Parsed back with the same source path and environment it gives an
    /// equal `Config`, except that a literal `client_secret` cannot survive.
    pub fn render_redacted(&self) -> String {
        render::render(self)
    }
}

/// A string as TOML writes it (`"ftp://x"`), for messages and `render_redacted`.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
