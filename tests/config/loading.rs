//! What a valid config means: the defaults of the spec, the shipped
//! `proxy.toml`, reading the file, paths relative to it, and entries kept
//! in the form requests are matched in.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fitbit_proxy::config::{Config, LogFormat, SecretSource};

use super::*;

#[test]
fn defaults_are_those_of_the_spec() {
    let c = parse(CREDENTIALS).unwrap();
    assert_eq!(c.source, Path::new("proxy.toml"));
    assert_eq!(
        c.listen.addr,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.listen.tls, None);
    assert!(c.listen.allow.is_empty());
    assert!(c.listen.hosts.is_empty());
    assert_eq!(c.listen.max_connections, 10_000);
    assert_eq!(c.listen.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.listen.send_timeout, Duration::from_secs(60));
    assert_eq!(c.listen.max_request_body, 10_485_760);
    assert_eq!(c.listen.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.admin.addr, Some("127.0.0.1:9090".parse().unwrap()));
    assert_eq!(c.upstream.url, "https://api.fitbit.com/");
    assert_eq!(c.upstream.ca_file, None);
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(5));
    assert_eq!(c.upstream.request_timeout, Duration::from_secs(60));
    assert_eq!(c.upstream.deny_paths, ["/oauth2/", "/1.1/oauth2/"]);
    assert_eq!(c.upstream.allow_paths, None);
    assert_eq!(
        c.credentials.token_url,
        "https://api.fitbit.com/oauth2/token"
    );
    assert_eq!(c.credentials.client_id, "23ABCD");
    assert_eq!(c.credentials.client_secret.expose(), CANARY);
    assert_eq!(
        c.credentials.secret_source,
        SecretSource::Env("FITBIT_CLIENT_SECRET".into())
    );
    assert_eq!(c.credentials.expires_in, Some(28_800));
    assert_eq!(
        c.credentials.refresh_before_expiry,
        Duration::from_secs(300)
    );
    assert_eq!(c.rate_limit.quota, 150);
    assert_eq!(c.rate_limit.burst, 10);
    assert_eq!(c.rate_limit.max_wait, Duration::from_secs(30));
    assert_eq!(c.rate_limit.max_queued, 1000);
    assert_eq!(c.rate_limit.reset_margin, Duration::from_secs(2));
    assert_eq!(c.rate_limit.replicas, 1);
    assert_eq!(c.log.format, LogFormat::Text);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn the_shipped_proxy_toml_is_valid_and_spells_out_the_defaults() {
    let path = manifest_dir().join("proxy.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let shipped = parse_at(&text, &path).unwrap();
    let defaults = parse_at(CREDENTIALS, &path).unwrap();
    assert_eq!(shipped, defaults);
}

#[test]
fn load_reads_the_file_and_names_it_when_it_cannot() {
    let dir = TempDir::new();
    let path = dir.write(
        "proxy.toml",
        "[credentials]\nclient_id = \"a\"\nclient_secret_file = \"secret\"\n",
    );
    dir.write("secret", &format!("{CANARY}\n"));
    let config = Config::load(&path).unwrap();
    assert_eq!(config.credentials.client_secret.expose(), CANARY);
    assert_eq!(
        config.credentials.secret_source,
        SecretSource::File(dir.path("secret"))
    );

    let missing = dir.path("nope.toml");
    let err = Config::load(&missing).unwrap_err().to_string();
    let want = format!("{}: cannot read the config file: ", missing.display());
    assert!(err.starts_with(&want), "{err}");
}

#[test]
fn relative_paths_are_relative_to_the_config_file() {
    let dir = TempDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    dir.write("certs/proxy.pem", &cert.cert.pem());
    dir.write("certs/proxy.key", &cert.signing_key.serialize_pem());
    dir.write("certs/ca.pem", &cert.cert.pem());
    dir.write("secret", &format!("{CANARY} \n\n"));
    let text = r#"
[listen]
tls_cert = "certs/proxy.pem"
tls_key = "certs/../certs/proxy.key"
[upstream]
ca_file = "certs/ca.pem"
[credentials]
client_id = "a"
client_secret_file = "secret"
"#;
    let c = parse_at(text, &dir.path("proxy.toml")).unwrap();
    let tls = c.listen.tls.as_ref().unwrap();
    assert_eq!(tls.cert, dir.path("certs/proxy.pem"));
    assert_eq!(tls.key, dir.path("certs/../certs/proxy.key"));
    assert_eq!(c.upstream.ca_file, Some(dir.path("certs/ca.pem")));
    assert_eq!(
        c.credentials.secret_source,
        SecretSource::File(dir.path("secret"))
    );
    assert_eq!(
        c.credentials.client_secret.expose(),
        CANARY,
        "trailing whitespace trimmed"
    );

    // The same config read from elsewhere fails, naming the resolved path.
    let elsewhere = parse_at(text, Path::new("/nonexistent/proxy.toml"));
    let err = elsewhere.unwrap_err().to_string();
    assert!(
        err.contains("cannot read /nonexistent/certs/proxy.pem"),
        "{err}"
    );
}

/// `listen.hosts` entries (1.17) are kept in the form requests are matched
/// in.
#[test]
fn listen_hosts_are_canonical() {
    let c = parse(&with_credentials(
        "[listen]\nhosts = [\"Proxy.Internal.\", \"10.0.0.5\", \"::1\", \"[0:0::2]\"]",
    ))
    .unwrap();
    assert_eq!(
        c.listen.hosts,
        ["proxy.internal", "10.0.0.5", "[::1]", "[::2]"]
    );
}
