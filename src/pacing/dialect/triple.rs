//! The `*-Limit`, `*-Remaining`, `*-Reset` triples: Fitbit's
//! `fitbit-rate-limit-*` (reset in seconds), and `RateLimit-*`,
//! `X-RateLimit-*`, `X-Rate-Limit-*`, whose reset is seconds from now or a
//! Unix time depending on the vendor (`rate_limit.reset`).

use std::time::Duration;

use http::{HeaderMap, HeaderName};

use super::{digits, Malformed, RateLimit, MAX_LIMIT, MAX_RESET};
use crate::config::{Dialect, Reset};
use crate::profile::fitbit::{RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET};

/// The three header names of a triple dialect (lower case, as `http`
/// stores them), and how its reset is read.
pub(crate) fn names(dialect: Dialect) -> Option<([&'static str; 3], Reset)> {
    match dialect {
        Dialect::Fitbit => Some((
            [RATE_LIMIT_LIMIT, RATE_LIMIT_REMAINING, RATE_LIMIT_RESET],
            Reset::Delta,
        )),
        Dialect::RateLimit(reset) => Some((
            ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"],
            reset,
        )),
        Dialect::XRateLimit(reset) => Some((
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset",
            ],
            reset,
        )),
        Dialect::XRateLimitDash(reset) => Some((
            [
                "x-rate-limit-limit",
                "x-rate-limit-remaining",
                "x-rate-limit-reset",
            ],
            reset,
        )),
        Dialect::Ietf | Dialect::None => None,
    }
}

/// The names of [`names`] as `HeaderName`s made at compile time: a lookup
/// by `&str` parses and lower-cases the name first, on every answer.
fn header_names(dialect: Dialect) -> Option<[HeaderName; 3]> {
    const FITBIT: [HeaderName; 3] = [
        HeaderName::from_static(RATE_LIMIT_LIMIT),
        HeaderName::from_static(RATE_LIMIT_REMAINING),
        HeaderName::from_static(RATE_LIMIT_RESET),
    ];
    const RATELIMIT: [HeaderName; 3] = [
        HeaderName::from_static("ratelimit-limit"),
        HeaderName::from_static("ratelimit-remaining"),
        HeaderName::from_static("ratelimit-reset"),
    ];
    const X_RATELIMIT: [HeaderName; 3] = [
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderName::from_static("x-ratelimit-reset"),
    ];
    const X_RATE_LIMIT: [HeaderName; 3] = [
        HeaderName::from_static("x-rate-limit-limit"),
        HeaderName::from_static("x-rate-limit-remaining"),
        HeaderName::from_static("x-rate-limit-reset"),
    ];
    match dialect {
        Dialect::Fitbit => Some(FITBIT),
        Dialect::RateLimit(_) => Some(RATELIMIT),
        Dialect::XRateLimit(_) => Some(X_RATELIMIT),
        Dialect::XRateLimitDash(_) => Some(X_RATE_LIMIT),
        Dialect::Ietf | Dialect::None => None,
    }
}

/// `Ok(None)` when the response carries none of the three headers. An
/// epoch reset is read against `upstream_now` (the answer's `Date`).
pub(crate) fn read(
    dialect: Dialect,
    headers: &HeaderMap,
    upstream_now: &dyn Fn() -> Duration,
) -> Result<Option<RateLimit>, Malformed> {
    let (Some(([l, r, s], unit)), Some([hl, hr, hs])) = (names(dialect), header_names(dialect))
    else {
        return Ok(None);
    };
    if [&hl, &hr, &hs].iter().all(|n| !headers.contains_key(*n)) {
        return Ok(None);
    }
    let limit = number(headers, (&hl, l), u64::from(MAX_LIMIT))?;
    let remaining = number(headers, (&hr, r), u64::from(MAX_LIMIT))?;
    let reset = match unit {
        Reset::Delta => number(headers, (&hs, s), MAX_RESET.as_secs())?,
        Reset::Epoch => {
            let at = number(headers, (&hs, s), u64::MAX)?;
            let delta = at.saturating_sub(upstream_now().as_secs());
            Some(delta)
                .filter(|d| *d <= MAX_RESET.as_secs())
                .ok_or(Malformed::Invalid(s))?
        }
    };
    let limit = u32::try_from(limit).map_err(|_| Malformed::Invalid(l))?;
    let remaining = u32::try_from(remaining).map_err(|_| Malformed::Invalid(r))?;
    Ok(Some(RateLimit {
        limit,
        // "Approximate": never more remaining than the limit itself.
        remaining: remaining.min(limit),
        reset: Duration::from_secs(reset),
    }))
}

/// A header's single value as a whole number in `0..=max`.
fn number(
    headers: &HeaderMap,
    (header, name): (&HeaderName, &'static str),
    max: u64,
) -> Result<u64, Malformed> {
    let mut values = headers.get_all(header).iter();
    let first = values.next().ok_or(Malformed::Missing(name))?;
    if values.any(|other| other != first) {
        return Err(Malformed::Conflicting(name));
    }
    digits(first.as_bytes())
        .filter(|n| *n <= max)
        .ok_or(Malformed::Invalid(name))
}

#[cfg(test)]
mod names_tests {
    use super::*;

    #[test]
    fn the_compiled_names_are_the_names() {
        for reset in [Reset::Delta, Reset::Epoch] {
            for dialect in [
                Dialect::Fitbit,
                Dialect::RateLimit(reset),
                Dialect::XRateLimit(reset),
                Dialect::XRateLimitDash(reset),
                Dialect::Ietf,
                Dialect::None,
            ] {
                let strs = names(dialect).map(|(n, _)| n.map(str::to_owned));
                let compiled = header_names(dialect).map(|n| n.map(|h| h.as_str().to_owned()));
                assert_eq!(strs, compiled, "{dialect:?}");
            }
        }
    }
}
