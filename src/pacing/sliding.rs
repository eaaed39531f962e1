//! Pacing without quota headers (`rate_limit.headers = "none"`): the
//! upstream's windows are not known, neither their start nor what is
//! left, so no window of `window` may ever hold more than `quota` of our
//! requests, wherever it starts. A steady pace of `window / quota` fills
//! every window exactly; there is no burst (requests sent back to back
//! would be taken from the window that follows, wherever it starts). On
//! top of the pace, a request goes only while fewer than `quota` went in
//! the last `window`. Only a 429 teaches anything: it pauses until its
//! `Retry-After`.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::budget::Allowance;

#[derive(Debug)]
pub(crate) struct Sliding {
    quota: u32,
    window: Duration,
    /// Our sends within the last `window`, oldest first.
    sent: VecDeque<Instant>,
    seq: u64,
    paused_until: Option<Instant>,
}

impl Sliding {
    pub(crate) fn new(quota: u32, window: Duration) -> Self {
        Sliding {
            quota: quota.max(1),
            window,
            sent: VecDeque::new(),
            seq: 0,
            paused_until: None,
        }
    }

    /// The steady pace that fills each window exactly.
    pub(crate) fn interval(&self) -> Duration {
        self.window / self.quota
    }

    fn forget(&mut self, now: Instant) {
        while self.sent.front().is_some_and(|t| *t + self.window <= now) {
            self.sent.pop_front();
        }
    }

    pub(crate) fn remaining(&mut self, now: Instant) -> u32 {
        self.forget(now);
        let sent = u32::try_from(self.sent.len()).unwrap_or(u32::MAX);
        self.quota.saturating_sub(sent)
    }

    pub(crate) fn allowance(&mut self, now: Instant) -> Allowance {
        if let Some(until) = self.paused_until.filter(|t| now < *t) {
            return Allowance::Closed { until };
        }
        let remaining = self.remaining(now);
        match self.sent.front() {
            Some(oldest) if remaining == 0 => Allowance::Closed {
                until: *oldest + self.window,
            },
            _ => Allowance::Open {
                remaining,
                until: now + self.window,
                // One plan for good: the pace never changes.
                generation: 0,
                seq: self.seq,
                paced: true,
            },
        }
    }

    pub(crate) fn on_send(&mut self, now: Instant) {
        self.forget(now);
        self.sent.push_back(now);
        self.seq += 1;
    }

    pub(crate) fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }

    /// Limit, what is left, and when the next unit comes back.
    pub(crate) fn view(&mut self, now: Instant) -> (u32, u32, Duration) {
        let remaining = self.remaining(now);
        let back = self.sent.front().map_or(Duration::ZERO, |t| {
            (*t + self.window).saturating_duration_since(now)
        });
        (self.quota, remaining, back)
    }

    pub(crate) fn window(&self) -> Duration {
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_window_of_the_length_holds_more_than_the_quota() {
        let t0 = Instant::now();
        let mut s = Sliding::new(3, Duration::from_secs(30));
        for i in 0..3 {
            assert!(
                matches!(s.allowance(t0), Allowance::Open { remaining, .. } if remaining == 3 - i)
            );
            s.on_send(t0);
        }
        assert_eq!(
            s.allowance(t0 + Duration::from_secs(29)),
            Allowance::Closed {
                until: t0 + Duration::from_secs(30)
            }
        );
        assert!(matches!(
            s.allowance(t0 + Duration::from_secs(30)),
            Allowance::Open { remaining: 3, .. }
        ));
        assert_eq!(s.interval(), Duration::from_secs(10));
    }
}
