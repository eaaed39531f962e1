//! Reading the upstream's rate-limit headers in the configured dialect
//! (`rate_limit.headers`): the `*-Limit`/`-Remaining`/`-Reset` triples of
//! Fitbit and the vendors (`triple.rs`), the IETF structured fields
//! (`ietf.rs`), and `Retry-After` in both its forms. Small pure functions
//! that never panic and cap every value, since the text comes from the
//! network; `own.rs` writes the proxy's own view in the same dialect.

mod ietf;
pub(crate) mod own;
mod triple;

use std::time::Duration;

use http::header::{DATE, RETRY_AFTER};
use http::HeaderMap;

use crate::config::Dialect;
use crate::error::ceil_secs;
use crate::pacing::wallclock;

/// No application quota is larger than this; bigger values are nonsense.
pub const MAX_LIMIT: u32 = 10_000_000;
/// No window is longer than a day.
pub const MAX_RESET: Duration = Duration::from_secs(24 * 3600);

/// One response's view of one quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub remaining: u32,
    /// Time until the window resets (or more quota comes), in whole
    /// seconds on the upstream's clock.
    pub reset: Duration,
}

/// One quota policy as an answer reports it: the IETF fields may list
/// several (10 a second and 1,000 a day), each a budget of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The policy's name (`""` for the dialects with a single quota).
    pub name: String,
    pub rate: RateLimit,
    /// The window's length, when the answer says it (IETF `w`).
    pub window: Option<Duration>,
}

/// Why a response's rate-limit headers (or one of them) were ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} is missing while the others are present")]
    Missing(&'static str),
    #[error("{0} is not a whole number within bounds")]
    Invalid(&'static str),
    #[error("{0} appears more than once with different values")]
    Conflicting(&'static str),
    #[error("{0} is not a valid structured field: {1}")]
    Structured(&'static str, &'static str),
}

/// The policies an answer reports in `dialect`, and what was wrong with
/// its headers if anything (a malformed field is ignored, never fatal).
pub fn read(dialect: Dialect, headers: &HeaderMap) -> (Vec<Policy>, Option<Malformed>) {
    let single = |parsed: Result<Option<RateLimit>, Malformed>| match parsed {
        Ok(rate) => (rate.map(Policy::single).into_iter().collect(), None),
        Err(err) => (Vec::new(), Some(err)),
    };
    match dialect {
        Dialect::None => (Vec::new(), None),
        Dialect::Ietf => ietf::read(headers),
        Dialect::Fitbit => single(parse(headers)),
        other => single(triple::read(other, headers, &|| upstream_now(headers))),
    }
}

impl Policy {
    fn single(rate: RateLimit) -> Policy {
        Policy {
            name: String::new(),
            rate,
            window: None,
        }
    }
}

/// The `fitbit-rate-limit-*` triple; `Ok(None)` when the response carries
/// none of the three headers.
pub fn parse(headers: &HeaderMap) -> Result<Option<RateLimit>, Malformed> {
    triple::read(Dialect::Fitbit, headers, &wallclock::unix_now)
}

/// The upstream's "now": its `Date` header when it sends one (its clock,
/// the one its epoch times are on), else ours.
fn upstream_now(headers: &HeaderMap) -> Duration {
    headers
        .get(DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(wallclock::parse_http_date)
        .unwrap_or_else(wallclock::unix_now)
}

/// ASCII digits only (surrounding spaces allowed), without overflow.
fn digits(raw: &[u8]) -> Option<u64> {
    let text = raw.trim_ascii();
    if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// `Retry-After` in either form, delay-seconds or an HTTP-date (read
/// against the answer's `Date`, else our clock), capped at a day; a date
/// in the past is no wait at all.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?;
    if let Some(secs) = digits(value.as_bytes()) {
        return Some(Duration::from_secs(secs.min(MAX_RESET.as_secs())));
    }
    let at = wallclock::parse_http_date(value.to_str().ok()?)?;
    // Whole seconds, rounded up: never back before the date.
    let wait = ceil_secs(at.saturating_sub(upstream_now(headers)));
    Some(Duration::from_secs(wait).min(MAX_RESET))
}

#[cfg(test)]
mod tests;
