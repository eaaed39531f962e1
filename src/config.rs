//! Configuration: `proxy.toml` → raw serde structs → `validate()` → the typed
//! `Config` the rest of the crate uses. Every problem is collected and reported
//! at once as `PATH: key = value: what is wrong`.
//!
//! SKELETON: the typed structs below are the contract; loading is being written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use crate::secret::Secret;

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from, for messages.
    pub source: PathBuf,
    pub listen: ListenConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub credentials: CredentialsConfig,
    pub rate_limit: RateLimitConfig,
    pub log: LogConfig,
    /// Things that are allowed but deserve a warning at start-up
    /// (literal secret, plain-http upstream off loopback…).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ListenConfig {
    pub addr: SocketAddr,
    pub tls: Option<TlsFiles>,
    pub allow: Vec<IpNet>,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_request_body: u64,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// `None` when `admin.addr = ""`.
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// scheme + authority only (`https://api.fitbit.com`), path is `/`.
    pub url: Uri,
    pub ca_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub deny_paths: Vec<String>,
    pub allow_paths: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
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

#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub hourly_quota: u32,
    pub burst: u32,
    pub max_wait: Duration,
    pub max_queued: usize,
    pub reset_margin: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
}
