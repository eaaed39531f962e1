//! The raw shape of `proxy.toml`: serde structs that mirror the documented
//! keys (README, proxy.toml) key for key, with every default in their
//! `Default` impls (the one place defaults live, but for those a profile
//! decides). `parse.rs` reads a file into them.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::config::Secret;

/// Durations, counts and enums are kept as written (strings, `i64`) so that
/// a bad value is a validation problem, reported with all the others, rather
/// than a serde error that stops at the first one.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawConfig {
    pub(super) listen: RawListen,
    pub(super) admin: RawAdmin,
    pub(super) upstream: RawUpstream,
    pub(super) credentials: RawCredentials,
    pub(super) rate_limit: RawRateLimit,
    pub(super) log: RawLog,
    pub(super) shared: RawShared,
    pub(super) callers: RawCallers,
    /// `None`: the default profile. (Written first in a file, as a
    /// top-level key must be; last here, after the sections.)
    pub(super) profile: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawListen {
    pub(super) addr: String,
    pub(super) tls_cert: Option<String>,
    pub(super) tls_key: Option<String>,
    pub(super) allow: Vec<String>,
    pub(super) hosts: Vec<String>,
    pub(super) max_connections: i64,
    #[serde(deserialize_with = "duration_text")]
    pub(super) header_read_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) send_timeout: String,
    pub(super) max_request_body: i64,
    #[serde(deserialize_with = "duration_text")]
    pub(super) shutdown_grace: String,
}

impl Default for RawListen {
    fn default() -> Self {
        RawListen {
            addr: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            allow: Vec::new(),
            hosts: Vec::new(),
            max_connections: 10_000,
            header_read_timeout: "10s".into(),
            send_timeout: "60s".into(),
            max_request_body: 10_485_760,
            shutdown_grace: "30s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawAdmin {
    /// `""` disables the admin listener.
    pub(super) addr: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            addr: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawUpstream {
    /// `None`: the profile's default, if it has one.
    pub(super) url: Option<String>,
    pub(super) ca_file: Option<String>,
    #[serde(deserialize_with = "duration_text")]
    pub(super) connect_timeout: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) request_timeout: String,
    pub(super) deny_paths: Vec<String>,
    pub(super) allow_paths: Option<Vec<String>>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        RawUpstream {
            url: None,
            ca_file: None,
            connect_timeout: "5s".into(),
            request_timeout: "60s".into(),
            // Fitbit's OAuth endpoints: the token endpoint and revocation under
            // /oauth2/, token introspection under /1.1/oauth2/.
            deny_paths: vec!["/oauth2/".into(), "/1.1/oauth2/".into()],
            allow_paths: None,
        }
    }
}

/// `client_id` and the secret source have no default: `None` means missing;
/// `token_url` and `expires_in` default by profile.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCredentials {
    pub(super) token_url: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<String>,
    /// Wrapped at once so that not even a `Debug` of the raw config shows it.
    #[serde(deserialize_with = "secret")]
    pub(super) client_secret: Option<Secret>,
    pub(super) client_auth: String,
    pub(super) scope: String,
    pub(super) params: BTreeMap<String, String>,
    pub(super) expires_in: Option<i64>,
    #[serde(deserialize_with = "duration_text")]
    pub(super) refresh_before_expiry: String,
}

impl Default for RawCredentials {
    fn default() -> Self {
        RawCredentials {
            token_url: None,
            client_id: None,
            client_secret_env: None,
            client_secret_file: None,
            client_secret: None,
            client_auth: "basic".into(),
            scope: String::new(),
            params: BTreeMap::new(),
            expires_in: None,
            refresh_before_expiry: "5m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRateLimit {
    /// `None` (with `hourly_quota` unset too): 150.
    pub(super) quota: Option<i64>,
    /// The old name: `quota` with `window = "1h"`.
    pub(super) hourly_quota: Option<i64>,
    /// `None`: an hour.
    #[serde(deserialize_with = "optional_duration_text")]
    pub(super) window: Option<String>,
    /// `None`: the profile's dialect.
    pub(super) headers: Option<String>,
    pub(super) reset: Option<String>,
    pub(super) burst: i64,
    #[serde(deserialize_with = "duration_text")]
    pub(super) max_wait: String,
    pub(super) max_queued: i64,
    #[serde(deserialize_with = "duration_text")]
    pub(super) reset_margin: String,
    pub(super) replicas: i64,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        RawRateLimit {
            quota: None,
            hourly_quota: None,
            window: None,
            headers: None,
            reset: None,
            burst: 10,
            max_wait: "30s".into(),
            max_queued: 1000,
            reset_margin: "2s".into(),
            replicas: 1,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawLog {
    pub(super) format: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            format: "text".into(),
        }
    }
}

/// `[shared]`: Redis for state shared across replicas; `redis_url = ""`
/// keeps the proxy alone.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawShared {
    pub(super) redis_url: String,
    pub(super) redis_password_env: Option<String>,
    pub(super) redis_password_file: Option<String>,
    pub(super) key_prefix: String,
    #[serde(deserialize_with = "duration_text")]
    pub(super) timeout: String,
}

impl Default for RawShared {
    fn default() -> Self {
        RawShared {
            redis_url: String::new(),
            redis_password_env: None,
            redis_password_file: None,
            key_prefix: "fitbit-proxy".into(),
            timeout: "100ms".into(),
        }
    }
}

/// `[callers]`: who is calling, and their shares of the pacing slots.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCallers {
    /// `""`: callers are told apart by source address only.
    pub(super) header: String,
    /// Caller name → weight; callers not named weigh 1.
    pub(super) weights: BTreeMap<String, i64>,
    pub(super) max_callers: i64,
}

impl Default for RawCallers {
    fn default() -> Self {
        RawCallers {
            header: "x-caller".into(),
            weights: BTreeMap::new(),
            max_callers: 100,
        }
    }
}

/// A duration is a string; this only exists so that `max_wait = 30` says
/// what was expected instead of serde's bare "expected a string".
fn duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct DurationText;
    impl Visitor<'_> for DurationText {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(r#"a duration string such as "250ms", "10s" or "5m""#)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_owned())
        }
    }
    d.deserialize_str(DurationText)
}

fn optional_duration_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    duration_text(d).map(Some)
}

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Some(Secret::new(String::deserialize(d)?)))
}
