//! `Config::render_redacted`: the effective configuration as TOML, in the
//! order of `proxy.toml`, for `fitbit-proxy check`. The client secret is shown
//! only as its source; the output parses back to the same `Config`.

use std::path::Path;
use std::time::Duration;

use super::validate::REDACTED;
use super::{
    quote, CallersConfig, ClientAuth, Config, CredentialsConfig, ListenConfig, LogFormat,
    SecretSource, SharedConfig, UpstreamConfig,
};

pub(super) fn render(config: &Config) -> String {
    let sections = [
        format!("profile = {}\n", quote(config.profile.name())),
        listen(&config.listen),
        format!("[admin]\naddr = {}\n", quote(&optional_addr(config))),
        upstream(&config.upstream),
        credentials(&config.credentials),
        rate_limit(config),
        log(config.log.format),
        shared(&config.shared),
        callers(&config.callers),
    ];
    sections.join("\n")
}

/// The dotted keys whose values differ between two renderings, sorted
/// (keys only the second has come after).
pub(super) fn changed_keys(a: &str, b: &str) -> Vec<String> {
    let flat = |text: &str| -> Vec<(String, String)> {
        let Ok(table) = text.parse::<toml::Table>() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in table {
            match value {
                toml::Value::Table(section) => {
                    for (k, v) in section {
                        out.push((format!("{key}.{k}"), v.to_string()));
                    }
                }
                other => out.push((key, other.to_string())),
            }
        }
        out
    };
    let (a, b) = (flat(a), flat(b));
    let value = |list: &[(String, String)], key: &str| {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    };
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| value(&b, k).as_ref() != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(
        b.iter()
            .filter(|(k, _)| value(&a, k).is_none())
            .map(|(k, _)| k.clone()),
    );
    keys
}

fn listen(l: &ListenConfig) -> String {
    let tls = match &l.tls {
        Some(tls) => format!(
            "tls_cert = {}\ntls_key = {}",
            path(&tls.cert),
            path(&tls.key)
        ),
        None => "# tls_cert, tls_key: not set (plain TCP)".to_owned(),
    };
    let allow: Vec<String> = l.allow.iter().map(ToString::to_string).collect();
    format!(
        "[listen]\naddr = {}\n{tls}\nallow = {}\nhosts = {}\nmax_connections = {}\nheader_read_timeout = {}\nsend_timeout = {}\nmax_request_body = {}\nshutdown_grace = {}\n",
        quote(&l.addr.to_string()),
        array(&allow),
        array(&l.hosts),
        l.max_connections,
        duration(l.header_read_timeout),
        duration(l.send_timeout),
        l.max_request_body,
        duration(l.shutdown_grace),
    )
}

fn optional_addr(config: &Config) -> String {
    config.admin.addr.map(|a| a.to_string()).unwrap_or_default()
}

fn upstream(u: &UpstreamConfig) -> String {
    let url = match (u.url.scheme_str(), u.url.authority()) {
        (Some(scheme), Some(authority)) => format!("{scheme}://{authority}"),
        _ => u.url.to_string(),
    };
    let ca_file = match &u.ca_file {
        Some(ca) => format!("ca_file = {}", path(ca)),
        None => "# ca_file: not set (web PKI roots only)".to_owned(),
    };
    let allow_paths = match &u.allow_paths {
        Some(paths) => format!("allow_paths = {}", array(paths)),
        None => "# allow_paths: not set (every path not denied is forwarded)".to_owned(),
    };
    format!(
        "[upstream]\nurl = {}\n{ca_file}\nconnect_timeout = {}\nrequest_timeout = {}\ndeny_paths = {}\n{allow_paths}\n",
        quote(&url),
        duration(u.connect_timeout),
        duration(u.request_timeout),
        array(&u.deny_paths),
    )
}

fn credentials(c: &CredentialsConfig) -> String {
    let secret = match &c.secret_source {
        SecretSource::Env(name) => format!("client_secret_env = {}", quote(name)),
        SecretSource::File(file) => format!("client_secret_file = {}", path(file)),
        SecretSource::Literal => format!("client_secret = {REDACTED}"),
    };
    let client_auth = match c.client_auth {
        ClientAuth::Basic => "basic",
        ClientAuth::Post => "post",
    };
    let params: Vec<String> = c
        .params
        .iter()
        .map(|(k, v)| format!("{} = {}", key(k), quote(v)))
        .collect();
    let params = if params.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", params.join(", "))
    };
    let expires_in = match c.expires_in {
        Some(secs) => format!("expires_in = {secs}"),
        None => "# expires_in: not sent (the token endpoint's default lifetime)".to_owned(),
    };
    format!(
        "[credentials]\ntoken_url = {}\nclient_id = {}\n{secret}\nclient_auth = {}\nscope = {}\nparams = {params}\n{expires_in}\nrefresh_before_expiry = {}\n",
        quote(&c.token_url.to_string()),
        quote(&c.client_id),
        quote(client_auth),
        quote(&c.scope),
        duration(c.refresh_before_expiry),
    )
}

/// A key as TOML writes it: bare when it can be, else quoted.
fn key(k: &str) -> String {
    let bare = !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        k.to_owned()
    } else {
        quote(k)
    }
}

fn rate_limit(config: &Config) -> String {
    let r = &config.rate_limit;
    let reset = match r.headers.reset() {
        Some(reset) => format!("reset = {}\n", quote(reset.name())),
        None => String::new(),
    };
    format!(
        "[rate_limit]\nheaders = {}\n{reset}quota = {}\nwindow = {}\nburst = {}\nmax_wait = {}\nmax_queued = {}\nreset_margin = {}\nreplicas = {}\n",
        quote(r.headers.name()),
        r.quota,
        duration(r.window),
        r.burst,
        duration(r.max_wait),
        r.max_queued,
        duration(r.reset_margin),
        r.replicas,
    )
}

fn log(format: LogFormat) -> String {
    let format = match format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    format!("[log]\nformat = {}\n", quote(format))
}

/// The URL carries no password (validation refuses one); the password
/// appears only as its source.
fn shared(s: &SharedConfig) -> String {
    let (url, password) = match &s.redis {
        None => (String::new(), None),
        Some(r) => (r.url.clone(), r.password_source.as_ref()),
    };
    let password = match password {
        Some(SecretSource::Env(name)) => format!("redis_password_env = {}", quote(name)),
        Some(SecretSource::File(file)) => format!("redis_password_file = {}", path(file)),
        Some(SecretSource::Literal) | None => {
            "# redis_password_env, redis_password_file: not set".to_owned()
        }
    };
    format!(
        "[shared]\nredis_url = {}\n{password}\nkey_prefix = {}\ntimeout = {}\n",
        quote(&url),
        quote(&s.key_prefix),
        duration(s.timeout),
    )
}

fn callers(c: &CallersConfig) -> String {
    let header = c.header.as_ref().map_or("", http::HeaderName::as_str);
    let weights: Vec<String> = c
        .weights
        .iter()
        .map(|(name, weight)| format!("{} = {weight}", key(name)))
        .collect();
    let weights = if weights.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", weights.join(", "))
    };
    format!(
        "[callers]\nheader = {}\nweights = {weights}\nmax_callers = {}\n",
        quote(header),
        c.max_callers,
    )
}

fn duration(d: Duration) -> String {
    quote(&humantime::format_duration(d).to_string())
}

fn path(p: &Path) -> String {
    quote(&p.to_string_lossy())
}

fn array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| quote(s)).collect();
    format!("[{}]", items.join(", "))
}
