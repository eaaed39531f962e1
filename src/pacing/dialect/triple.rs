//! The `*-Limit`, `*-Remaining`, `*-Reset` triples: Fitbit's
//! `fitbit-rate-limit-*` (reset in seconds), and `RateLimit-*`,
//! `X-RateLimit-*`, `X-Rate-Limit-*`, whose reset is seconds from now or a
//! Unix time depending on the vendor (`rate_limit.reset`).

use std::time::Duration;

use http::HeaderMap;

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

/// `Ok(None)` when the response carries none of the three headers. An
/// epoch reset is read against `upstream_now` (the answer's `Date`).
pub(crate) fn read(
    dialect: Dialect,
    headers: &HeaderMap,
    upstream_now: &dyn Fn() -> Duration,
) -> Result<Option<RateLimit>, Malformed> {
    let Some(([l, r, s], unit)) = names(dialect) else {
        return Ok(None);
    };
    if [l, r, s].iter().all(|n| !headers.contains_key(*n)) {
        return Ok(None);
    }
    let limit = number(headers, l, u64::from(MAX_LIMIT))?;
    let remaining = number(headers, r, u64::from(MAX_LIMIT))?;
    let reset = match unit {
        Reset::Delta => number(headers, s, MAX_RESET.as_secs())?,
        Reset::Epoch => {
            let at = number(headers, s, u64::MAX)?;
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
