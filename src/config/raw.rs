//! The raw shape of `proxy.toml`: serde structs that mirror the documented keys (README, proxy.toml) key for
//! key, with every default in their `Default` impls (the one place defaults
//! live), and the translation of TOML syntax and type errors into `Problem`s
//! that name the dotted key.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use toml::de::{DeTable, DeValue};

use super::error::Problem;
use crate::config::Secret;
use crate::profile::fitbit::DEFAULT_TOKEN_LIFETIME;

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
    pub(super) url: String,
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
            url: "https://api.fitbit.com".into(),
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

/// `client_id` and the secret source have no default: `None` means missing.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCredentials {
    pub(super) token_url: String,
    pub(super) client_id: Option<String>,
    pub(super) client_secret_env: Option<String>,
    pub(super) client_secret_file: Option<String>,
    /// Wrapped at once so that not even a `Debug` of the raw config shows it.
    #[serde(deserialize_with = "secret")]
    pub(super) client_secret: Option<Secret>,
    pub(super) expires_in: i64,
    #[serde(deserialize_with = "duration_text")]
    pub(super) refresh_before_expiry: String,
}

impl Default for RawCredentials {
    fn default() -> Self {
        RawCredentials {
            token_url: "https://api.fitbit.com/oauth2/token".into(),
            client_id: None,
            client_secret_env: None,
            client_secret_file: None,
            client_secret: None,
            expires_in: DEFAULT_TOKEN_LIFETIME.into(),
            refresh_before_expiry: "5m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRateLimit {
    pub(super) hourly_quota: i64,
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
            hourly_quota: 150,
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

fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Secret>, D::Error> {
    Ok(Some(Secret::new(String::deserialize(d)?)))
}

/// The key whose type errors must not echo the value.
const SECRET_KEY: &str = "credentials.client_secret";

/// Parses `text` into the raw structs. A syntax error or a serde error (unknown
/// key, wrong type) stops here, because validation needs the whole parse.
pub(super) fn parse(text: &str) -> Result<RawConfig, Vec<Problem>> {
    let (doc, errors) = DeTable::parse_recoverable(text);
    if !errors.is_empty() {
        return Err(errors
            .iter()
            .map(|e| located(text, doc.get_ref(), e, "invalid TOML: "))
            .collect());
    }
    RawConfig::deserialize(toml::Deserializer::from(doc.clone()))
        .map_err(|e| vec![located(text, doc.get_ref(), &e, "")])
}

/// Names the key an error's span falls in, and rewrites serde's wording.
fn located(text: &str, doc: &DeTable<'_>, err: &toml::de::Error, prefix: &str) -> Problem {
    let span = err.span();
    let key = span
        .as_ref()
        .and_then(|s| key_at(doc, s.start))
        .unwrap_or_default();
    let message = if key == SECRET_KEY || key.starts_with("credentials.client_secret[") {
        "must be a string".to_owned()
    } else {
        format!("{prefix}{}", reword(err.message()))
    };
    Problem::new(&key, message).at(span.map(|s| line_col(text, s.start)))
}

/// serde's names for types, and the names a TOML file uses for them.
const TOML_WORDS: [(&str, &str); 5] = [
    ("expected i64", "expected an integer"),
    ("expected a sequence", "expected an array"),
    ("invalid type: map", "invalid type: table"),
    ("invalid type: sequence", "invalid type: array"),
    ("floating point", "float"),
];

/// serde says "unknown field `adr`, expected one of `addr`, `tls_cert`";
/// operators think in keys.
fn reword(message: &str) -> String {
    let message = message.trim_end();
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return TOML_WORDS
            .iter()
            .fold(message.to_owned(), |m, (serde, toml)| {
                m.replace(serde, toml)
            });
    };
    let expected = rest
        .split_once("`, expected ")
        .map(|(_, expected)| expected.replace('`', ""));
    match expected {
        Some(expected) => format!("unknown key (expected {expected})"),
        None => "unknown key".to_owned(),
    }
}

/// The dotted path of the innermost key, or non-table value, whose span holds
/// `pos`. A table's own span is not trusted: it may cover only its header, or,
/// after a syntax error, whatever the parser's recovery made of it.
fn key_at(table: &DeTable<'_>, pos: usize) -> Option<String> {
    table.iter().find_map(|(key, value)| {
        let name = key.get_ref();
        if let Some(inner) = inner_key_at(value.get_ref(), pos) {
            return Some(format!("{name}{inner}"));
        }
        let in_value = !value.get_ref().is_table() && value.span().contains(&pos);
        (key.span().contains(&pos) || in_value).then(|| name.to_string())
    })
}

/// The rest of the path (`.key` or `[i]…`) below a value, if `pos` is inside it.
fn inner_key_at(value: &DeValue<'_>, pos: usize) -> Option<String> {
    match value {
        DeValue::Table(table) => key_at(table, pos).map(|k| format!(".{k}")),
        DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let inner = inner_key_at(item.get_ref(), pos);
            match inner {
                Some(inner) => Some(format!("[{i}]{inner}")),
                None => item.span().contains(&pos).then(|| format!("[{i}]")),
            }
        }),
        _ => None,
    }
}

/// 1-based line and column (in characters) of byte offset `pos`.
fn line_col(text: &str, pos: usize) -> (usize, usize) {
    let pos = floor_char_boundary(text, pos.min(text.len()));
    let before = &text[..pos];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn floor_char_boundary(text: &str, mut pos: usize) -> usize {
    while !text.is_char_boundary(pos) {
        pos -= 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewords_unknown_fields() {
        let cases = [
            (
                "unknown field `adr`, expected one of `addr`, `allow`",
                "unknown key (expected one of addr, allow)",
            ),
            (
                "unknown field `port`, expected `addr`",
                "unknown key (expected addr)",
            ),
            ("unknown field `x`, there are no fields", "unknown key"),
            (
                "invalid type: integer `5`, expected a string\n",
                "invalid type: integer `5`, expected a string",
            ),
            (
                "invalid type: string \"x\", expected i64",
                "invalid type: string \"x\", expected an integer",
            ),
            (
                "invalid type: string \"x\", expected a sequence",
                "invalid type: string \"x\", expected an array",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(reword(input), want, "{input}");
        }
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "a = 1\nbé = 2\n";
        let cases = [
            (0, (1, 1)),
            (4, (1, 5)),
            (6, (2, 1)),
            (9, (2, 3)),
            (99, (3, 1)),
        ];
        for (pos, want) in cases {
            assert_eq!(line_col(text, pos), want, "{pos}");
        }
    }

    #[test]
    fn errors_name_the_dotted_key() {
        let cases = [
            ("[listen]\nadr = 1", "listen.adr"),
            ("listen.adr = 1", "listen.adr"),
            (
                "[upstream]\ndeny_paths = [\"/a\", 5]",
                "upstream.deny_paths[1]",
            ),
            ("[rate_limit]\nburst = \"x\"", "rate_limit.burst"),
            ("colour = 1", "colour"),
        ];
        for (text, want) in cases {
            let problems = parse(text).expect_err(text);
            assert_eq!(problems[0].key, want, "{text}: {problems:?}");
            assert!(problems[0].location.is_some(), "{text}");
        }
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        let problems = parse("[credentials]\nclient_secret = 987654321").expect_err("type");
        assert_eq!(problems[0].key, SECRET_KEY);
        assert!(!format!("{problems:?}").contains("987654321"));
    }
}
