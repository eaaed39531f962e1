//! Validation: the raw structs become the typed `Config`. Every rule runs, so
//! a single `check` reports every problem at once; relative paths are resolved
//! against the config file's directory, and risky-but-allowed settings become
//! warnings.

mod callers;
mod credentials;
mod rate_limit;
mod shared;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipnet::IpNet;

use super::error::Problem;
use super::raw::{RawAdmin, RawConfig, RawListen, RawLog, RawUpstream};
use super::url::{self, Scheme};
use super::{files, hosts, quote};
use super::{
    AdminConfig, Config, ListenConfig, LogConfig, LogFormat, Profile, RateLimitConfig, TlsFiles,
    UpstreamConfig,
};

/// What a redacted secret looks like wherever a value would be shown.
pub(super) const REDACTED: &str = "\"<redacted>\"";

pub(super) fn validate(
    raw: &RawConfig,
    source: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, Vec<Problem>> {
    let mut v = Validator {
        base_dir: source.parent().unwrap_or(Path::new("")).to_path_buf(),
        env,
        profile: Profile::default(),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    v.profile(raw.profile.as_deref());
    let listen = v.listen(&raw.listen);
    let admin = v.admin(&raw.admin);
    let upstream = v.upstream(&raw.upstream);
    let credentials = v.credentials(&raw.credentials);
    let rate_limit = v.rate_limit(&raw.rate_limit);
    let log = v.log(&raw.log);
    let shared = v.shared(&raw.shared);
    let callers = v.callers(&raw.callers);
    if let (Some(l), Some(r)) = (&listen, &rate_limit) {
        v.waiters_fit_in_the_grace(l, r, &raw.rate_limit.max_wait);
    }
    if !v.problems.is_empty() {
        return Err(v.problems);
    }
    let config = (|| {
        Some(Config {
            source: source.to_path_buf(),
            profile: v.profile,
            listen: listen?,
            admin: admin?,
            upstream: upstream?,
            credentials: credentials?,
            rate_limit: rate_limit?,
            log: log?,
            shared: shared?,
            callers: callers?,
            warnings: v.warnings.iter().map(|w| w.line(source)).collect(),
        })
    })();
    // Unreachable while every `None` comes with a problem; never report an
    // invalid config with nothing to say.
    config.ok_or_else(|| vec![Problem::file("invalid configuration")])
}

/// Collects problems and warnings. Each check returns `None` exactly when it
/// has recorded a problem, so the section builders can run every check first
/// and only then combine the results with `?`.
struct Validator<'a> {
    base_dir: PathBuf,
    env: &'a dyn Fn(&str) -> Option<String>,
    /// The profile whose defaults fill in what is not set.
    profile: Profile,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Validator<'_> {
    fn profile(&mut self, raw: Option<&str>) {
        let Some(name) = raw else { return };
        match Profile::parse(name) {
            Some(profile) => self.profile = profile,
            None => {
                let message = format!("must be {}", Profile::NAMES);
                self.problem(Problem::new("profile", message).with_value(quote(name)));
            }
        }
    }

    fn listen(&mut self, raw: &RawListen) -> Option<ListenConfig> {
        let addr = self.socket_addr("listen.addr", &raw.addr);
        let tls = self.tls(raw.tls_cert.as_deref(), raw.tls_key.as_deref());
        let allow = self.allow(&raw.allow);
        let hosts = self.hosts(&raw.hosts);
        let max_connections = self.count("listen.max_connections", raw.max_connections, 1);
        let header_read_timeout =
            self.duration("listen.header_read_timeout", &raw.header_read_timeout);
        let send_timeout = self.duration("listen.send_timeout", &raw.send_timeout);
        let max_request_body = self.count("listen.max_request_body", raw.max_request_body, 0);
        let shutdown_grace = self.duration("listen.shutdown_grace", &raw.shutdown_grace);
        Some(ListenConfig {
            addr: addr?,
            tls: tls?,
            allow: allow?,
            hosts: hosts?,
            max_connections: max_connections?,
            header_read_timeout: header_read_timeout?,
            send_timeout: send_timeout?,
            max_request_body: max_request_body?,
            shutdown_grace: shutdown_grace?,
        })
    }

    fn admin(&mut self, raw: &RawAdmin) -> Option<AdminConfig> {
        if raw.addr.is_empty() {
            return Some(AdminConfig { addr: None });
        }
        let addr = self.socket_addr("admin.addr", &raw.addr)?;
        Some(AdminConfig { addr: Some(addr) })
    }

    fn upstream(&mut self, raw: &RawUpstream) -> Option<UpstreamConfig> {
        let url = self.upstream_url(raw.url.as_deref());
        let ca_file = match &raw.ca_file {
            Some(path) => self
                .pem_file("upstream.ca_file", path, files::Pem::Certificates)
                .map(Some),
            None => Some(None),
        };
        let connect_timeout = self.duration("upstream.connect_timeout", &raw.connect_timeout);
        let request_timeout = self.duration("upstream.request_timeout", &raw.request_timeout);
        let deny_paths = self.path_prefixes("upstream.deny_paths", &raw.deny_paths);
        let allow_paths = self.allow_paths(raw.allow_paths.as_deref());
        Some(UpstreamConfig {
            url: url?,
            ca_file: ca_file?,
            connect_timeout: connect_timeout?,
            request_timeout: request_timeout?,
            deny_paths: deny_paths?,
            allow_paths: allow_paths?,
        })
    }

    fn log(&mut self, raw: &RawLog) -> Option<LogConfig> {
        let format = match raw.format.as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                let problem = Problem::new("log.format", r#"must be "text" or "json""#);
                self.problem(problem.with_value(quote(other)));
                return None;
            }
        };
        Some(LogConfig { format })
    }

    // ---- [listen] ---------------------------------------------------------

    fn tls(&mut self, cert: Option<&str>, key: Option<&str>) -> Option<Option<TlsFiles>> {
        let (cert, key) = match (cert, key) {
            (None, None) => return Some(None),
            (Some(cert), Some(key)) => (cert, key),
            (Some(_), None) => return self.missing_pair("listen.tls_key"),
            (None, Some(_)) => return self.missing_pair("listen.tls_cert"),
        };
        let cert = self.pem_file("listen.tls_cert", cert, files::Pem::Certificates);
        let key = self.pem_file("listen.tls_key", key, files::Pem::PrivateKey);
        Some(Some(TlsFiles {
            cert: cert?,
            key: key?,
        }))
    }

    fn missing_pair<T>(&mut self, key: &str) -> Option<T> {
        let message =
            "missing: tls_cert and tls_key must be set together (or neither, for plain TCP)";
        self.problem(Problem::new(key, message));
        None
    }

    /// Bare addresses are accepted as single-host networks (/32 or /128).
    fn allow(&mut self, entries: &[String]) -> Option<Vec<IpNet>> {
        let mut nets = Vec::with_capacity(entries.len());
        for entry in entries {
            let net = entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from));
            match net {
                Ok(net) => nets.push(net),
                Err(_) => {
                    let message = r#"must be a CIDR such as "10.0.0.0/8" or an IP address"#;
                    self.problem(Problem::new("listen.allow", message).with_value(quote(entry)));
                }
            }
        }
        (nets.len() == entries.len()).then_some(nets)
    }

    /// Names checked and kept in their canonical form, for matching.
    fn hosts(&mut self, entries: &[String]) -> Option<Vec<String>> {
        let mut names = Vec::with_capacity(entries.len());
        for entry in entries {
            match hosts::entry(entry) {
                Ok(name) => names.push(name),
                Err(message) => {
                    self.problem(Problem::new("listen.hosts", message).with_value(quote(entry)));
                }
            }
        }
        (names.len() == entries.len()).then_some(names)
    }

    /// A request waits at most `max_wait` for its pacing slot; if that is
    /// longer than `shutdown_grace`, a waiter at SIGTERM may be cut without
    /// an answer.
    fn waiters_fit_in_the_grace(&mut self, l: &ListenConfig, r: &RateLimitConfig, raw: &str) {
        if r.max_wait > l.shutdown_grace {
            let message = format!(
                "longer than listen.shutdown_grace ({}): a request still waiting for its pacing slot when the grace ends is cut off unanswered",
                humantime::format_duration(l.shutdown_grace)
            );
            self.warn(Problem::new("rate_limit.max_wait", message).with_value(quote(raw)));
        }
    }

    // ---- [upstream] -------------------------------------------------------

    fn upstream_url(&mut self, raw: Option<&str>) -> Option<Uri> {
        const KEY: &str = "upstream.url";
        let raw = self.or_profile_default(KEY, raw, Profile::default_upstream_url)?;
        let (uri, scheme) = self.url(KEY, raw, url::upstream)?;
        if scheme == Scheme::Http && !url::is_loopback(&uri) {
            let message =
                "plain http: requests and the proxy's bearer token cross the network unencrypted";
            self.warn(Problem::new(KEY, message).with_value(quote(raw)));
        }
        Some(uri)
    }

    fn path_prefixes(&mut self, key: &str, prefixes: &[String]) -> Option<Vec<String>> {
        let bad: Vec<&String> = prefixes.iter().filter(|p| !p.starts_with('/')).collect();
        for prefix in &bad {
            let problem = Problem::new(key, r#"must start with "/" (a path prefix such as "/1/")"#);
            self.problem(problem.with_value(quote(prefix)));
        }
        bad.is_empty().then(|| prefixes.to_vec())
    }

    fn allow_paths(&mut self, raw: Option<&[String]>) -> Option<Option<Vec<String>>> {
        match raw {
            None => Some(None),
            Some([]) => {
                let message = "must not be empty: it would forward nothing \
                               (remove the key to forward every path not denied)";
                let problem = Problem::new("upstream.allow_paths", message);
                self.problem(problem.with_value("[]"));
                None
            }
            Some(paths) => self.path_prefixes("upstream.allow_paths", paths).map(Some),
        }
    }

    // ---- shared checks ----------------------------------------------------

    /// The value as written, else the profile's default; with neither, a
    /// problem: the profile needs the key.
    fn or_profile_default<'r>(
        &mut self,
        key: &str,
        raw: Option<&'r str>,
        default: fn(Profile) -> Option<&'static str>,
    ) -> Option<&'r str> {
        let value = raw.or_else(|| default(self.profile));
        if value.is_none() {
            let message = format!(
                "missing (required with profile = {})",
                quote(self.profile.name())
            );
            self.problem(Problem::new(key, message));
        }
        value
    }

    fn socket_addr(&mut self, key: &str, raw: &str) -> Option<SocketAddr> {
        let parsed = raw.parse().ok();
        if parsed.is_none() {
            let message = r#"must be an IP address and port such as "127.0.0.1:8080""#;
            self.problem(Problem::new(key, message).with_value(quote(raw)));
        }
        parsed
    }

    fn count<T: TryFrom<i64>>(&mut self, key: &str, raw: i64, min: i64) -> Option<T> {
        let message = match T::try_from(raw) {
            _ if raw < min && min == 0 => "must not be negative".to_owned(),
            _ if raw < min => format!("must be at least {min}"),
            Ok(value) => return Some(value),
            Err(_) => "is too large".to_owned(),
        };
        self.problem(Problem::new(key, message).with_value(raw.to_string()));
        None
    }

    /// A duration that must be greater than zero (a timeout, a grace period).
    fn duration(&mut self, key: &str, raw: &str) -> Option<Duration> {
        self.parse_duration(key, raw, false)
    }

    /// A duration that may be zero (a margin).
    fn duration_or_zero(&mut self, key: &str, raw: &str) -> Option<Duration> {
        self.parse_duration(key, raw, true)
    }

    fn parse_duration(&mut self, key: &str, raw: &str, zero_ok: bool) -> Option<Duration> {
        let message = match humantime::parse_duration(raw) {
            Ok(d) if d.is_zero() && !zero_ok => "must be greater than 0".to_owned(),
            Ok(d) => return Some(d),
            Err(e) => format!(r#"must be a duration such as "250ms", "10s" or "5m" ({e})"#),
        };
        self.problem(Problem::new(key, message).with_value(quote(raw)));
        None
    }

    fn url(
        &mut self,
        key: &str,
        raw: &str,
        check: fn(&str) -> Result<(Uri, Scheme), String>,
    ) -> Option<(Uri, Scheme)> {
        match check(raw) {
            Ok(parsed) => Some(parsed),
            Err(message) => {
                self.problem(Problem::new(key, message).with_value(quote(raw)));
                None
            }
        }
    }

    fn pem_file(&mut self, key: &str, raw: &str, kind: files::Pem) -> Option<PathBuf> {
        let path = self.resolve(key, raw)?;
        if let Err(message) = files::check_pem(&path, kind) {
            self.problem(Problem::new(key, message).with_value(quote(raw)));
            return None;
        }
        Some(path)
    }

    fn resolve(&mut self, key: &str, raw: &str) -> Option<PathBuf> {
        if raw.is_empty() {
            self.problem(Problem::new(key, "must not be empty").with_value(quote(raw)));
            return None;
        }
        Some(files::resolve(&self.base_dir, raw))
    }

    fn problem(&mut self, problem: Problem) {
        self.problems.push(problem);
    }

    fn warn(&mut self, warning: Problem) {
        self.warnings.push(warning);
    }
}
