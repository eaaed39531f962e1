//! The effective config as `check` prints it, and the secret that never
//! shows in it, in `Debug` or in an error.

use super::*;

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
[callers]
header = ""
weights = { billing = 3, "svc.reports" = 1, "a~b" = 1000 }
max_callers = 7
"#;
    let source = dir.path("proxy.toml");
    for text in [CREDENTIALS, everything] {
        let config = parse_at(text, &source).unwrap();
        let rendered = config.render_redacted();
        let again = parse_at(&rendered, &source);
        assert_eq!(again.as_ref().ok(), Some(&config), "{rendered}\n{again:?}");
    }
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
deny_paths = ["/oauth2/", "/1.1/oauth2/"]
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

[shared]
redis_url = ""
# redis_password_env, redis_password_file: not set
key_prefix = "fitbit-proxy"
timeout = "100ms"

[callers]
header = "x-caller"
weights = {}
max_callers = 100
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

/// What a reload logs as changed: the keys whose effective value differs,
/// a changed secret by name only, nothing for an equal config.
#[test]
fn changed_keys_name_what_a_reload_changes_and_never_a_secret() {
    let base = "[credentials]\nclient_id = \"a\"\nclient_secret = \"one\"\n[rate_limit]\nmax_wait = \"30s\"\n";
    let old = parse(base).unwrap();
    assert!(old.changed_keys(&old.clone()).is_empty());
    let same_written_otherwise = parse(&base.replace("\"30s\"", "\"30000ms\"")).unwrap();
    assert!(old.changed_keys(&same_written_otherwise).is_empty());
    let new = parse(
        &base
            .replace("\"30s\"", "\"5s\"\nburst = 3")
            .replace("\"one\"", &format!("\"{CANARY}\""))
            .replace(
                "[rate_limit]",
                "[listen]\nallow = [\"10.0.0.0/8\"]\n[rate_limit]",
            ),
    )
    .unwrap();
    let keys = old.changed_keys(&new);
    assert_eq!(
        keys,
        [
            "listen.allow",
            "rate_limit.burst",
            "rate_limit.max_wait",
            "credentials.client_secret"
        ]
    );
    assert!(!format!("{keys:?}").contains(CANARY));
}
