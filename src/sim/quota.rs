//! The simulated application quota: one or more policies (`limit` requests
//! per window), windows back to back from the first spend or from a chosen
//! offset, and the values to report (optionally lagging the truth, as
//! Fitbit's headers may). A request is counted only if every policy has
//! room; it then counts in all of them.

use std::time::Duration;

use tokio::time::Instant;

/// What the rate-limit headers say of one policy after a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QuotaView {
    pub(crate) name: &'static str,
    pub(crate) limit: u32,
    /// As reported, which may overstate the truth by the configured lag.
    pub(crate) remaining: u32,
    /// Whole seconds until the window resets, rounded up.
    pub(crate) reset_secs: u64,
    /// The window's length.
    pub(crate) window: Duration,
    /// When the window resets (for epoch headers).
    pub(crate) reset_at: Instant,
}

/// One policy's windows.
#[derive(Debug)]
struct Policy {
    name: &'static str,
    limit: u32,
    window: Duration,
    /// Start of the current window; `None` until the first spend.
    start: Option<Instant>,
    used: u32,
}

#[derive(Debug)]
pub(crate) struct Quota {
    policies: Vec<Policy>,
    lag: u32,
}

impl Quota {
    /// `limit` per `window`; the first window opens at `opened` (or at the
    /// first spend, when `None`).
    pub(crate) fn new(limit: u32, window: Duration, opened: Option<Instant>) -> Quota {
        Quota {
            policies: vec![Policy::new("default", limit, window, opened)],
            lag: 0,
        }
    }

    /// Adds a policy enforced alongside the first (the IETF fields report
    /// both).
    pub(crate) fn with_policy(
        mut self,
        name: &'static str,
        limit: u32,
        window: Duration,
        opened: Option<Instant>,
    ) -> Quota {
        self.policies.push(Policy::new(name, limit, window, opened));
        self
    }

    pub(crate) fn set_lag(&mut self, lag: u32) {
        self.lag = lag;
    }

    /// Spends one unit for an API request: `Ok` with every policy's view,
    /// or `Err` with them for the 429 when one is spent (the spent one first).
    pub(crate) fn try_spend(&mut self, now: Instant) -> Result<Vec<QuotaView>, Vec<QuotaView>> {
        for p in &mut self.policies {
            p.roll(now);
        }
        if let Some(spent) = self.policies.iter().position(|p| p.used >= p.limit) {
            let mut views = self.views(now);
            views.swap(0, spent);
            return Err(views);
        }
        for p in &mut self.policies {
            p.used += 1;
        }
        Ok(self.views(now))
    }

    /// Another consumer of the same application spends `n` units.
    pub(crate) fn spend_other(&mut self, now: Instant, n: u32) {
        for p in &mut self.policies {
            p.roll(now);
            p.used = p.used.saturating_add(n).min(p.limit);
        }
    }

    fn views(&self, now: Instant) -> Vec<QuotaView> {
        self.policies
            .iter()
            .map(|p| p.view(now, self.lag))
            .collect()
    }
}

impl Policy {
    fn new(name: &'static str, limit: u32, window: Duration, opened: Option<Instant>) -> Self {
        let window = if window.is_zero() {
            Duration::from_secs(1)
        } else {
            window
        };
        Policy {
            name,
            limit,
            window,
            start: opened,
            used: 0,
        }
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

    fn view(&self, now: Instant, lag: u32) -> QuotaView {
        let end = self.start.unwrap_or(now) + self.window;
        let left = end.saturating_duration_since(now);
        let reset_secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
        let truth = self.limit.saturating_sub(self.used);
        QuotaView {
            name: self.name,
            limit: self.limit,
            remaining: truth.saturating_add(lag).min(self.limit),
            reset_secs,
            window: self.window,
            reset_at: end,
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
        let mut q = Quota::new(2, secs(60), None);
        assert_eq!(q.try_spend(t0).unwrap()[0].remaining, 1);
        assert_eq!(q.try_spend(t0).unwrap()[0].remaining, 0);
        let rejected = q.try_spend(t0 + secs(10)).unwrap_err();
        assert_eq!((rejected[0].remaining, rejected[0].reset_secs), (0, 50));
    }

    #[test]
    fn reset_rounds_up_and_windows_stay_aligned() {
        let t0 = Instant::now();
        let mut q = Quota::new(5, secs(60), None);
        q.try_spend(t0).unwrap();
        let v = q.try_spend(t0 + Duration::from_millis(500)).unwrap();
        assert_eq!(v[0].reset_secs, 60);
        // 2.5 windows later: a fresh window that began at t0 + 120 s.
        let v = q.try_spend(t0 + secs(150)).unwrap();
        assert_eq!((v[0].remaining, v[0].reset_secs), (4, 30));
    }

    #[test]
    fn a_window_opened_earlier_resets_on_its_own_clock() {
        let t0 = Instant::now();
        // Opened 27 s before t0: 3 s left.
        let mut q = Quota::new(5, secs(30), Some(t0 - secs(27)));
        assert_eq!(q.try_spend(t0).unwrap()[0].reset_secs, 3);
        assert_eq!(q.try_spend(t0 + secs(3)).unwrap()[0].remaining, 4);
    }

    #[test]
    fn every_policy_must_have_room() {
        let t0 = Instant::now();
        let mut q = Quota::new(10, secs(10), None).with_policy("slow", 2, secs(60), None);
        q.try_spend(t0).unwrap();
        let v = q.try_spend(t0).unwrap();
        assert_eq!((v[0].remaining, v[1].remaining), (8, 0));
        let refused = q.try_spend(t0 + secs(20)).unwrap_err();
        assert_eq!((refused[0].name, refused[0].reset_secs), ("slow", 40));
    }

    #[test]
    fn lag_overstates_remaining_but_not_the_limit() {
        let t0 = Instant::now();
        let mut q = Quota::new(3, secs(60), None);
        q.set_lag(2);
        assert_eq!(q.try_spend(t0).unwrap()[0].remaining, 3);
        assert_eq!(q.try_spend(t0).unwrap()[0].remaining, 3);
        assert_eq!(q.try_spend(t0).unwrap()[0].remaining, 2);
        assert_eq!(q.try_spend(t0).unwrap_err()[0].remaining, 2);
    }

    #[test]
    fn other_consumer_spends_the_same_window() {
        let t0 = Instant::now();
        let mut q = Quota::new(10, secs(60), None);
        q.spend_other(t0, 9);
        assert_eq!(q.try_spend(t0 + secs(1)).unwrap()[0].remaining, 0);
        q.spend_other(t0 + secs(2), 100);
        assert!(q.try_spend(t0 + secs(3)).is_err());
        assert_eq!(q.try_spend(t0 + secs(60)).unwrap()[0].remaining, 9);
    }

    #[test]
    fn zero_limit_always_rejects_and_zero_window_is_one_second() {
        let t0 = Instant::now();
        let mut q = Quota::new(0, Duration::ZERO, None);
        assert_eq!(q.try_spend(t0).unwrap_err()[0].reset_secs, 1);
    }
}
