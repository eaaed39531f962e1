//! Table tests of every dialect, one case per line, and property tests:
//! never a panic, always within caps.

use super::*;
use crate::config::Reset;
use proptest::prelude::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

use crate::profile::fitbit::{RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET};
const L: &str = RATE_LIMIT_LIMIT;
const R: &str = RATE_LIMIT_REMAINING;
const S: &str = RATE_LIMIT_RESET;

type Parsed = Result<Option<RateLimit>, Malformed>;

fn rl(limit: u32, remaining: u32, reset: u64) -> RateLimit {
    RateLimit {
        limit,
        remaining,
        reset: Duration::from_secs(reset),
    }
}

fn ok(limit: u32, remaining: u32, reset: u64) -> Parsed {
    Ok(Some(rl(limit, remaining, reset)))
}

#[test]
#[rustfmt::skip]
fn parse_table() {
    let cases: Vec<(Vec<(&str, &str)>, Parsed)> = vec![
        (vec![], Ok(None)),
        (vec![("content-type", "application/json")], Ok(None)),
        (vec![(L, "150"), (R, "149"), (S, "1800")], ok(150, 149, 1800)),
        (vec![(L, " 150 "), (R, "0"), (S, "0")], ok(150, 0, 0)),
        (vec![(L, "150"), (R, "200"), (S, "10")], ok(150, 150, 10)),
        (vec![(L, "150"), (R, "1"), (S, "86400")], ok(150, 1, 86400)),
        (vec![(L, "150"), (R, "149")], Err(Malformed::Missing(S))),
        (vec![(R, "149")], Err(Malformed::Missing(L))),
        (vec![(L, "150"), (R, "-1"), (S, "10")], Err(Malformed::Invalid(R))),
        (vec![(L, "150"), (R, "1.5"), (S, "10")], Err(Malformed::Invalid(R))),
        (vec![(L, "150"), (R, "1e3"), (S, "10")], Err(Malformed::Invalid(R))),
        (vec![(L, "150"), (R, ""), (S, "10")], Err(Malformed::Invalid(R))),
        (vec![(L, "0x10"), (R, "1"), (S, "10")], Err(Malformed::Invalid(L))),
        (vec![(L, "99999999999999999999999"), (R, "1"), (S, "10")], Err(Malformed::Invalid(L))),
        (vec![(L, "10000001"), (R, "1"), (S, "10")], Err(Malformed::Invalid(L))),
        (vec![(L, "150"), (R, "1"), (S, "86401")], Err(Malformed::Invalid(S))),
        (vec![(L, "150"), (R, "1"), (S, "10"), (S, "11")], Err(Malformed::Conflicting(S))),
        (vec![(L, "150"), (L, "150"), (R, "1"), (S, "10")], ok(150, 1, 10)),
    ];
    for (pairs, want) in cases {
        assert_eq!(parse(&map(&pairs)), want, "{pairs:?}");
    }
}

/// The three vendor triples, each in both reset units; an epoch is read
/// against the answer's `Date` (here Sun, 06 Nov 1994 08:49:37 GMT).
#[test]
#[rustfmt::skip]
fn vendor_triples_table() {
    const DATE_TEXT: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const DATE_SECS: u64 = 784_111_777;
    let epoch = (DATE_SECS + 42).to_string();
    let cases: Vec<(Dialect, [&str; 3], &str, Option<RateLimit>)> = vec![
        (Dialect::RateLimit(Reset::Delta), ["RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"], "42", Some(rl(800, 799, 42))),
        (Dialect::RateLimit(Reset::Epoch), ["Ratelimit-Limit", "Ratelimit-Remaining", "Ratelimit-Reset"], &epoch, Some(rl(800, 799, 42))),
        (Dialect::XRateLimit(Reset::Delta), ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"], "42", Some(rl(800, 799, 42))),
        (Dialect::XRateLimit(Reset::Epoch), ["x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset"], &epoch, Some(rl(800, 799, 42))),
        (Dialect::XRateLimitDash(Reset::Delta), ["X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"], "42", Some(rl(800, 799, 42))),
        (Dialect::XRateLimitDash(Reset::Epoch), ["x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"], &epoch, Some(rl(800, 799, 42))),
        // The other dialects' names are not read.
        (Dialect::XRateLimit(Reset::Delta), ["X-Rate-Limit-Limit", "X-Rate-Limit-Remaining", "X-Rate-Limit-Reset"], "42", None),
        (Dialect::Fitbit, ["X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"], "42", None),
    ];
    for (dialect, [l, r, s], reset, want) in cases {
        let h = map(&[(l, "800"), (r, "799"), (s, reset), ("date", DATE_TEXT)]);
        let (policies, malformed) = read(dialect, &h);
        assert_eq!(malformed, None, "{dialect:?} {l}");
        assert_eq!(policies.first().map(|p| p.rate), want, "{dialect:?} {l}");
    }
    // An epoch in the past is a reset now; one more than a day away is malformed.
    let past = map(&[("x-ratelimit-limit", "5"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1"), ("date", DATE_TEXT)]);
    assert_eq!(read(Dialect::XRateLimit(Reset::Epoch), &past).0[0].rate, rl(5, 0, 0));
    let far = (DATE_SECS + 86_401).to_string();
    let far = map(&[("x-ratelimit-limit", "5"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", &far), ("date", DATE_TEXT)]);
    assert_eq!(read(Dialect::XRateLimit(Reset::Epoch), &far).1, Some(Malformed::Invalid("x-ratelimit-reset")));
    assert_eq!(read(Dialect::None, &past), (Vec::new(), None));
}

fn policy(name: &str, limit: u32, remaining: u32, reset: u64, window: Option<u64>) -> Policy {
    Policy {
        name: name.to_owned(),
        rate: rl(limit, remaining, reset),
        window: window.map(Duration::from_secs),
    }
}

/// The IETF fields, draft-11 (string names) and -08 (token names), several
/// policies, and malformed fields that are ignored and reported.
#[test]
#[rustfmt::skip]
fn ietf_table() {
    type Want = (Vec<Policy>, Option<Malformed>);
    let cases: Vec<(Vec<(&str, &str)>, Want)> = vec![
        (vec![], (vec![], None)),
        (vec![("RateLimit-Policy", r#""default";q=100;w=60"#), ("RateLimit", r#""default";r=50;t=30"#)],
            (vec![policy("default", 100, 50, 30, Some(60))], None)),
        (vec![("RateLimit-Policy", "default;q=100;w=60"), ("RateLimit", "default;r=50;t=30")],
            (vec![policy("default", 100, 50, 30, Some(60))], None)),
        (vec![("RateLimit-Policy", r#""burst";q=100;w=60, "daily";q=1000;w=86400"#), ("RateLimit", r#""burst";r=99;t=59, "daily";r=900;t=7200"#)],
            (vec![policy("burst", 100, 99, 59, Some(60)), policy("daily", 1000, 900, 7200, Some(86400))], None)),
        // Two field lines are one list.
        (vec![("RateLimit-Policy", r#""a";q=10;w=10"#), ("RateLimit-Policy", r#""b";q=20;w=20"#), ("RateLimit", r#""a";r=1;t=2"#), ("RateLimit", r#""b";r=3;t=4"#)],
            (vec![policy("a", 10, 1, 2, Some(10)), policy("b", 20, 3, 4, Some(20))], None)),
        // No policy field: the quota is at least what is left; no t: the window.
        (vec![("RateLimit", r#""x";r=7;t=3"#)], (vec![policy("x", 7, 7, 3, None)], None)),
        (vec![("RateLimit-Policy", r#""x";q=10;w=20"#), ("RateLimit", r#""x";r=7"#)], (vec![policy("x", 10, 7, 20, Some(20))], None)),
        // Quotas of something else than requests are not pacing's.
        (vec![("RateLimit-Policy", r#""bytes";q=1000;qu="content-bytes";w=1"#), ("RateLimit", r#""bytes";r=10;t=1"#)], (vec![policy("bytes", 10, 10, 1, None)], None)),
        // Unknown parameters are ignored; the partition key too.
        (vec![("RateLimit-Policy", r#""p";q=5;w=10;pk=:AQID:;x=1"#), ("RateLimit", r#""p";r=5;t=10;pk=:AQID:"#)], (vec![policy("p", 5, 5, 10, Some(10))], None)),
        // Malformed: the field is ignored and reported, the rest still read.
        (vec![("RateLimit-Policy", r#""default";q=100;w=60"#), ("RateLimit", r#""default";r=50;t=30,,"#)], (vec![], Some(Malformed::Structured("RateLimit", "not a list")))),
        (vec![("RateLimit-Policy", "q=100;;"), ("RateLimit", r#""default";r=50;t=30"#)], (vec![policy("default", 50, 50, 30, None)], Some(Malformed::Structured("RateLimit-Policy", "not a list")))),
        (vec![("RateLimit", r#""a";r=-1;t=3, "b";r=2;t=3"#)], (vec![policy("b", 2, 2, 3, None)], Some(Malformed::Invalid("RateLimit r")))),
        (vec![("RateLimit", r#""a";r=1;t=90000"#)], (vec![], Some(Malformed::Invalid("RateLimit t")))),
        (vec![("RateLimit", r#""a";r=1.5;t=3"#)], (vec![], Some(Malformed::Invalid("RateLimit r")))),
        // The draft-07 dictionary is not a list of named items.
        (vec![("RateLimit", "limit=100, remaining=50, reset=5")], (vec![], Some(Malformed::Structured("RateLimit", "not a list")))),
    ];
    for (pairs, want) in cases {
        assert_eq!(read(Dialect::Ietf, &map(&pairs)), want, "{pairs:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn retry_after_table() {
    let now = crate::pacing::wallclock::unix_now().as_secs();
    let date = |secs: u64| crate::pacing::wallclock::http_date(Duration::from_secs(secs));
    let in_17 = date(now + 17);
    let upstream_date = date(now + 100);
    let upstream_now = date(now + 90);
    type Case<'a> = (Vec<(&'a str, &'a str)>, Option<u64>);
    let cases: Vec<Case<'_>> = vec![
        (vec![("retry-after", "17")], Some(17)),
        (vec![("retry-after", " 0 ")], Some(0)),
        (vec![("retry-after", "999999999")], Some(86400)),
        (vec![("retry-after", &in_17)], Some(17)),
        // Against the upstream's own clock when it says what time it is.
        (
            vec![("retry-after", &upstream_date), ("date", &upstream_now)],
            Some(10),
        ),
        (
            vec![("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT")],
            Some(0),
        ),
        (vec![("retry-after", "-5")], None),
        (vec![("retry-after", "")], None),
        (vec![("retry-after", "2020-05-31T00:00:00Z")], None),
    ];
    for (pairs, want) in cases {
        let got = retry_after(&map(&pairs));
        assert_eq!(got, want.map(Duration::from_secs), "{pairs:?}");
    }
    assert_eq!(retry_after(&HeaderMap::new()), None);
}

proptest! {
    #[test]
    fn never_panics_and_stays_within_caps(limit in ".{0,30}", remaining in ".{0,30}", reset in ".{0,30}", dup in any::<bool>()) {
        let mut h = HeaderMap::new();
        for (name, value) in [(L, &limit), (R, &remaining), (S, &reset)] {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                h.append(name, v.clone());
                if dup { h.append(name, v); }
            }
        }
        if let Ok(Some(rl)) = parse(&h) {
            prop_assert!(rl.limit <= MAX_LIMIT);
            prop_assert!(rl.remaining <= rl.limit);
            prop_assert!(rl.reset <= MAX_RESET);
        }
        let _ = retry_after(&h);
    }

    #[test]
    fn ietf_never_panics_and_stays_within_caps(policy in ".{0,60}", current in ".{0,60}") {
        let mut h = HeaderMap::new();
        for (name, value) in [("ratelimit-policy", &policy), ("ratelimit", &current)] {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                h.append(name, v);
            }
        }
        for p in read(Dialect::Ietf, &h).0 {
            prop_assert!(p.rate.limit <= MAX_LIMIT);
            prop_assert!(p.rate.remaining <= p.rate.limit);
            prop_assert!(p.rate.reset <= MAX_RESET);
        }
    }

    #[test]
    fn well_formed_values_round_trip(limit in 0u32..=MAX_LIMIT, remaining in 0u32..=MAX_LIMIT, reset in 0u64..=86400) {
        let h = map(&[(L, &limit.to_string()), (R, &remaining.to_string()), (S, &reset.to_string())]);
        let rl = parse(&h).unwrap().unwrap();
        prop_assert_eq!(rl, RateLimit { limit, remaining: remaining.min(limit), reset: Duration::from_secs(reset) });
    }
}
