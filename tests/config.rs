//! Config loading as an operator meets it: the shipped `proxy.toml`, the
//! defaults, one message per bad setting, and secrets that never leak.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fitbit_proxy::config::{Config, ConfigError, LogFormat, SecretSource};

const CANARY: &str = "SECRET_CANARY_config";

const CREDENTIALS: &str = r#"
[credentials]
client_id = "23ABCD"
client_secret_env = "FITBIT_CLIENT_SECRET"
"#;

/// The environment the tests pretend to run in.
fn env(name: &str) -> Option<String> {
    match name {
        "FITBIT_CLIENT_SECRET" => Some(CANARY.to_owned()),
        "EMPTY_SECRET" => Some(String::new()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str_with_env(text, Path::new("proxy.toml"), &env)
}

/// Adds working credentials unless the snippet is about them.
fn with_credentials(snippet: &str) -> String {
    if snippet.contains("[credentials]") {
        snippet.to_owned()
    } else {
        format!("{snippet}\n{CREDENTIALS}")
    }
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// One bad setting per line → a substring of the error. The config is read as
/// if from the crate root, so `Cargo.toml` is a file that exists but holds no
/// certificate.
#[rustfmt::skip]
const BAD: &[(&str, &str)] = &[
    // [listen]
    ("[listen]\naddr = \"localhost:8080\"", r#"proxy.toml: listen.addr = "localhost:8080": must be an IP address and port"#),
    ("[listen]\naddr = \"127.0.0.1\"", r#"listen.addr = "127.0.0.1": must be an IP address and port"#),
    ("[listen]\ntls_cert = \"c.pem\"", "proxy.toml: listen.tls_key: missing: tls_cert and tls_key must be set together"),
    ("[listen]\ntls_key = \"k.pem\"", "proxy.toml: listen.tls_cert: missing: tls_cert and tls_key must be set together"),
    ("[listen]\ntls_cert = \"/nonexistent/c.pem\"\ntls_key = \"/nonexistent/k.pem\"", r#"listen.tls_cert = "/nonexistent/c.pem": cannot read /nonexistent/c.pem"#),
    ("[listen]\ntls_cert = \"Cargo.toml\"\ntls_key = \"Cargo.toml\"", r#"listen.tls_key = "Cargo.toml": "#),
    ("[listen]\nallow = [\"10.0.0.0/33\"]", r#"listen.allow = "10.0.0.0/33": must be a CIDR such as "10.0.0.0/8" or an IP address"#),
    ("[listen]\nallow = [\"10.0.0.0/8\", \"office\"]", r#"listen.allow = "office": must be a CIDR"#),
    ("[listen]\nhosts = [\"proxy.internal:8080\"]", r#"proxy.toml: listen.hosts = "proxy.internal:8080": must not have a port"#),
    ("[listen]\nhosts = [\"proxy.internal\", \"*.internal\"]", r#"listen.hosts = "*.internal": must be a host name or IP address such as "fitbit-proxy.internal""#),
    ("[listen]\nhosts = [\"\"]", r#"listen.hosts = "": must be a host name or IP address"#),
    ("[listen]\nmax_connections = 0", "proxy.toml: listen.max_connections = 0: must be at least 1"),
    ("[listen]\nmax_request_body = -1", "listen.max_request_body = -1: must not be negative"),
    ("[listen]\nheader_read_timeout = \"0s\"", r#"listen.header_read_timeout = "0s": must be greater than 0"#),
    ("[listen]\nsend_timeout = \"0s\"", r#"proxy.toml: listen.send_timeout = "0s": must be greater than 0"#),
    ("[listen]\nsend_timeout = \"10\"", r#"listen.send_timeout = "10": must be a duration"#),
    ("[listen]\nshutdown_grace = \"soon\"", r#"listen.shutdown_grace = "soon": must be a duration such as "250ms", "10s" or "5m""#),
    ("[listen]\nshutdown_grace = \"0s\"", r#"listen.shutdown_grace = "0s": must be greater than 0"#),
    // [admin]
    ("[admin]\naddr = \"9090\"", r#"proxy.toml: admin.addr = "9090": must be an IP address and port"#),
    // [upstream]
    ("[upstream]\nurl = \"ftp://x\"", r#"proxy.toml: upstream.url = "ftp://x": must be http or https"#),
    ("[upstream]\nurl = \"api.fitbit.com\"", r#"upstream.url = "api.fitbit.com": must be http or https"#),
    ("[upstream]\nurl = \"https://me:pw@api.fitbit.com\"", "must not contain a user name or password"),
    ("[upstream]\nurl = \"https://api.fitbit.com/?a=1\"", "upstream.url = \"https://api.fitbit.com/?a=1\": must not have a query"),
    ("[upstream]\nurl = \"https://api.fitbit.com/1/\"", "upstream.url = \"https://api.fitbit.com/1/\": must not have a path"),
    ("[upstream]\nurl = \"https://\"", r#"upstream.url = "https://": not a valid URL"#),
    ("[upstream]\nca_file = \"/nonexistent/ca.pem\"", r#"upstream.ca_file = "/nonexistent/ca.pem": cannot read /nonexistent/ca.pem"#),
    ("[upstream]\nca_file = \"Cargo.toml\"", "Cargo.toml contains no PEM certificate"),
    ("[upstream]\nconnect_timeout = \"0ms\"", r#"upstream.connect_timeout = "0ms": must be greater than 0"#),
    ("[upstream]\nrequest_timeout = \"0s\"", r#"upstream.request_timeout = "0s": must be greater than 0"#),
    ("[upstream]\ndeny_paths = [\"oauth2/\"]", r#"upstream.deny_paths = "oauth2/": must start with "/""#),
    ("[upstream]\nallow_paths = [\"/1/\", \"1.2/\"]", r#"upstream.allow_paths = "1.2/": must start with "/""#),
    ("[upstream]\nallow_paths = []", "upstream.allow_paths = []: must not be empty: it would forward nothing"),
    // [credentials]
    ("[credentials]\ntoken_url = \"http://api.fitbit.com/oauth2/token\"\nclient_id = \"a\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"", "credentials.token_url = \"http://api.fitbit.com/oauth2/token\": must be https (http:// is allowed only to a loopback address)"),
    ("[credentials]\ntoken_url = \"ftp://localhost/token\"\nclient_id = \"a\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"", "credentials.token_url = \"ftp://localhost/token\": must be https"),
    ("[credentials]\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"", "proxy.toml: credentials.client_id: missing (required)"),
    ("[credentials]", "proxy.toml: credentials.client_id: missing (required)"),
    ("[credentials]\nclient_id = \"\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"", r#"proxy.toml: credentials.client_id = "": must not be empty"#),
    ("[credentials]\nclient_id = \"a\"", "proxy.toml: credentials: one of client_secret_env, client_secret_file, client_secret is required"),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"\nclient_secret_file = \"s\"", "proxy.toml: credentials: only one of client_secret_env, client_secret_file, client_secret may be set"),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_env = \"NOT_SET_ANYWHERE\"", r#"credentials.client_secret_env = "NOT_SET_ANYWHERE": environment variable NOT_SET_ANYWHERE is not set"#),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_env = \"EMPTY_SECRET\"", "environment variable EMPTY_SECRET is empty"),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_env = \"\"", r#"credentials.client_secret_env = "": must name an environment variable"#),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_file = \"/nonexistent/secret\"", r#"credentials.client_secret_file = "/nonexistent/secret": cannot read /nonexistent/secret"#),
    ("[credentials]\nclient_id = \"a\"\nclient_secret = \"  \"", r#"credentials.client_secret = "<redacted>": must not be empty"#),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"\nexpires_in = 1234", "proxy.toml: credentials.expires_in = 1234: must be one of 3600, 28800, 86400, 604800, 2592000, 31536000"),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"\nrefresh_before_expiry = \"5 parsecs\"", r#"credentials.refresh_before_expiry = "5 parsecs": must be a duration"#),
    // [rate_limit]
    ("[rate_limit]\nhourly_quota = 0", "proxy.toml: rate_limit.hourly_quota = 0: must be at least 1"),
    ("[rate_limit]\nhourly_quota = 4294967296", "rate_limit.hourly_quota = 4294967296: is too large"),
    ("[rate_limit]\nburst = 0", "rate_limit.burst = 0: must be at least 1"),
    ("[rate_limit]\nmax_queued = -5", "rate_limit.max_queued = -5: must be at least 1"),
    ("[rate_limit]\nmax_wait = \"0s\"", r#"rate_limit.max_wait = "0s": must be greater than 0"#),
    ("[rate_limit]\nreset_margin = \"-2s\"", r#"rate_limit.reset_margin = "-2s": must be a duration"#),
    ("[rate_limit]\nreplicas = 0", "proxy.toml: rate_limit.replicas = 0: must be at least 1"),
    ("[rate_limit]\nhourly_quota = 4\nreplicas = 5", "proxy.toml: rate_limit.replicas = 5: more than rate_limit.hourly_quota (4): each replica's share of the quota would be 0"),
    // [log]
    ("[log]\nformat = \"xml\"", r#"proxy.toml: log.format = "xml": must be "text" or "json""#),
    // unknown keys, at the top and in every section
    ("colour = \"blue\"", "proxy.toml: colour: unknown key (expected one of listen, admin, upstream, credentials, rate_limit, log, profile)"),
    ("[lisen]\naddr = \"127.0.0.1:1\"", "proxy.toml: lisen: unknown key (expected one of listen, admin"),
    ("[listen]\nadr = \"127.0.0.1:1\"", "proxy.toml: listen.adr: unknown key (expected one of addr, tls_cert, tls_key, allow, hosts, max_connections"),
    ("listen.adr = \"127.0.0.1:1\"", "proxy.toml: listen.adr: unknown key"),
    ("[admin]\nport = 9090", "proxy.toml: admin.port: unknown key (expected addr)"),
    ("[upstream]\nurls = \"https://x\"", "proxy.toml: upstream.urls: unknown key (expected one of url, ca_file"),
    ("[credentials]\nclient_id = \"a\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"\nscopes = \"activity\"", "proxy.toml: credentials.scopes: unknown key (expected one of token_url, client_id"),
    ("[rate_limit]\nquotas = 150", "proxy.toml: rate_limit.quotas: unknown key (expected one of quota, hourly_quota, window"),
    ("[log]\nlevel = \"debug\"", "proxy.toml: log.level: unknown key (expected format)"),
    // wrong types
    ("[listen]\nmax_connections = \"many\"", "proxy.toml: listen.max_connections: invalid type: string \"many\", expected an integer (line 2, column 19)"),
    ("[listen]\nallow = \"10.0.0.0/8\"", "proxy.toml: listen.allow: invalid type: string \"10.0.0.0/8\", expected an array"),
    ("[listen]\nhosts = \"proxy.internal\"", "proxy.toml: listen.hosts: invalid type: string \"proxy.internal\", expected an array"),
    ("[listen]\naddr = 8080", "proxy.toml: listen.addr: invalid type: integer `8080`, expected a string"),
    ("[upstream]\ndeny_paths = [\"/oauth2/\", 7]", "proxy.toml: upstream.deny_paths[1]: invalid type: integer `7`, expected a string"),
    ("[rate_limit]\nmax_wait = 30", "proxy.toml: rate_limit.max_wait: invalid type: integer `30`, expected a duration string such as \"250ms\""),
    ("[rate_limit]\nburst = 1.5", "rate_limit.burst: invalid type: float `1.5`, expected an integer"),
    ("log = \"json\"", "proxy.toml: log: invalid type: string \"json\", expected a table"),
    // not TOML at all
    ("[listen\naddr = \"127.0.0.1:1\"", "proxy.toml: invalid TOML: unclosed table, expected `]` (line 1, column 8)"),
    ("[listen]\naddr = \"127.0.0.1:1\"\naddr = \"127.0.0.1:2\"", "proxy.toml: invalid TOML: duplicate key (line 3, column 1)"),
];

#[test]
fn each_bad_setting_is_named_with_its_value() {
    let source = manifest_dir().join("proxy.toml");
    let mut failures = Vec::new();
    for (snippet, want) in BAD {
        let text = with_credentials(snippet);
        match Config::from_toml_str_with_env(&text, &source, &env) {
            Ok(_) => failures.push(format!("{snippet:?}: accepted, want {want:?}")),
            Err(e) if e.to_string().contains(want) => {}
            Err(e) => failures.push(format!("{snippet:?}:\n  got  {e}\n  want {want}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = r#"
[listen]
addr = "nowhere"
max_connections = 0
[upstream]
url = "ftp://x"
allow_paths = []
[credentials]
expires_in = 1234
[log]
format = "xml"
"#;
    let err = parse(text).unwrap_err();
    let want = [
        "proxy.toml: listen.addr = \"nowhere\": must be an IP address and port such as \"127.0.0.1:8080\" (line 3, column 1)",
        "proxy.toml: listen.max_connections = 0: must be at least 1 (line 4, column 1)",
        "proxy.toml: upstream.url = \"ftp://x\": must be http or https (line 6, column 1)",
        "proxy.toml: upstream.allow_paths = []: must not be empty: it would forward nothing (remove the key to forward every path not denied) (line 7, column 1)",
        "proxy.toml: credentials.client_id: missing (required)",
        "proxy.toml: credentials: one of client_secret_env, client_secret_file, client_secret is required (line 8, column 2)",
        "proxy.toml: credentials.expires_in = 1234: must be one of 3600, 28800, 86400, 604800, 2592000, 31536000 (line 9, column 1)",
        "proxy.toml: log.format = \"xml\": must be \"text\" or \"json\" (line 11, column 1)",
    ];
    assert_eq!(err.lines(), want);
    assert_eq!(err.to_string(), want.join("\n"));
}

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
    assert_eq!(c.upstream.deny_paths, ["/oauth2/"]);
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
    let shipped = Config::from_toml_str_with_env(&text, &path, &env).unwrap();
    let defaults = Config::from_toml_str_with_env(CREDENTIALS, &path, &env).unwrap();
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
    let c = Config::from_toml_str_with_env(text, &dir.path("proxy.toml"), &env).unwrap();
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
    let elsewhere =
        Config::from_toml_str_with_env(text, Path::new("/nonexistent/proxy.toml"), &env);
    let err = elsewhere.unwrap_err().to_string();
    assert!(
        err.contains("cannot read /nonexistent/certs/proxy.pem"),
        "{err}"
    );
}

#[test]
fn files_with_the_wrong_content_are_rejected() {
    let dir = TempDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    dir.write("cert.pem", &cert.cert.pem());
    dir.write("empty", "\n \n");
    let text = r#"
[listen]
tls_cert = "cert.pem"
tls_key = "cert.pem"
[credentials]
client_id = "a"
client_secret_file = "empty"
"#;
    let err = Config::from_toml_str_with_env(text, &dir.path("proxy.toml"), &env).unwrap_err();
    let lines = err.lines();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("listen.tls_key = \"cert.pem\": ")
            && lines[0].ends_with("cert.pem contains no PEM private key (line 4, column 1)"),
        "{err}"
    );
    assert!(
        lines[1].contains("credentials.client_secret_file = \"empty\": ")
            && lines[1].ends_with("empty is empty (line 7, column 1)"),
        "{err}"
    );
}

#[test]
fn warnings_for_allowed_but_risky_settings() {
    let cases: &[(&str, &[&str])] = &[
        ("", &[]),
        ("[upstream]\nurl = \"http://127.0.0.1:8081\"", &[]),
        ("[upstream]\nurl = \"http://localhost:8081\"", &[]),
        ("[upstream]\nurl = \"http://[::1]:8081\"", &[]),
        ("[upstream]\nurl = \"http://fitbit.internal\"", &["proxy.toml: upstream.url = \"http://fitbit.internal\": plain http: requests and the proxy's bearer token cross the network unencrypted"]),
        ("[credentials]\ntoken_url = \"http://127.0.0.1:9/oauth2/token\"\nclient_id = \"a\"\nclient_secret_env = \"FITBIT_CLIENT_SECRET\"", &["proxy.toml: credentials.token_url = \"http://127.0.0.1:9/oauth2/token\": plain http to a loopback address: acceptable for tests and sidecars only"]),
        ("[credentials]\nclient_id = \"a\"\nclient_secret = \"SECRET_CANARY_config\"", &["proxy.toml: credentials.client_secret = \"<redacted>\": discouraged: use client_secret_env or client_secret_file"]),
        ("[listen]\nshutdown_grace = \"30s\"\n[rate_limit]\nmax_wait = \"30s\"", &[]),
        ("[listen]\nshutdown_grace = \"10s\"", &["proxy.toml: rate_limit.max_wait = \"30s\": longer than listen.shutdown_grace (10s): a request still waiting for its pacing slot when the grace ends is cut off unanswered"]),
    ];
    for (snippet, want) in cases {
        let config = parse(&with_credentials(snippet)).unwrap();
        assert_eq!(config.warnings, *want, "{snippet}");
    }
}

#[test]
fn the_secret_never_shows() {
    let sources = [
        "client_secret_env = \"FITBIT_CLIENT_SECRET\"".to_owned(),
        format!("client_secret = \"{CANARY}\""),
    ];
    for source in &sources {
        let good = format!("[credentials]\nclient_id = \"a\"\n{source}\n");
        let config = parse(&good).unwrap();
        assert_eq!(config.credentials.client_secret.expose(), CANARY);
        let shown = [
            format!("{config:?}"),
            format!("{config:#?}"),
            config.render_redacted(),
            config.warnings.join("\n"),
        ];
        for text in shown {
            assert!(!text.contains(CANARY), "{text}");
        }

        // Errors elsewhere, and a second source, must not print it either.
        let bad = format!("{good}client_secret_file = \"x\"\nexpires_in = 1\n");
        let err = parse(&bad).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        let text = format!("{err}\n{err:?}");
        assert!(!text.contains(CANARY), "{text}");
    }
    let wrong_type = "[credentials]\nclient_id = \"a\"\nclient_secret = 8675309";
    let err = parse(wrong_type).unwrap_err();
    assert!(!format!("{err}{err:?}").contains("8675309"), "{err}");
    assert!(
        err.to_string()
            .contains("credentials.client_secret: must be a string"),
        "{err}"
    );
}

#[test]
fn render_redacted_is_the_effective_config_and_parses_back() {
    let dir = TempDir::new();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    dir.write("ca.pem", &cert.cert.pem());
    dir.write("key.pem", &cert.signing_key.serialize_pem());
    dir.write("secret", CANARY);
    let everything = r#"
[listen]
addr = "[::1]:8443"
tls_cert = "ca.pem"
tls_key = "key.pem"
allow = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
hosts = ["Proxy.Internal.", "10.0.0.5", "::1"]
header_read_timeout = "1s 500ms"
send_timeout = "2m"
[admin]
addr = ""
[upstream]
url = "http://127.0.0.1:8081/"
ca_file = "ca.pem"
allow_paths = ["/1/", "/1.2/"]
deny_paths = []
[credentials]
token_url = "http://localhost:8081/oauth2/token?x=1"
client_id = "id \"quoted\""
client_secret_file = "secret"
refresh_before_expiry = "0s"
expires_in = 3600
[rate_limit]
max_wait = "250ms"
replicas = 3
[log]
format = "json"
"#;
    let source = dir.path("proxy.toml");
    for text in [CREDENTIALS, everything] {
        let config = Config::from_toml_str_with_env(text, &source, &env).unwrap();
        let rendered = config.render_redacted();
        let again = Config::from_toml_str_with_env(&rendered, &source, &env);
        assert_eq!(again.as_ref().ok(), Some(&config), "{rendered}\n{again:?}");
    }
}

/// 6.10: each count's smallest allowed value is accepted. Kills the
/// cargo-mutants survivors in `Validator::count` (`raw < min` ->
/// `raw <= min`, in the `min == 0` arm and the other): a limit of exactly
/// 1 (or a body limit of 0) was refused only by the mutants.
#[test]
fn the_smallest_allowed_counts_are_accepted() {
    let c = parse(&with_credentials(
        "[listen]\nmax_connections = 1\nmax_request_body = 0\n\
         [rate_limit]\nhourly_quota = 1\nburst = 1\nmax_queued = 1",
    ))
    .unwrap();
    assert_eq!(c.listen.max_connections, 1);
    assert_eq!(c.listen.max_request_body, 0);
    assert_eq!(c.rate_limit.quota, 1);
    assert_eq!(c.rate_limit.burst, 1);
    assert_eq!(c.rate_limit.max_queued, 1);
}

/// 1.17: entries are kept in the form requests are matched in.
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

#[test]
fn render_redacted_of_the_defaults() {
    let rendered = parse(CREDENTIALS).unwrap().render_redacted();
    let want = r#"profile = "fitbit"

[listen]
addr = "127.0.0.1:8080"
# tls_cert, tls_key: not set (plain TCP)
allow = []
hosts = []
max_connections = 10000
header_read_timeout = "10s"
send_timeout = "1m"
max_request_body = 10485760
shutdown_grace = "30s"

[admin]
addr = "127.0.0.1:9090"

[upstream]
url = "https://api.fitbit.com"
# ca_file: not set (web PKI roots only)
connect_timeout = "5s"
request_timeout = "1m"
deny_paths = ["/oauth2/"]
# allow_paths: not set (every path not denied is forwarded)

[credentials]
token_url = "https://api.fitbit.com/oauth2/token"
client_id = "23ABCD"
client_secret_env = "FITBIT_CLIENT_SECRET"
client_auth = "basic"
scope = ""
params = {}
expires_in = 28800
refresh_before_expiry = "5m"

[rate_limit]
headers = "fitbit"
quota = 150
window = "1h"
burst = 10
max_wait = "30s"
max_queued = 1000
reset_margin = "2s"
replicas = 1

[log]
format = "text"
"#;
    assert_eq!(rendered, want);
}

#[test]
fn a_literal_secret_renders_redacted() {
    let text = format!("[credentials]\nclient_id = \"a\"\nclient_secret = \"{CANARY}\"\n");
    let rendered = parse(&text).unwrap().render_redacted();
    assert!(
        rendered.contains("\nclient_secret = \"<redacted>\"\n"),
        "{rendered}"
    );
}

/// A scratch directory removed on drop (std only, to keep dev-dependencies small).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("fitbit-proxy-config-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
