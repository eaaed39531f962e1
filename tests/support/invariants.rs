//! The catalog's global invariants (RELIABILITY.md §0.2) as assertions a
//! security test runs after its traffic: G1 (what the upstream saw), G2 (no
//! canary in the bytes a client got back), G4 (no panic) and G5/G6 (every
//! accepted request has one counted outcome; nothing refused reached the
//! upstream). G3 holds by construction in-process: the only sockets the
//! proxy is given are the simulator's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

use prometheus_parse::{Scrape, Value};

use super::{get, http1_client, send, Harness};

/// Strings that must never appear where a client or log could see them.
pub const CANARIES: [&str; 3] = ["TOKEN_CANARY_", "SECRET_CANARY", "CLIENTAUTH_CANARY"];

/// Fields that are hop-by-hop or connection-specific (RFC 9110 §7.6.1,
/// RFC 9113 §8.2.2); none may reach the upstream except the framing
/// `transfer-encoding: chunked` the proxy's own client sets.
pub const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
    "http2-settings",
];

/// Fields by which a client claims an identity or origin (catalog 2.13);
/// the proxy strips them and adds none.
const FORWARDING_IDENTITY: [&str; 8] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
    "true-client-ip",
    "x-original-url",
    "via",
];

/// The upstream sees only clean requests (G1): every request it saw carries
/// exactly one `authorization: Bearer TOKEN_CANARY_…`, the upstream's own
/// `Host`, and nothing of the client's credentials, of the hop-by-hop set or
/// of the forwarding-identity fields.
pub fn assert_upstream_clean(h: &Harness) {
    let upstream = h.upstream.addr.to_string();
    for r in h.sim.received() {
        let auth: Vec<_> = r.headers.get_all("authorization").iter().collect();
        assert_eq!(
            auth.len(),
            1,
            "G1: {} authorization fields: {r:?}",
            auth.len()
        );
        let auth = auth[0].to_str().unwrap_or("");
        assert!(
            auth.starts_with("Bearer TOKEN_CANARY_") && !auth.contains(','),
            "G1: authorization is not the proxy's bearer: {r:?}"
        );
        if r.version <= http::Version::HTTP_11 {
            let hosts: Vec<_> = r.headers.get_all("host").iter().collect();
            assert_eq!(hosts.len(), 1, "G1: host fields: {r:?}");
            assert_eq!(hosts[0], upstream.as_str(), "G1: host: {r:?}");
        } else {
            assert!(
                r.headers.get("host").is_none_or(|v| v == upstream.as_str()),
                "G1: h2 host differs from :authority: {r:?}"
            );
        }
        for name in HOP_BY_HOP {
            assert!(!r.headers.contains_key(name), "G1: {name} reached U: {r:?}");
        }
        for name in FORWARDING_IDENTITY {
            assert!(!r.headers.contains_key(name), "G1: {name} reached U: {r:?}");
        }
        assert!(
            !r.trailers.contains_key("authorization"),
            "G1: an authorization trailer reached U: {r:?}"
        );
        for te in r.headers.get_all("transfer-encoding") {
            assert_eq!(te, "chunked", "G1: transfer-encoding {te:?} reached U");
        }
        let everything = format!(
            "{} {:?} {:?}",
            r.path,
            r.query,
            r.headers
                .iter()
                .chain(r.trailers.iter())
                .map(|(k, v)| (k.as_str(), String::from_utf8_lossy(v.as_bytes())))
                .collect::<Vec<_>>()
        );
        assert!(
            !everything.contains("CLIENTAUTH_CANARY"),
            "G1: the client's credential reached U"
        );
    }
}

/// No secret reaches a client (G2), for the bytes it received: no token,
/// secret or client credential.
pub fn assert_no_canary(what: &str, bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for canary in CANARIES {
        assert!(!text.contains(canary), "G2: {canary} in {what}");
    }
}

/// Nothing refused is forwarded (G6): the upstream saw no request head since
/// `before` (a value of `h.sim.api_started()` taken before the refused
/// traffic).
pub fn assert_nothing_forwarded_since(h: &Harness, before: u64, what: &str) {
    let now = h.sim.api_started();
    assert_eq!(
        now,
        before,
        "G6: {} request(s) reached the upstream after {what}",
        now - before
    );
}

/// `fitbit_proxy_requests_total` by `(origin, code)`, from the admin
/// listener (the harness must be started with `Setup::admin()`).
pub async fn request_outcomes(h: &Harness) -> BTreeMap<(String, String), f64> {
    let (_, body) = send(&http1_client(), get(&h.admin_url("/metrics"))).await;
    let text = String::from_utf8(body.to_vec()).expect("metrics are text");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("metrics parse");
    let mut out = BTreeMap::new();
    for s in scrape.samples {
        if s.metric != "fitbit_proxy_requests_total" {
            continue;
        }
        let v = match s.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => continue,
        };
        let key = (
            s.labels.get("origin").unwrap_or_default().to_owned(),
            s.labels.get("code").unwrap_or_default().to_owned(),
        );
        *out.entry(key).or_default() += v;
    }
    out
}

/// One counted outcome per request (G5): the requests the stack accepted each
/// got exactly one counted outcome: the counters add up to `expected`.
pub async fn assert_outcomes(h: &Harness, expected: &[((&str, &str), f64)]) {
    let got = request_outcomes(h).await;
    let want: BTreeMap<(String, String), f64> = expected
        .iter()
        .map(|((o, c), n)| (((*o).to_owned(), (*c).to_owned()), *n))
        .collect();
    assert_eq!(got, want, "G5: request outcomes");
}

static PANICS: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// No panic (G4, in-process): counts panics raised outside the tests' own
/// code — in the proxy's connection tasks, which tokio would swallow, or in
/// its dependencies. A failing assertion in a test (a panic located in
/// `tests/`) is that test's own failure and does not fail the others.
/// [`super::Setup::start`] calls it; [`assert_no_panics`] at the end of a
/// test checks it.
pub fn count_panics() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_tests = info
                .location()
                .is_some_and(|l| l.file().starts_with("tests/"));
            if !in_tests {
                PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

pub fn assert_no_panics() {
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "G4: a thread panicked");
}

/// Runs the invariants every security test ends with.
pub fn assert_invariants(h: &Harness) {
    assert_upstream_clean(h);
    assert_no_panics();
    assert!(!h.finished(), "G4: the proxy stopped on its own");
}

impl Harness {
    /// [`assert_invariants`], then [`Harness::stop`].
    pub async fn finish(self) {
        assert_invariants(&self);
        self.stop().await;
    }
}
