//! Parsing of the upstream's rate-limit headers (`fitbit-rate-limit-*`,
//! `Retry-After`): small pure functions that never panic and cap every
//! value, since the text comes from the network.

use std::time::Duration;

use http::header::RETRY_AFTER;
use http::HeaderMap;

use crate::profile::fitbit::{RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET};

/// No application quota is larger than this; bigger values are nonsense.
pub const MAX_LIMIT: u32 = 10_000_000;
/// No window is longer than a day.
pub const MAX_RESET: Duration = Duration::from_secs(24 * 3600);

/// One response's view of the quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub remaining: u32,
    /// Time until the window resets, in whole seconds on Fitbit's clock.
    pub reset: Duration,
}

/// Why a response's rate-limit headers were ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} is missing while the others are present")]
    Missing(&'static str),
    #[error("{0} is not a whole number within bounds")]
    Invalid(&'static str),
    #[error("{0} appears more than once with different values")]
    Conflicting(&'static str),
}

/// `Ok(None)` when the response carries none of the three headers.
pub fn parse(headers: &HeaderMap) -> Result<Option<RateLimit>, Malformed> {
    let names = [RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET];
    if names.iter().all(|n| !headers.contains_key(*n)) {
        return Ok(None);
    }
    let limit = number(headers, RATE_LIMIT_LIMIT, u64::from(MAX_LIMIT))?;
    let remaining = number(headers, RATE_LIMIT_REMAINING, u64::from(MAX_LIMIT))?;
    let reset = number(headers, RATE_LIMIT_RESET, MAX_RESET.as_secs())?;
    let limit = u32::try_from(limit).map_err(|_| Malformed::Invalid(RATE_LIMIT_LIMIT))?;
    let remaining =
        u32::try_from(remaining).map_err(|_| Malformed::Invalid(RATE_LIMIT_REMAINING))?;
    Ok(Some(RateLimit {
        limit,
        // "Approximate": never more remaining than the limit itself.
        remaining: remaining.min(limit),
        reset: Duration::from_secs(reset),
    }))
}

/// A header's single value as a whole number in `0..=max`.
fn number(headers: &HeaderMap, name: &'static str, max: u64) -> Result<u64, Malformed> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(Malformed::Missing(name))?;
    if values.any(|other| other != first) {
        return Err(Malformed::Conflicting(name));
    }
    digits(first.as_bytes())
        .filter(|n| *n <= max)
        .ok_or(Malformed::Invalid(name))
}

/// ASCII digits only (surrounding spaces allowed), without overflow.
fn digits(raw: &[u8]) -> Option<u64> {
    let text = raw.trim_ascii();
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `Retry-After` as delta-seconds, capped at a day. The HTTP-date form
/// would need the wall clock; it is ignored (the caller falls back).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?;
    let secs = digits(value.as_bytes())?;
    Some(Duration::from_secs(secs.min(MAX_RESET.as_secs())))
}

#[cfg(test)]
mod tests {
    use super::*;
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

    const L: &str = RATE_LIMIT_LIMIT;
    const R: &str = RATE_LIMIT_REMAINING;
    const S: &str = RATE_LIMIT_RESET;

    type Parsed = Result<Option<RateLimit>, Malformed>;

    fn ok(limit: u32, remaining: u32, reset: u64) -> Parsed {
        Ok(Some(RateLimit {
            limit,
            remaining,
            reset: Duration::from_secs(reset),
        }))
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

    #[test]
    fn retry_after_table() {
        let cases = [
            ("17", Some(17)),
            (" 0 ", Some(0)),
            ("999999999", Some(86400)),
            ("Wed, 21 Oct 2015 07:28:00 GMT", None),
            ("-5", None),
            ("", None),
        ];
        for (raw, want) in cases {
            let got = retry_after(&map(&[("retry-after", raw)]));
            assert_eq!(got, want.map(Duration::from_secs), "{raw:?}");
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
        fn well_formed_values_round_trip(limit in 0u32..=MAX_LIMIT, remaining in 0u32..=MAX_LIMIT, reset in 0u64..=86400) {
            let h = map(&[(L, &limit.to_string()), (R, &remaining.to_string()), (S, &reset.to_string())]);
            let rl = parse(&h).unwrap().unwrap();
            prop_assert_eq!(rl, RateLimit { limit, remaining: remaining.min(limit), reset: Duration::from_secs(reset) });
        }
    }
}
