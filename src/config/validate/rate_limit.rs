//! The `[rate_limit]` checks: the quota and its window (`hourly_quota`
//! being the old name of a quota per hour), the header dialect and how its
//! reset is read, and the pacing bounds.

use std::time::Duration;

use super::Validator;
use crate::config::error::Problem;
use crate::config::raw::RawRateLimit;
use crate::config::{quote, Dialect, RateLimitConfig, Reset};

/// The shortest and longest quota windows the pacer handles.
pub(crate) const MIN_WINDOW: Duration = Duration::from_secs(5);
pub(crate) const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// `quota` when neither it nor `hourly_quota` is set.
const DEFAULT_QUOTA: i64 = 150;
const HOUR: Duration = Duration::from_secs(3600);

impl Validator<'_> {
    pub(super) fn rate_limit(&mut self, raw: &RawRateLimit) -> Option<RateLimitConfig> {
        let (quota, window) = self.quota_and_window(raw);
        let headers = self.dialect(raw);
        let burst = self.count("rate_limit.burst", raw.burst, 1);
        let max_wait = self.duration("rate_limit.max_wait", &raw.max_wait);
        let max_queued = self.count("rate_limit.max_queued", raw.max_queued, 1);
        let reset_margin = self.duration_or_zero("rate_limit.reset_margin", &raw.reset_margin);
        let replicas = self.count("rate_limit.replicas", raw.replicas, 1);
        if let (Some(quota), Some(n)) = (quota, replicas) {
            self.share_not_empty(quota, n, quota_key(raw));
        }
        Some(RateLimitConfig {
            quota: quota?,
            window: window?,
            headers: headers?,
            burst: burst?,
            max_wait: max_wait?,
            max_queued: max_queued?,
            reset_margin: reset_margin?,
            replicas: replicas?,
        })
    }

    /// `quota` per `window`; `hourly_quota = N` is `quota = N` with
    /// `window = "1h"`, so it may not be combined with either.
    fn quota_and_window(&mut self, raw: &RawRateLimit) -> (Option<u32>, Option<Duration>) {
        let window = match &raw.window {
            None => Some(HOUR),
            Some(text) => self.window(text),
        };
        let quota = match (raw.quota, raw.hourly_quota) {
            (Some(_), Some(hourly)) => {
                let message = "is the old name of quota (with window = \"1h\"): set only quota";
                self.problem(
                    Problem::new("rate_limit.hourly_quota", message).with_value(hourly.to_string()),
                );
                None
            }
            (None, Some(hourly)) => {
                if window.is_some_and(|w| w != HOUR) {
                    let message =
                        "is a quota per hour: with another window, set quota instead of hourly_quota";
                    self.problem(
                        Problem::new("rate_limit.hourly_quota", message)
                            .with_value(hourly.to_string()),
                    );
                }
                self.count("rate_limit.hourly_quota", hourly, 1)
            }
            (quota, None) => self.count("rate_limit.quota", quota.unwrap_or(DEFAULT_QUOTA), 1),
        };
        (quota, window)
    }

    fn window(&mut self, text: &str) -> Option<Duration> {
        let window = self.duration("rate_limit.window", text)?;
        if (MIN_WINDOW..=MAX_WINDOW).contains(&window) {
            return Some(window);
        }
        let message = "must be from 5s to 24h";
        self.problem(Problem::new("rate_limit.window", message).with_value(quote(text)));
        None
    }

    /// `headers`, defaulting by profile, and `reset` where the dialect
    /// needs it (the vendors of the `*-Reset` headers disagree on it).
    fn dialect(&mut self, raw: &RawRateLimit) -> Option<Dialect> {
        let reset = match raw.reset.as_deref() {
            None => None,
            Some(name) => match Reset::parse(name) {
                Some(reset) => Some(reset),
                None => {
                    let message = r#"must be "delta" or "epoch""#;
                    self.problem(Problem::new("rate_limit.reset", message).with_value(quote(name)));
                    return None;
                }
            },
        };
        let name = raw
            .headers
            .as_deref()
            .unwrap_or(self.profile.default_headers());
        let dialect = match Dialect::parse(name, reset) {
            Some(Ok(dialect)) => dialect,
            Some(Err(())) => {
                let message = format!(
                    r#"missing (required with headers = {}: "delta" or "epoch", as the API documents its reset)"#,
                    quote(name)
                );
                self.problem(Problem::new("rate_limit.reset", message).near("rate_limit.headers"));
                return None;
            }
            None => {
                let message = format!("must be one of {}", Dialect::NAMES);
                self.problem(Problem::new("rate_limit.headers", message).with_value(quote(name)));
                return None;
            }
        };
        if let (Some(reset), None) = (reset, dialect.reset()) {
            let message = format!(
                "ignored: headers = {} has its own reset",
                quote(dialect.name())
            );
            self.warn(Problem::new("rate_limit.reset", message).with_value(quote(reset.name())));
        }
        Some(dialect)
    }

    /// Each of `replicas` proxies spends `quota / replicas` until headers
    /// say otherwise; a share of 0 would never send at all.
    fn share_not_empty(&mut self, quota: u32, replicas: u32, quota_key: &str) {
        if replicas > quota {
            let message = format!(
                "more than {quota_key} ({quota}): each replica's share of the quota would be 0"
            );
            self.problem(
                Problem::new("rate_limit.replicas", message).with_value(replicas.to_string()),
            );
        }
    }
}

/// The key the quota was given by, for messages.
fn quota_key(raw: &RawRateLimit) -> &'static str {
    if raw.hourly_quota.is_some() {
        "rate_limit.hourly_quota"
    } else {
        "rate_limit.quota"
    }
}
