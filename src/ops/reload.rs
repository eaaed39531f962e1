//! Reloading without a restart: SIGHUP reads `proxy.toml` again, and a
//! `client_secret_file` or TLS file that changes on disk is read again;
//! one task validates each new config as `check` does and hands it to the
//! parts beside and in the stack that hold it, tearing nothing down.

use std::hash::{Hash, Hasher};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::metrics::Metrics;
use super::status::{About, Sources};
use crate::config::{read_secret_file, Config, SecretSource};
use crate::inbound::{self, tls};
use crate::layers::Answers;
use crate::pacing::Pacer;
use crate::token::{Exchange, TokenSource};
use crate::upstream::{self, HttpClient};

/// How often the secret and TLS files are looked at, unless
/// [`POLL_ENV`] says otherwise: a rotated Kubernetes secret is picked up
/// well within a minute.
pub const POLL_DEFAULT: Duration = Duration::from_secs(10);
/// The longest poll interval [`POLL_ENV`] may set.
const POLL_MAX: Duration = Duration::from_secs(60);
/// Overrides [`POLL_DEFAULT`] (a duration such as `"500ms"`, at most a
/// minute); for tests, which cannot wait ten seconds for every change.
pub const POLL_ENV: &str = "FITBIT_PROXY_FILE_POLL_INTERVAL";

/// The poll interval: [`POLL_ENV`] when it is a duration, else the default.
pub(crate) fn poll_interval() -> Duration {
    std::env::var(POLL_ENV)
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .map_or(POLL_DEFAULT, |d| {
            d.clamp(Duration::from_millis(10), POLL_MAX)
        })
}

/// Keys whose new value needs a new process: the sockets, the Redis
/// connection, the log writer, and how many callers the metrics hold
/// series for (the registry is made once).
fn needs_restart(key: &str, shared: bool) -> bool {
    matches!(
        key,
        "listen.addr" | "admin.addr" | "log.format" | "callers.max_callers"
    )
        || key.starts_with("shared.")
        // With Redis, the client id names the shared keys, and the
        // rate-limit settings are the shared budget's, which is built once.
        || (shared && (key == "credentials.client_id" || key.starts_with("rate_limit.")))
}

/// Builds the stack for a config and client and puts it where the next
/// request takes it.
pub(crate) type Rebuild = Box<dyn Fn(&Config, &HttpClient) + Send + Sync>;

/// What a reload hands the new config to.
pub(crate) struct Parts {
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) tokens: Arc<TokenSource>,
    pub(crate) pacer: Arc<Pacer>,
    pub(crate) status: Arc<Sources>,
    pub(crate) listener: watch::Sender<inbound::Settings>,
    pub(crate) stack: Rebuild,
    /// The upstream client in use (rebuilt when its settings change).
    pub(crate) client: HttpClient,
}

/// What started a reload, for the log and the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Signal,
    File,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::File => "file",
        }
    }
}

/// The reloading task's state: the effective config and the files watched.
pub(crate) struct Reloader {
    config: Config,
    parts: Parts,
    files: Files,
}

impl Reloader {
    pub(crate) fn new(config: Config, parts: Parts) -> Self {
        let files = Files::of(&config);
        Reloader {
            config,
            parts,
            files,
        }
    }

    /// Reloads on every message of `signals` and looks at the files every
    /// `poll`, until aborted. Reloads never overlap: one task does them all.
    pub(crate) async fn run(mut self, signals: mpsc::Receiver<()>, poll: Duration) {
        let mut signals = Some(signals);
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let signal = async {
                match signals.as_mut() {
                    Some(rx) => rx.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = signal => match got {
                    Some(()) => self.reload(),
                    None => signals = None,
                },
                _ = tick.tick() => self.poll_files(),
            }
        }
    }

    /// SIGHUP: the config file read and validated anew, and applied whole.
    fn reload(&mut self) {
        let trigger = Trigger::Signal;
        tracing::info!(path = %self.config.source.display(), "reloading the config (SIGHUP)");
        match Config::load(&self.config.source) {
            Ok(new) => self.apply(new, trigger, Vec::new()),
            Err(err) => {
                let lines = err.lines();
                for line in &lines {
                    tracing::error!(trigger = trigger.as_str(), "config reload refused: {line}");
                }
                self.refused(
                    trigger,
                    &format!("{} problem(s) in the config file", lines.len()),
                );
            }
        }
    }

    /// Every `poll`: a secret or TLS file whose content changed is read
    /// again and applied with the rest of the config as it runs.
    fn poll_files(&mut self) {
        let now = Files::of(&self.config);
        if now == self.files {
            return;
        }
        let secret_changed = now.secret != self.files.secret;
        let tls_changed = now.tls != self.files.tls;
        self.files = now;
        let mut new = self.config.clone();
        let mut notes = Vec::new();
        if secret_changed {
            if let SecretSource::File(path) = &self.config.credentials.secret_source {
                match read_secret_file(path) {
                    Ok(secret) => new.credentials.client_secret = secret,
                    Err(err) => {
                        let message = format!("credentials.client_secret_file: {err}");
                        return self.refused(Trigger::File, &message);
                    }
                }
                notes.push("credentials.client_secret_file (changed on disk)".to_owned());
            }
        }
        if tls_changed {
            notes.push("listen.tls_cert / listen.tls_key (changed on disk)".to_owned());
        }
        if new.credentials.client_secret == self.config.credentials.client_secret && !tls_changed {
            // The file changed but not the secret (a newline added).
            return;
        }
        self.apply(new, Trigger::File, notes);
    }

    /// Applies `new`, or refuses it and keeps the running config. `notes`
    /// name what changed that the config's values do not show (files).
    fn apply(&mut self, mut new: Config, trigger: Trigger, notes: Vec<String>) {
        let restart = keep_restart_only(&self.config, &mut new);
        // What can fail is done first, before anything is replaced.
        let (tls, client) = match self.prepare(&new) {
            Ok(ready) => ready,
            Err(why) => return self.refused(trigger, &why),
        };
        let mut changed = self.config.changed_keys(&new);
        let renew = self.hand_over(&new, tls, client);
        self.parts.metrics.config_reload(true);
        for warning in new
            .warnings
            .iter()
            .filter(|w| !self.config.warnings.contains(w))
        {
            tracing::warn!("{warning}");
        }
        changed.extend(notes);
        let changed = if changed.is_empty() {
            "nothing".to_owned()
        } else {
            changed.join(", ")
        };
        let trigger = trigger.as_str();
        tracing::info!(trigger, changed, new_token = renew, "config reloaded");
        if !restart.is_empty() {
            tracing::warn!(
                trigger,
                keys = restart.join(", "),
                "changed in the config file but needs a restart; the running value is kept"
            );
        }
        self.config = new;
        self.files = Files::of(&self.config);
    }

    /// The TLS acceptor (the certificate and key read again) and the
    /// upstream client (a new one if its settings changed) for `new`.
    fn prepare(&self, new: &Config) -> Result<(Option<TlsAcceptor>, HttpClient), String> {
        let tls = new
            .listen
            .tls
            .as_ref()
            .map(tls::acceptor)
            .transpose()
            .map_err(|e| e.to_string())?;
        let client = if client_changed(&self.config, new) {
            upstream::build_client(&new.upstream).map_err(|e| e.to_string())?
        } else {
            self.parts.client.clone()
        };
        Ok((tls, client))
    }

    /// Gives `new` to every part that holds some of the config; returns
    /// whether a new token is being fetched.
    fn hand_over(&mut self, new: &Config, tls: Option<TlsAcceptor>, client: HttpClient) -> bool {
        let old = &self.config;
        let parts = &self.parts;
        parts.pacer.reconfigure(&new.rate_limit);
        parts.tokens.set_wait_limit(new.upstream.request_timeout);
        let renew = token_request_changed(old, new);
        if renew
            || client_changed(old, new)
            || old.credentials != new.credentials
            || old.upstream.request_timeout != new.upstream.request_timeout
        {
            let timeout = new.upstream.request_timeout;
            let exchange = Exchange::new(client.clone(), &new.credentials, timeout);
            let margin = new.credentials.refresh_before_expiry;
            parts.tokens.reconfigure(exchange, margin, renew);
        }
        (parts.stack)(new, &client);
        parts.listener.send_replace(inbound::Settings {
            listen: new.listen.clone(),
            tls,
            answers: Answers::of(new),
        });
        parts.status.about.store(Arc::new(About::of(new)));
        self.parts.client = client;
        renew
    }

    fn refused(&self, trigger: Trigger, why: &str) {
        self.parts.metrics.config_reload(false);
        tracing::error!(
            trigger = trigger.as_str(),
            "config reload refused ({why}); the previous config serves on"
        );
    }
}

/// Puts the running value back into `new` for every key that needs a
/// restart; returns the keys that had changed.
fn keep_restart_only(old: &Config, new: &mut Config) -> Vec<String> {
    let shared = old.shared.redis.is_some();
    let restart = old
        .changed_keys(new)
        .into_iter()
        .filter(|k| needs_restart(k, shared))
        .collect();
    new.listen.addr = old.listen.addr;
    new.admin = old.admin.clone();
    new.log = old.log.clone();
    new.shared = old.shared.clone();
    new.callers.max_callers = old.callers.max_callers;
    if shared {
        new.credentials.client_id = old.credentials.client_id.clone();
        new.rate_limit = old.rate_limit.clone();
    }
    restart
}

/// Whether the upstream client must be built anew.
fn client_changed(old: &Config, new: &Config) -> bool {
    let (a, b) = (&old.upstream, &new.upstream);
    a.url != b.url || a.ca_file != b.ca_file || a.connect_timeout != b.connect_timeout
}

/// Whether a token fetched with `old` may not be what `new` asks for: a
/// new token is fetched at once.
fn token_request_changed(old: &Config, new: &Config) -> bool {
    let (a, b) = (&old.credentials, &new.credentials);
    a.token_url != b.token_url
        || a.client_id != b.client_id
        || a.client_secret != b.client_secret
        || a.client_auth != b.client_auth
        || a.scope != b.scope
        || a.params != b.params
        || a.expires_in != b.expires_in
}

/// The watched files as last seen: modification time, length and a hash
/// of the content, so that a change is seen however it was made (a
/// Kubernetes secret is swapped by moving a symlink, which no watch on the
/// file itself reports). `None`: the file is not set or cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Files {
    secret: Option<Fingerprint>,
    tls: Option<(Option<Fingerprint>, Option<Fingerprint>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    /// The modification time, as time since the epoch.
    modified: Option<Duration>,
    len: u64,
    hash: u64,
}

impl Files {
    fn of(config: &Config) -> Files {
        let secret = match &config.credentials.secret_source {
            SecretSource::File(path) => fingerprint(path),
            _ => None,
        };
        let tls = config
            .listen
            .tls
            .as_ref()
            .map(|t| (fingerprint(&t.cert), fingerprint(&t.key)));
        Files { secret, tls }
    }
}

// A file's modification time is a `SystemTime`; it is compared, never
// used as a clock (clippy.toml bans the type for clocks).
#[allow(clippy::disallowed_types)]
fn fingerprint(path: &Path) -> Option<Fingerprint> {
    // Both follow symlinks: what counts is the file they lead to now.
    let meta = std::fs::metadata(path).ok()?;
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(Fingerprint {
        modified: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::SystemTime::UNIX_EPOCH).ok()),
        len: meta.len(),
        hash: hasher.finish(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sockets_redis_and_the_log_writer_need_a_restart() {
        for key in [
            "listen.addr",
            "admin.addr",
            "log.format",
            "shared.redis_url",
            "shared.key_prefix",
            "callers.max_callers",
        ] {
            assert!(needs_restart(key, false), "{key}");
        }
        for key in [
            "listen.allow",
            "listen.hosts",
            "listen.tls_cert",
            "rate_limit.max_wait",
            "upstream.deny_paths",
            "credentials.client_id",
            "credentials.client_secret",
            "callers.header",
            "callers.weights.billing",
        ] {
            assert!(!needs_restart(key, false), "{key}");
        }
        assert!(needs_restart("credentials.client_id", true));
        assert!(needs_restart("rate_limit.max_wait", true));
    }
}
