//! 6.10: tests that kill the mutants cargo-mutants found missed in the
//! rate-limit header parser (src/pacing/headers.rs) by the unit tests
//! (docs/hardening.md, 6.10). Each assertion names the mutant it kills.

use std::time::Duration;

use fitbit_proxy::pacing::dialect::{parse, retry_after, RateLimit, MAX_RESET};
use fitbit_proxy::profile::fitbit::{RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET};
use http::header::RETRY_AFTER;
use http::HeaderMap;

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
