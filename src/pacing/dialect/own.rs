//! The proxy's own view of the quota, written on its 429s in the names of
//! the configured dialect, so that a client reads one set of headers
//! whether the upstream or the proxy refused it. Every number is the
//! view's, rounded once, so headers, body and `Retry-After` agree.

use http::{HeaderMap, HeaderName, HeaderValue};

use super::ietf::{RATELIMIT, RATELIMIT_POLICY};
use super::triple;
use crate::config::{Dialect, Reset};
use crate::error::QuotaView;
use crate::pacing::wallclock;

/// Adds `view` to `headers` as the upstream would have sent it.
pub(crate) fn write(dialect: Dialect, view: &QuotaView, headers: &mut HeaderMap) {
    if let Some(([l, r, s], unit)) = triple::names(dialect) {
        let reset = match unit {
            Reset::Delta => view.reset_secs,
            Reset::Epoch => wallclock::unix_now().as_secs() + view.reset_secs,
        };
        headers.insert(HeaderName::from_static(l), HeaderValue::from(view.limit));
        headers.insert(
            HeaderName::from_static(r),
            HeaderValue::from(view.remaining),
        );
        headers.insert(HeaderName::from_static(s), HeaderValue::from(reset));
        return;
    }
    if dialect == Dialect::Ietf {
        let window = view
            .window
            .map(|w| format!(";w={}", w.as_secs()))
            .unwrap_or_default();
        let policy = format!("\"proxy\";q={}{window}", view.limit);
        let current = format!("\"proxy\";r={};t={}", view.remaining, view.reset_secs);
        for (name, value) in [(RATELIMIT_POLICY, policy), (RATELIMIT, current)] {
            if let Ok(value) = HeaderValue::try_from(value) {
                headers.insert(HeaderName::from_static(name), value);
            }
        }
    }
}
