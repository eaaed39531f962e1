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

/// JSON objects built around the four fields a token answer has, each
/// field mostly present with a value from the catalog's list (4.06, 4.08)
/// or of any JSON type, plus a few random or repeated fields (6.03).
fn token_json() -> impl Strategy<Value = String> {
    let any_value = prop_oneof![
        Just(serde_json::json!(TOKEN)),
        any::<i64>().prop_map(|n| serde_json::json!(n)),
        any::<f64>().prop_map(|n| serde_json::json!(n)),
        ".{0,40}".prop_map(|s| serde_json::json!(s)),
        Just(serde_json::json!(null)),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
    ];
    let token_type = prop_oneof![
        4 => prop_oneof![Just("Bearer"), Just("bearer"), Just("BEARER"), Just("bEaReR")]
            .prop_map(|t| serde_json::json!(t)),
        4 => prop_oneof![Just("mac"), Just("DPoP"), Just("N_A"), Just(""), Just("Bearer "), Just("Bearerx")]
            .prop_map(|t| serde_json::json!(t)),
        1 => any_value.clone(),
    ];
    let expires_in = prop_oneof![
        4 => prop_oneof![Just(3600u64), Just(1), Just(0), Just(u64::MAX)].prop_map(|n| serde_json::json!(n)),
        4 => prop_oneof![Just(-5.0f64), Just(3600.5), Just(1e12), Just(3600.0)].prop_map(|n| serde_json::json!(n)),
        2 => prop_oneof![Just("3600"), Just(" 60 "), Just("1e3"), Just("-1"), Just("")].prop_map(|s| serde_json::json!(s)),
        1 => any_value.clone(),
    ];
    let access_token = prop_oneof![
        6 => Just(serde_json::json!(TOKEN)),
        1 => prop_oneof![Just(""), Just(" "), Just("a\r\nX-Injected: 1"), Just("tök"), Just("a=b"), Just("ab=="), Just("a.b-c_d~e+f/g"), Just("=")]
            .prop_map(|t| serde_json::json!(t)),
        1 => any_value.clone(),
    ];
    let known = (
        proptest::option::weighted(0.9, access_token),
        proptest::option::weighted(0.9, token_type),
        proptest::option::weighted(0.9, expires_in),
    );
    let key = prop_oneof![
        Just("access_token".to_owned()),
        Just("expires_in".to_owned()),
        Just("token_type".to_owned()),
        Just("scope".to_owned()),
        "[a-z_]{1,12}",
    ];
    let extra = proptest::collection::vec((key, any_value), 0..3);
    (known, extra, any::<proptest::sample::Index>()).prop_map(|((a, t, e), extra, at)| {
        let mut fields: Vec<(String, serde_json::Value)> =
            [("access_token", a), ("token_type", t), ("expires_in", e)]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_owned(), v?)))
                .collect();
        for field in extra {
            let at = at.index(fields.len() + 1);
            fields.insert(at, field);
        }
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}:{v}", serde_json::json!(k)))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(config())]

    /// The token response codec (6.03, 4.05–4.08) never panics, and
    /// decides as [`token_oracle`], written apart from it: an accepted
    /// answer has a `token_type` of Bearer in any case, a whole positive
    /// `expires_in` (capped), a token a header can carry; everything else is
    /// refused. No error message carries the token.
    #[test]
    fn token_responses(
        json in token_json(),
        raw in proptest::collection::vec(any::<u8>(), 0..200),
        status in prop_oneof![Just(200u16), Just(400), Just(401), Just(429), Just(500), 100u16..600],
    ) {
        let status = StatusCode::from_u16(status).unwrap();
        for body in [json.as_bytes(), &raw[..]] {
            let want = status.is_success().then(|| token_oracle(body)).flatten();
            match parse_response(status, body) {
                Ok(grant) => {
                    prop_assert!(status.is_success());
                    let value = grant.header.to_str().expect("visible ASCII");
                    prop_assert!(value.starts_with("Bearer ") && value.len() > 7);
                    prop_assert!(grant.header.is_sensitive());
                    prop_assert_eq!(Some(grant.expires_in), want, "{}", String::from_utf8_lossy(body));
                    let shown = format!("{grant:?}");
                    prop_assert!(!shown.contains(TOKEN));
                }
                Err(e) => {
                    prop_assert_eq!(None, want, "{}: refused: {}", String::from_utf8_lossy(body), e);
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

    /// The path rules (6.07, 1.15) against an independent reference
    /// normaliser ([`reference_path`]): never a panic; a target that does
    /// not start with `/` is refused as ambiguous; a path the most lenient
    /// reading puts under the denied prefix is never forwarded; and a path
    /// that is forwarded reads the same to the reference as to the proxy,
    /// so no server can find another path in it.
    #[test]
    fn path_rules(
        start in prop_oneof![
            4 => Just("/"), 1 => Just(""), 1 => Just("\\"), 1 => Just("//"), 1 => Just("./"),
            1 => Just("%2F"), 1 => Just("*"), 1 => Just("http://a/"),
        ],
        segments in proptest::collection::vec(
        prop_oneof![
            Just("oauth2".to_owned()), Just("OAuth2".to_owned()), Just("%6Fauth2".to_owned()),
            Just(".".to_owned()), Just("..".to_owned()), Just("".to_owned()), Just("%2e".to_owned()),
            Just("%2F".to_owned()), Just("%5C".to_owned()), Just(";x".to_owned()), Just("..;".to_owned()),
            Just("%252f".to_owned()), Just("%c0%ae".to_owned()), Just("1".to_owned()), Just("token".to_owned()),
            Just("\\".to_owned()), Just("oauth2;x".to_owned()), Just("%3b".to_owned()), Just("%2e%2e".to_owned()),
            Just("%252e%252e".to_owned()), Just("%00".to_owned()), Just("%25".to_owned()), Just("%4F%41uth2".to_owned()),
            "[a-zA-Z0-9%._~-]{0,6}", "\\PC{0,4}",
        ], 0..6)) {
        let raw = format!("{start}{}", segments.join("/"));
        let rules = PathRules::new(&["/oauth2/".to_owned()], None);
        let verdict = rules.check(&raw);
        match reference_path(&raw) {
            None => prop_assert!(matches!(verdict, Err(Refusal::Ambiguous(_))), "{raw}: {verdict:?}"),
            Some(reading) => {
                let denied = reading == "/oauth2" || reading.starts_with("/oauth2/");
                if denied {
                    prop_assert!(verdict.is_err(), "{raw} reads as {reading} and was forwarded");
                }
                if verdict.is_ok() {
                    prop_assert_eq!(canonical(&raw).ok().map(|c| c.into_owned()), Some(reading), "{}", raw);
                }
            }
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

/// What a 200 token answer must give, decided apart from
/// src/token/exchange.rs: the lifetime when the body is one JSON object
/// with each of `access_token`, `token_type`, `expires_in` at most once, a
/// token in RFC 6750's b64token syntax, `token_type` Bearer in any case (RFC 6749 §7.1),
/// and `expires_in` a whole number of seconds above 0, as a number or a
/// numeric string, capped at `u32::MAX` seconds; `None` otherwise.
fn token_oracle(body: &[u8]) -> Option<Duration> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    // serde_json keeps the last of repeated keys; a strict reader refuses.
    for key in ["access_token", "token_type", "expires_in"] {
        let needle = format!("{}:", serde_json::json!(key));
        if String::from_utf8_lossy(body).matches(&needle).count() > 1 {
            return None;
        }
    }
    // RFC 6750's b64token: token68 characters, `=` only at the end.
    let token = object.get("access_token")?.as_str()?;
    let (body, padding) = token.split_at(token.find('=').unwrap_or(token.len()));
    let token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    if body.is_empty() || !body.chars().all(token68) || padding.chars().any(|c| c != '=') {
        return None;
    }
    if !object
        .get("token_type")?
        .as_str()?
        .eq_ignore_ascii_case("bearer")
    {
        return None;
    }
    let secs = match object.get("expires_in")? {
        serde_json::Value::Number(n) => n.as_u64()?,
        serde_json::Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    (secs > 0).then(|| Duration::from_secs(secs.min(u64::from(u32::MAX))))
}

/// The catalog's token answers (4.05 bodies that do not parse, 4.06
/// `token_type`, 4.07 `access_token`, 4.08 `expires_in`), one per line: the lifetime granted, or
/// `None` for a refusal.
#[test]
fn token_answer_variants() {
    let grant = |fields: &str| format!(r#"{{"access_token":"{TOKEN}",{fields}}}"#);
    let typed = |t: &str| grant(&format!(r#""token_type":{t},"expires_in":3600"#));
    let lasting = |e: &str| grant(&format!(r#""token_type":"Bearer","expires_in":{e}"#));
    let hour = Some(Duration::from_secs(3600));
    let token =
        |t: &str| format!(r#"{{"access_token":"{t}","token_type":"Bearer","expires_in":3600}}"#);
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let mut latin1 = lasting("3600").into_bytes();
    latin1.splice(20..21, [0xe9]);
    let utf16: Vec<u8> = lasting("3600")
        .encode_utf16()
        .flat_map(|u| u.to_le_bytes())
        .collect();
    let cases: Vec<(&str, Vec<u8>, Option<Duration>)> = vec![
        // 4.05: bodies that do not parse as a token answer.
        (
            "captive portal",
            b"<html><body>Log in</body></html>".to_vec(),
            None,
        ),
        ("truncated", lasting("3600").as_bytes()[..30].to_vec(), None),
        ("array", b"[]".to_vec(), None),
        ("null", b"null".to_vec(), None),
        ("empty", Vec::new(), None),
        ("nesting 10 000 deep", deep.into_bytes(), None),
        ("objects 10 000 deep", deep_object.into_bytes(), None),
        (
            "two access_tokens",
            grant(r#""access_token":"other","token_type":"Bearer","expires_in":3600"#).into_bytes(),
            None,
        ),
        ("latin-1 byte", latin1, None),
        ("UTF-16", utf16, None),
        // 4.06: token_type, any case of Bearer and nothing else.
        ("Bearer", typed(r#""Bearer""#).into_bytes(), hour),
        ("bearer", typed(r#""bearer""#).into_bytes(), hour),
        ("BEARER", typed(r#""BEARER""#).into_bytes(), hour),
        ("mac", typed(r#""mac""#).into_bytes(), None),
        ("DPoP", typed(r#""DPoP""#).into_bytes(), None),
        ("N_A", typed(r#""N_A""#).into_bytes(), None),
        ("empty type", typed(r#""""#).into_bytes(), None),
        ("type null", typed("null").into_bytes(), None),
        ("no type", grant(r#""expires_in":3600"#).into_bytes(), None),
        // 4.07: the token, an RFC 6750 b64token (its length is capped by
        // the 64 KiB read of the answer, tests/security/upstream).
        ("empty token", token("").into_bytes(), None),
        ("a space", token(" ").into_bytes(), None),
        ("CR LF", token("a\\r\\nX-Injected: 1").into_bytes(), None),
        ("non-ASCII", token("tök").into_bytes(), None),
        ("= inside", token("a=b").into_bytes(), None),
        ("= padding", token("ab==").into_bytes(), hour),
        ("a JWT", token("eyJh.eyJz-_~+/.c2ln").into_bytes(), hour),
        // 4.08: expires_in, a whole positive number of seconds.
        ("0", lasting("0").into_bytes(), None),
        ("-5", lasting("-5").into_bytes(), None),
        (
            "no expires_in",
            grant(r#""token_type":"Bearer""#).into_bytes(),
            None,
        ),
        ("\"3600\"", lasting(r#""3600""#).into_bytes(), hour),
        ("3600.5", lasting("3600.5").into_bytes(), None),
        ("3600.0", lasting("3600.0").into_bytes(), None),
        ("1e12", lasting("1e12").into_bytes(), None),
        ("\"1e3\"", lasting(r#""1e3""#).into_bytes(), None),
        (
            "2^64-1, capped",
            lasting("18446744073709551615").into_bytes(),
            Some(Duration::from_secs(u32::MAX.into())),
        ),
        (
            "2^64, refused",
            lasting("18446744073709551616").into_bytes(),
            None,
        ),
        ("1", lasting("1").into_bytes(), Some(Duration::from_secs(1))),
    ];
    for (name, body, want) in cases {
        let got = parse_response(StatusCode::OK, &body);
        assert_eq!(
            got.as_ref().ok().map(|g| g.expires_in),
            want,
            "{name}: {got:?}"
        );
        assert_eq!(token_oracle(&body), want, "{name}: the oracle");
        if let Err(e) = got {
            assert!(!format!("{e} {e:?}").contains(TOKEN), "{name}: {e}");
        }
    }
}

/// A reference reading of a request path, written apart from
/// src/layers/paths.rs after RFC 3986 and the most lenient servers: `None`
/// when it is not a path (no leading `/`); otherwise percent-decoded until
/// nothing changes (a server that decodes twice sees `%252f` as `/`), `\`
/// read as `/` (as Windows servers do), `;parameters` cut from each segment
/// (as Tomcat does with `..;x`), lowercased, empty segments merged (as
/// nginx's `merge_slashes`) and dot segments removed (RFC 3986 §5.2.4).
fn reference_path(raw: &str) -> Option<String> {
    if !raw.starts_with('/') {
        return None;
    }
    let mut text = raw.to_owned();
    for _ in 0..4 {
        let decoded = percent_encoding::percent_decode_str(&text)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == text {
            break;
        }
        text = decoded;
    }
    // ASCII case only: no non-ASCII letter lowercases into `oauth`.
    let text = text.replace('\\', "/").to_ascii_lowercase();
    let trailing = text.ends_with('/') && text.len() > 1;
    let mut out: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        let segment = segment.split(';').next().unwrap_or_default();
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut path = format!("/{}", out.join("/"));
    if trailing && path != "/" {
        path.push('/');
    }
    Some(path)
}

/// The catalog's bypass targets (1.15) and their neighbours, each with the
/// decision `deny_paths = ["/oauth2/"]` must give: forwarded, refused as
/// ambiguous (400) or not forwarded (403).
#[test]
fn path_rules_corpus() {
    #[derive(Debug, PartialEq)]
    enum Want {
        Forward,
        Ambiguous,
        Deny,
    }
    use Want::*;
    let corpus = [
        ("/1/user/-/profile.json", Forward),
        ("/1/user/-/activities/date/2026-11-23.json", Forward),
        ("/1/x/", Forward),
        ("/oauth2x/token", Forward),
        ("/1/oauth2/token", Forward),
        ("/1/foods/search%C3%A9.json", Forward),
        ("/oauth2/revoke", Deny),
        ("/OAUTH2/revoke", Deny),
        ("/%6Fauth2/revoke", Deny),
        ("/%4F%41UTH2/token", Deny),
        ("/oauth2", Deny),
        ("/oauth2/", Deny),
        ("//oauth2/revoke", Ambiguous),
        ("/./oauth2/revoke", Ambiguous),
        ("/1/../oauth2/revoke", Ambiguous),
        ("/1/..;x/oauth2/revoke", Ambiguous),
        ("/1%2F..%2Foauth2/revoke", Ambiguous),
        ("/1%5C..%5Coauth2/revoke", Ambiguous),
        ("/oauth2%2Frevoke", Ambiguous),
        ("/%2e%2e/oauth2/token", Ambiguous),
        ("/%252e%252e/oauth2/token", Ambiguous),
        ("/1/%c0%ae%c0%ae/oauth2/token", Ambiguous),
        ("/oauth2;x/token", Ambiguous),
        ("/\\oauth2\\token", Ambiguous),
        ("/oauth2%00/token", Ambiguous),
        ("/oauth2%20/token", Ambiguous),
        ("oauth2/token", Ambiguous),
        ("", Ambiguous),
        ("*", Ambiguous),
        ("%2Foauth2/token", Ambiguous),
        ("http://api.fitbit.com/oauth2/token", Ambiguous),
    ];
    let rules = PathRules::new(&["/oauth2/".to_owned()], None);
    for (raw, want) in corpus {
        let got = match rules.check(raw) {
            Ok(()) => Forward,
            Err(Refusal::Ambiguous(_)) => Ambiguous,
            Err(Refusal::NotForwarded) => Deny,
        };
        assert_eq!(got, want, "{raw:?}");
    }
}

#[test]
fn the_reference_reading_of_paths() {
    let cases = [
        ("/1/../oauth2/x", Some("/oauth2/x")),
        ("/%252e%252e/%4Fauth2", Some("/oauth2")),
        ("/1/..;x/OAuth2\\x", Some("/oauth2/x")),
        ("//a//b/", Some("/a/b/")),
        ("/", Some("/")),
        ("a/b", None),
    ];
    for (raw, want) in cases {
        assert_eq!(reference_path(raw).as_deref(), want, "{raw:?}");
    }
}
