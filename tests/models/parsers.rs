//! Property tests over every parser a peer or an operator feeds (the
//! catalog's §6 on the stable toolchain): token responses, Basic
//! credentials, the config, request paths and the header hygiene. The
//! rate-limit header parser has its property tests beside it in
//! src/pacing/dialect.rs, and here the cases its mutants needed.
//!
//! The case count is `FUZZ_CASES` (default 256, which keeps `cargo test`
//! quick). For a longer campaign:
//!
//! ```sh
//! FUZZ_CASES=1000000 cargo test --release --test models parsers
//! ```
//!
//! proptest writes any failing input to
//! `tests/models/parsers.proptest-regressions`; commit that file so the
//! case is replayed first on every later run.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use fitbit_proxy::layers::hop_by_hop::{strip_client_credentials, strip_hop_by_hop};
use fitbit_proxy::layers::paths::{canonical, PathRules, Refusal};
use fitbit_proxy::pacing::dialect::{parse, retry_after, RateLimit, MAX_RESET};
use fitbit_proxy::profile::fitbit::{RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET};
use fitbit_proxy::token::exchange::{basic_auth, parse_response};
use fitbit_proxy::Config;
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    }
}

const TOKEN: &str = "TOKEN_CANARY_fuzz";
const SECRET: &str = "SECRET_CANARY_fuzz";

/// JSON objects built around the four fields a token answer has, with
/// values of every JSON type (6.03).
fn token_json() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just(serde_json::json!(TOKEN)),
        Just(serde_json::json!("Bearer")),
        Just(serde_json::json!("bEaReR")),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        ".{0,40}".prop_map(|s| serde_json::json!(s)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!("3600")),
    ];
    let key = prop_oneof![
        Just("access_token".to_owned()),
        Just("expires_in".to_owned()),
        Just("token_type".to_owned()),
        Just("scope".to_owned()),
        "[a-z_]{1,12}",
    ];
    proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::json!(k)))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(config())]

    /// The token response codec (6.03, 4.05–4.08) never panics; an accepted
    /// token is a usable header value; no error message carries the token.
    #[test]
    fn token_responses(
        json in token_json(),
        raw in proptest::collection::vec(any::<u8>(), 0..200),
        status in prop_oneof![Just(200u16), Just(400), Just(401), Just(429), Just(500), 100u16..600],
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        for body in [json.as_bytes(), &raw[..]] {
            match parse_response(status, body) {
                Ok(grant) => {
                    prop_assert!(status.is_success());
                    let value = grant.header.to_str().expect("visible ASCII");
                    prop_assert!(value.starts_with("Bearer ") && value.len() > 7);
                    prop_assert!(grant.header.is_sensitive());
                    prop_assert!(grant.expires_in.as_secs() > 0);
                    let shown = format!("{grant:?}");
                    prop_assert!(!shown.contains(TOKEN));
                }
                Err(e) => {
                    prop_assert!(!e.to_string().contains(TOKEN), "{}", e);
                    let shown = format!("{e:?}");
                    prop_assert!(!shown.contains(TOKEN));
                }
            }
        }
    }

    /// The token request's credentials (6.03, 4.12): the Basic header decodes
    /// back to (id, secret) after form-urldecoding each part (RFC 6749
    /// §2.3.1).
    #[test]
    fn basic_credentials_round_trip(id in "\\PC{0,20}", secret in "\\PC{0,20}") {
        let value = basic_auth(&id, &secret);
        prop_assert!(value.is_sensitive());
        let b64 = value.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let joined = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let joined = String::from_utf8(joined).unwrap();
        let (a, b) = joined.split_once(':').unwrap();
        let decode = |s: &str| form_urlencoded::parse(format!("x={s}").as_bytes()).next().unwrap().1.into_owned();
        prop_assert_eq!(decode(a), id);
        prop_assert_eq!(decode(b), secret);
    }

    /// Config parsing (6.05): arbitrary text and mutations of a valid config
    /// never panic, and a secret canary in the file never shows in the error.
    #[test]
    fn config_parsing(
        junk in "\\PC{0,200}",
        key in prop_oneof![Just("addr".to_owned()), Just("max_connections".to_owned()), Just("header_read_timeout".to_owned()), Just("url".to_owned()), Just("deny_paths".to_owned()), Just("expires_in".to_owned()), Just("burst".to_owned()), Just("hourly_quota".to_owned()), Just("client_secret".to_owned()), Just("allow".to_owned()), "[a-z_]{1,10}"],
        value in prop_oneof![Just("\"other\"".to_owned()), Just("0".to_owned()), Just("-1".to_owned()), Just("\"1y\"".to_owned()), Just("[\"x\"]".to_owned()), Just("18446744073709551616".to_owned()), "\\PC{0,20}"],
        section in prop_oneof![Just("listen"), Just("admin"), Just("upstream"), Just("credentials"), Just("rate_limit"), Just("log")],
    ) {
        let env = |_: &str| Some(SECRET.to_owned());
        let path = Path::new("fuzz.toml");
        let _ = Config::from_toml_str_with_env(&junk, path, &env);
        let text = format!(
            "[credentials]\nclient_id = \"x\"\nclient_secret = \"{SECRET}\"\n[{section}]\n{key} = {value}\n"
        );
        if let Err(e) = Config::from_toml_str_with_env(&text, path, &env) {
            prop_assert!(!e.to_string().contains(SECRET), "{}", e);
        }
    }

    /// The path rules (6.07, 1.15) never panic: an accepted path starts with
    /// `/`, has no empty, `.` or `..` segment once decoded, and no `\`, `;`
    /// or control character; a path whose decoded, lowercased form is under a
    /// denied prefix is never allowed.
    #[test]
    fn path_rules(segments in proptest::collection::vec(
        prop_oneof![
            Just("oauth2".to_owned()), Just("OAuth2".to_owned()), Just("%6Fauth2".to_owned()),
            Just(".".to_owned()), Just("..".to_owned()), Just("".to_owned()), Just("%2e".to_owned()),
            Just("%2F".to_owned()), Just("%5C".to_owned()), Just(";x".to_owned()), Just("..;".to_owned()),
            Just("%252f".to_owned()), Just("%c0%ae".to_owned()), Just("1".to_owned()), Just("token".to_owned()),
            "[a-zA-Z0-9%._~-]{0,6}", "\\PC{0,4}",
        ], 0..6)) {
        let raw = format!("/{}", segments.join("/"));
        let rules = PathRules::new(&["/oauth2/".to_owned()], None);
        match canonical(&raw) {
            Ok(path) => {
                prop_assert!(path.starts_with('/'));
                let trimmed = path.strip_suffix('/').unwrap_or(&path);
                if !trimmed.is_empty() {
                    for seg in trimmed[1..].split('/') {
                        prop_assert!(!seg.is_empty() && seg != "." && seg != "..", "{raw} -> {path}");
                    }
                }
                prop_assert!(!path.contains('\\') && !path.contains(';'), "{raw}");
                let denied = path == "/oauth2" || path.starts_with("/oauth2/");
                prop_assert_eq!(rules.check(&raw) == Err(Refusal::NotForwarded), denied, "{}", raw);
            }
            Err(_) => prop_assert!(matches!(rules.check(&raw), Err(Refusal::Ambiguous(_)))),
        }
    }

    /// The header hygiene function (6.06): no hop-by-hop name, nothing a
    /// Connection line named, no client credential survives; end-to-end
    /// fields keep their values and order.
    #[test]
    fn header_hygiene(fields in proptest::collection::vec((
        prop_oneof![
            Just("connection"), Just("Connection"), Just("keep-alive"), Just("proxy-connection"),
            Just("te"), Just("trailer"), Just("transfer-encoding"), Just("upgrade"), Just("http2-settings"),
            Just("authorization"), Just("proxy-authorization"), Just("x-a"), Just("x-b"), Just("accept-language"),
        ],
        prop_oneof![Just("x-a"), Just("x-b, close"), Just("X-A , keep-alive"), Just("1"), Just("en_US"), Just("")],
    ), 0..12)) {
        let mut h = HeaderMap::new();
        for (n, v) in &fields {
            h.append(HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_static(v));
        }
        let named: Vec<String> = h.get_all("connection").iter()
            .flat_map(|v| v.to_str().unwrap().split(',').map(|s| s.trim().to_ascii_lowercase()).collect::<Vec<_>>())
            .collect();
        let before_lang: Vec<HeaderValue> = h.get_all("accept-language").iter().cloned().collect();
        strip_hop_by_hop(&mut h);
        strip_client_credentials(&mut h);
        for gone in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings", "authorization", "proxy-authorization"] {
            prop_assert!(!h.contains_key(gone), "{gone}");
        }
        for n in &named {
            if !n.is_empty() {
                prop_assert!(!h.contains_key(n.as_str()), "{n}");
            }
        }
        if !named.iter().any(|n| n == "accept-language") {
            let after: Vec<HeaderValue> = h.get_all("accept-language").iter().cloned().collect();
            prop_assert_eq!(after, before_lang);
        }
    }
}

// The rate-limit header parser (src/pacing/dialect.rs): the mutants that
// cargo-mutants found its unit tests missed, each killed by an assertion
// that names it (docs/hardening.md, 6.10).

fn retry(value: &str) -> Option<Duration> {
    let mut h = HeaderMap::new();
    h.insert(RETRY_AFTER, value.parse().unwrap());
    retry_after(&h)
}

#[test]
fn digits_takes_nineteen_digits_and_refuses_signs_and_twenty() {
    // `len() > 19` -> `>= 19`: the longest accepted value is refused.
    assert_eq!(retry("1000000000000000000"), Some(MAX_RESET));
    // `len() > 19` -> `== 19`: twenty digits (u64::MAX) get through.
    assert_eq!(retry("18446744073709551615"), None);
    // `||` -> `&&`: a sign, which `u64::from_str` would accept.
    assert_eq!(retry("+5"), None);
    assert_eq!(retry(""), None);
    assert_eq!(retry(" 7 "), Some(Duration::from_secs(7)));
}

#[test]
fn parse_reads_the_three_values() {
    // `parse` -> `Ok(Some(Default::default()))`.
    let mut h = HeaderMap::new();
    h.insert(RATE_LIMIT_LIMIT, "150".parse().unwrap());
    h.insert(RATE_LIMIT_REMAINING, "+3".parse().unwrap());
    h.insert(RATE_LIMIT_RESET, "60".parse().unwrap());
    assert!(parse(&h).is_err(), "a signed remaining is malformed");
    h.insert(RATE_LIMIT_REMAINING, "3".parse().unwrap());
    assert_eq!(
        parse(&h),
        Ok(Some(RateLimit {
            limit: 150,
            remaining: 3,
            reset: Duration::from_secs(60),
        }))
    );
}
