//! Every bad setting is refused with its name and value, every problem at
//! once; risky settings that are allowed warn; each count's smallest
//! allowed value passes.

use super::*;

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
    // [callers]
    ("[callers]\nheader = \"x caller\"", r#"proxy.toml: callers.header = "x caller": must be a header name"#),
    ("[callers]\nheader = \"Authorization\"", r#"proxy.toml: callers.header = "Authorization": must not be a header the proxy reads or replaces itself"#),
    ("[callers]\nweights = { billing = 0 }", "proxy.toml: callers.weights.billing = 0: must be from 1 to 1000"),
    ("[callers]\nweights = { billing = 1001 }", "callers.weights.billing = 1001: must be from 1 to 1000 (line 2, column 13)"),
    ("[callers]\nweights = { \"bill ing\" = 2 }", r#"proxy.toml: callers.weights.bill ing = "bill ing": must be a caller name"#),
    ("[callers]\nmax_callers = 0", "proxy.toml: callers.max_callers = 0: must be at least 1"),
    ("[callers]\nmax_callers = 10001", "proxy.toml: callers.max_callers = 10001: must be at most 10000"),
    ("[callers]\nweights = { billing = \"3\" }", "proxy.toml: callers.weights.billing: invalid type: string \"3\", expected an integer (line 2, column 23)"),
    ("[callers]\nheaders = \"x-caller\"", "proxy.toml: callers.headers: unknown key (expected one of header, weights, max_callers)"),
    // unknown keys, at the top and in every section
    ("colour = \"blue\"", "proxy.toml: colour: unknown key (expected one of listen, admin, upstream, credentials, rate_limit, log, shared, callers, profile)"),
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
        match parse_at(&text, &source) {
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
    let err = parse_at(text, &dir.path("proxy.toml")).unwrap_err();
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

/// Mutation testing (6.10): each count's smallest allowed value is accepted.
/// Kills the cargo-mutants survivors in `Validator::count` (`raw < min` ->
/// `raw <= min`, in the `min == 0` arm and the other): a limit of exactly 1
/// (or a body limit of 0) was refused only by the mutants.
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
