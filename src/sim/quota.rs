//! The simulated application quota: `limit` requests per window, windows back
//! to back from the first spend, and the `fitbit-rate-limit-*` values to report
//! (optionally lagging the truth, as Fitbit's headers may).

use std::time::Duration;

use tokio::time::Instant;

/// What the rate-limit headers say after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QuotaView {
    pub(crate) limit: u32,
    /// As reported, which may overstate the truth by the configured lag.
    pub(crate) remaining: u32,
    /// Whole seconds until the window resets, rounded up.
    pub(crate) reset_secs: u64,
}

#[derive(Debug)]
pub(crate) struct Quota {
    limit: u32,
    window: Duration,
    lag: u32,
    /// Start of the current window; `None` until the first spend.
    start: Option<Instant>,
    used: u32,
}

impl Quota {
    pub(crate) fn new(limit: u32, window: Duration) -> Quota {
        let window = if window.is_zero() {
            Duration::from_secs(1)
        } else {
            window
        };
        Quota {
            limit,
            window,
            lag: 0,
            start: None,
            used: 0,
        }
    }

    pub(crate) fn set_lag(&mut self, lag: u32) {
        self.lag = lag;
    }

    /// Spends one unit for an API request: `Ok` with the headers to send, or
    /// `Err` with the 429's headers when the window is spent.
    pub(crate) fn try_spend(&mut self, now: Instant) -> Result<QuotaView, QuotaView> {
        self.roll(now);
        if self.used >= self.limit {
            return Err(self.view(now));
        }
        self.used += 1;
        Ok(self.view(now))
    }

    /// Another consumer of the same application spends `n` units.
    pub(crate) fn spend_other(&mut self, now: Instant, n: u32) {
        self.roll(now);
        self.used = self.used.saturating_add(n).min(self.limit);
    }

    /// Opens the first window, or moves to the window that holds `now`;
    /// windows stay aligned to the first one, like Fitbit's hours.
    fn roll(&mut self, now: Instant) {
        let Some(start) = self.start else {
            self.start = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(start);
        if elapsed < self.window {
            return;
        }
        let into_window = elapsed.as_nanos() % self.window.as_nanos();
        // Less than one window, which fits in u64 nanoseconds (584 years).
        let into_window = Duration::from_nanos(u64::try_from(into_window).unwrap_or(u64::MAX));
        self.start = Some(now - into_window);
        self.used = 0;
    }

    fn view(&self, now: Instant) -> QuotaView {
        let end = self.start.unwrap_or(now) + self.window;
        let left = end.saturating_duration_since(now);
        let reset_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let truth = self.limit - self.used;
        QuotaView {
            limit: self.limit,
            remaining: truth.saturating_add(self.lag).min(self.limit),
            reset_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn counts_down_and_rejects_when_spent() {
        let t0 = Instant::now();
        let mut q = Quota::new(2, secs(60));
        assert_eq!(q.try_spend(t0).unwrap().remaining, 1);
        assert_eq!(q.try_spend(t0).unwrap().remaining, 0);
        let rejected = q.try_spend(t0 + secs(10)).unwrap_err();
        assert_eq!((rejected.remaining, rejected.reset_secs), (0, 50));
    }

    #[test]
    fn reset_rounds_up_and_windows_stay_aligned() {
        let t0 = Instant::now();
        let mut q = Quota::new(5, secs(60));
        q.try_spend(t0).unwrap();
        let v = q.try_spend(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(v.reset_secs, 60);
        // 2.5 windows later: a fresh window that began at t0 + 120 s.
        let v = q.try_spend(t0 + secs(150)).unwrap();
        assert_eq!((v.remaining, v.reset_secs), (4, 30));
    }

    #[test]
    fn lag_overstates_remaining_but_not_the_limit() {
        let t0 = Instant::now();
        let mut q = Quota::new(3, secs(60));
        q.set_lag(2);
        assert_eq!(q.try_spend(t0).unwrap().remaining, 3);
        assert_eq!(q.try_spend(t0).unwrap().remaining, 3);
        assert_eq!(q.try_spend(t0).unwrap().remaining, 2);
        assert_eq!(q.try_spend(t0).unwrap_err().remaining, 2);
    }

    #[test]
    fn other_consumer_spends_the_same_window() {
        let t0 = Instant::now();
        let mut q = Quota::new(10, secs(60));
        q.spend_other(t0, 9);
        assert_eq!(q.try_spend(t0 + secs(1)).unwrap().remaining, 0);
        q.spend_other(t0 + secs(2), 100);
        assert!(q.try_spend(t0 + secs(3)).is_err());
        assert_eq!(q.try_spend(t0 + secs(60)).unwrap().remaining, 9);
    }

    #[test]
    fn zero_limit_always_rejects_and_zero_window_is_one_second() {
        let t0 = Instant::now();
        let mut q = Quota::new(0, Duration::ZERO);
        assert_eq!(q.try_spend(t0).unwrap_err().reset_secs, 1);
    }
}
