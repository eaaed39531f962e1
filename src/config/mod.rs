//! Configuration: `proxy.toml` → raw serde structs (`raw.rs`) → validation
//! (`validate.rs`) → the typed `Config` the rest of the crate uses. Every
//! problem is collected and reported at once as `PATH: key = value: what is wrong`.

mod error;
mod files;
mod hosts;
mod parse;
mod raw;
mod render;
mod secret;
mod url;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

pub use secret::Secret;

pub use crate::profile::Profile;

pub use error::{ConfigError, Problem};
pub use hosts::canonical_host;

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where it was read from, for messages.
    pub source: PathBuf,
    /// Whose conventions fill in what is not configured (`profile`).
    pub profile: Profile,
    pub listen: ListenConfig,
    pub admin: AdminConfig,
    pub upstream: UpstreamConfig,
    pub credentials: CredentialsConfig,
    pub rate_limit: RateLimitConfig,
    pub log: LogConfig,
    pub shared: SharedConfig,
    pub callers: CallersConfig,
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
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// Sent as `scope` when not empty.
    pub scope: String,
    /// Extra form fields of the token request, in key order.
    pub params: Vec<(String, String)>,
    /// The lifetime asked for (`expires_in`), when one is sent.
    pub expires_in: Option<u32>,
    pub refresh_before_expiry: Duration,
}

/// Where the client id and secret go in a token request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `Authorization: Basic` (RFC 6749 §2.3.1), the default.
    Basic,
    /// `client_id` and `client_secret` in the form body.
    Post,
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
    /// Requests per window assumed until headers say otherwise (always,
    /// with `headers = "none"`).
    pub quota: u32,
    /// The window `quota` is per.
    pub window: Duration,
    /// The rate-limit headers the upstream speaks.
    pub headers: Dialect,
    pub burst: u32,
    pub max_wait: Duration,
    pub max_queued: usize,
    pub reset_margin: Duration,
    /// Proxies sharing this client id (this quota); each spends its share.
    pub replicas: u32,
}

impl Default for RateLimitConfig {
    /// The defaults of `proxy.toml`, for tests and benches that build one.
    fn default() -> Self {
        RateLimitConfig {
            quota: 150,
            window: Duration::from_secs(3600),
            headers: Dialect::Fitbit,
            burst: 10,
            max_wait: Duration::from_secs(30),
            max_queued: 1000,
            reset_margin: Duration::from_secs(2),
            replicas: 1,
        }
    }
}

/// How an upstream reports its quota (`rate_limit.headers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Dialect {
    /// `fitbit-rate-limit-limit`, `-remaining`, `-reset` (delta seconds).
    #[default]
    Fitbit,
    /// The IETF `RateLimit-Policy` and `RateLimit` structured fields.
    Ietf,
    /// `RateLimit-Limit`, `-Remaining`, `-Reset`.
    RateLimit(Reset),
    /// `X-RateLimit-Limit`, `-Remaining`, `-Reset`.
    XRateLimit(Reset),
    /// `X-Rate-Limit-Limit`, `-Remaining`, `-Reset`.
    XRateLimitDash(Reset),
    /// No quota headers: `quota` per `window`, learning only from 429s.
    None,
}

/// How a `*-Reset` header is read (`rate_limit.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Seconds from now.
    Delta,
    /// A Unix time in seconds, on the upstream's clock.
    Epoch,
}

impl Dialect {
    /// Every value `rate_limit.headers` takes, for messages.
    pub const NAMES: &'static str = "fitbit, ietf, ratelimit, x-ratelimit, x-rate-limit, none";

    /// The dialect named `name`; `reset` is asked only by the dialects
    /// whose reset differs by vendor (`Err(name)` when it is needed and
    /// missing, `None` when the name is unknown).
    pub fn parse(name: &str, reset: Option<Reset>) -> Option<Result<Dialect, ()>> {
        let needs = |make: fn(Reset) -> Dialect| Some(reset.map(make).ok_or(()));
        match name {
            "fitbit" => Some(Ok(Dialect::Fitbit)),
            "ietf" => Some(Ok(Dialect::Ietf)),
            "none" => Some(Ok(Dialect::None)),
            "ratelimit" => needs(Dialect::RateLimit),
            "x-ratelimit" => needs(Dialect::XRateLimit),
            "x-rate-limit" => needs(Dialect::XRateLimitDash),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dialect::Fitbit => "fitbit",
            Dialect::Ietf => "ietf",
            Dialect::RateLimit(_) => "ratelimit",
            Dialect::XRateLimit(_) => "x-ratelimit",
            Dialect::XRateLimitDash(_) => "x-rate-limit",
            Dialect::None => "none",
        }
    }

    /// The reset unit, for the dialects that take one.
    pub fn reset(self) -> Option<Reset> {
        match self {
            Dialect::RateLimit(r) | Dialect::XRateLimit(r) | Dialect::XRateLimitDash(r) => Some(r),
            _ => None,
        }
    }
}

impl Reset {
    pub fn parse(name: &str) -> Option<Reset> {
        match name {
            "delta" => Some(Reset::Delta),
            "epoch" => Some(Reset::Epoch),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Reset::Delta => "delta",
            Reset::Epoch => "epoch",
        }
    }
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

/// `[callers]`: how a request's caller is named, and the callers' shares
/// of the pacing slots while they compete.
#[derive(Debug, Clone, PartialEq)]
pub struct CallersConfig {
    /// The request header that names the caller; `None` (`header = ""`):
    /// callers are told apart by source address only.
    pub header: Option<http::HeaderName>,
    /// Caller name → weight; a caller not named weighs 1.
    pub weights: BTreeMap<String, u32>,
    /// Distinct callers given their own metric series; the rest count as
    /// `other`.
    pub max_callers: usize,
}

impl Default for CallersConfig {
    /// The defaults of `proxy.toml`, for tests and benches that build one.
    fn default() -> Self {
        CallersConfig {
            header: Some(http::HeaderName::from_static("x-caller")),
            weights: BTreeMap::new(),
            max_callers: 100,
        }
    }
}

impl CallersConfig {
    /// The weight of the caller `name` (1 unless configured).
    pub fn weight(&self, name: &str) -> u32 {
        self.weights.get(name).copied().unwrap_or(1)
    }
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
        let parsed = parse::parse(text).map_err(|problems| ConfigError::new(source, problems))?;
        let validated = validate::validate(&parsed.raw, source, env);
        // Every problem at once: the keys serde refused, then every value
        // validation refused (except those about a key already named), each
        // with the line it is written on.
        let mut problems = parsed.problems.clone();
        let later = validated.as_ref().err().into_iter().flatten();
        for problem in later.filter(|p| !parsed.about_dropped(&p.key)) {
            let location = problem
                .location
                .or_else(|| parsed.location_of(&problem.key))
                .or_else(|| problem.near.as_deref().and_then(|k| parsed.location_of(k)));
            problems.push(problem.clone().at(location));
        }
        match validated {
            Ok(config) if problems.is_empty() => Ok(config),
            _ if problems.is_empty() => Err(ConfigError::new(
                source,
                vec![Problem::file("invalid configuration")],
            )),
            _ => Err(ConfigError::new(source, problems)),
        }
    }

    /// The effective configuration, every default filled in, as TOML in the
    /// order of `proxy.toml`; the client secret appears only as its source.
    /// Parsed back with the same source path and environment it gives an
    /// equal `Config`, except that a literal `client_secret` cannot survive.
    pub fn render_redacted(&self) -> String {
        render::render(self)
    }

    /// The dotted keys whose effective value differs between `self` and
    /// `other` (`rate_limit.max_wait`…), sorted by section and key;
    /// `credentials.client_secret` when the secret itself changed (its
    /// value is never shown). For the reload log line.
    pub fn changed_keys(&self, other: &Config) -> Vec<String> {
        let mut keys = render::changed_keys(&self.render_redacted(), &other.render_redacted());
        if self.credentials.client_secret != other.credentials.client_secret {
            keys.push("credentials.client_secret".to_owned());
        }
        let password = |c: &Config| c.shared.redis.as_ref().and_then(|r| r.password.clone());
        if password(self) != password(other) {
            keys.push("shared.redis_password".to_owned());
        }
        keys
    }
}

/// Reads a `client_secret_file` as loading does: the whole file, minus the
/// trailing newline editors add; an empty file is an error.
pub fn read_secret_file(path: &Path) -> Result<Secret, String> {
    files::read_secret(path)
}

/// The longest caller name; a longer header value names no caller.
pub const MAX_CALLER_NAME: usize = 64;

/// Whether `name` may name a caller: 1 to [`MAX_CALLER_NAME`] bytes, each
/// a token character of HTTP (RFC 9110 §5.6.2: letters, digits and
/// ``!#$%&'*+-.^_`|~``), so that it is safe in a log line and a metric label.
pub fn is_caller_name(name: &[u8]) -> bool {
    (1..=MAX_CALLER_NAME).contains(&name.len())
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A string as TOML writes it (`"ftp://x"`), for messages and `render_redacted`.
fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}
