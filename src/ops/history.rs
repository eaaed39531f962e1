//! Upstream sends per minute over the last hour, for the status page's
//! chart, beside what the budget planned to send in each minute. Lock-free:
//! every forwarded request records itself with one atomic update.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Length of one bucket of the chart.
pub(crate) const INTERVAL: Duration = Duration::from_secs(60);

/// Buckets kept: one hour of minutes.
pub(crate) const BUCKETS: usize = 60;

/// Per minute, the sends counted and the plan last sampled. Each slot packs
/// the minute it belongs to (high 32 bits) with its value (low 32 bits), so
/// a slot reused an hour later starts again from zero without a lock.
#[derive(Debug)]
pub(crate) struct SendHistory {
    start: Instant,
    sent: [AtomicU64; BUCKETS],
    planned: [AtomicU64; BUCKETS],
}

/// What [`SendHistory::snapshot`] returns, oldest minute first; the last
/// entry is the minute under way. `None` where nothing was recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct History {
    pub(crate) interval_secs: u64,
    pub(crate) sent: Vec<u32>,
    pub(crate) planned: Vec<Option<u32>>,
}

impl SendHistory {
    pub(crate) fn new(start: Instant) -> Self {
        SendHistory {
            start,
            sent: std::array::from_fn(|_| AtomicU64::new(0)),
            planned: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// One request sent upstream at `now`.
    pub(crate) fn record_send(&self, now: Instant) {
        let minute = self.minute(now);
        let slot = &self.sent[minute as usize % BUCKETS];
        let mut current = slot.load(Ordering::Relaxed);
        loop {
            let next = if current >> 32 == minute {
                current + 1
            } else {
                (minute << 32) | 1
            };
            match slot.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    /// What the budget plans to send in the minute under way at `now`.
    pub(crate) fn record_plan(&self, now: Instant, per_minute: u32) {
        let minute = self.minute(now);
        // One more than the plan, so that a plan of 0 reads as recorded.
        let value = (minute << 32) | (u64::from(per_minute) + 1).min(u64::from(u32::MAX));
        self.planned[minute as usize % BUCKETS].store(value, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, now: Instant) -> History {
        let last = self.minute(now);
        let first = last.saturating_sub(BUCKETS as u64 - 1).max(1);
        let read = |slots: &[AtomicU64; BUCKETS], minute: u64| {
            let v = slots[minute as usize % BUCKETS].load(Ordering::Relaxed);
            (v >> 32 == minute).then_some((v & u64::from(u32::MAX)) as u32)
        };
        let minutes = first..=last;
        History {
            interval_secs: INTERVAL.as_secs(),
            sent: minutes
                .clone()
                .map(|m| read(&self.sent, m).unwrap_or(0))
                .collect(),
            planned: minutes
                .map(|m| read(&self.planned, m).map(|p| p - 1))
                .collect(),
        }
    }

    /// Minutes since `start`, counting from 1 so that a zeroed slot is
    /// never mistaken for minute 0's.
    fn minute(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.start).as_secs() / INTERVAL.as_secs() + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn counts_per_minute_and_forgets_after_an_hour() {
        let h = SendHistory::new(Instant::now());
        h.record_send(Instant::now());
        h.record_send(Instant::now());
        h.record_plan(Instant::now(), 0);
        tokio::time::advance(INTERVAL).await;
        h.record_send(Instant::now());
        h.record_plan(Instant::now(), 7);
        let s = h.snapshot(Instant::now());
        assert_eq!(s.sent.len(), 2);
        assert_eq!(s.sent, [2, 1]);
        assert_eq!(s.planned, [Some(0), Some(7)]);

        // An hour later the same slots hold new minutes, starting from 0.
        tokio::time::advance(INTERVAL * BUCKETS as u32).await;
        h.record_send(Instant::now());
        let s = h.snapshot(Instant::now());
        assert_eq!(s.sent.len(), BUCKETS);
        assert_eq!(s.sent.iter().sum::<u32>(), 1, "{s:?}");
        assert_eq!(*s.sent.last().unwrap(), 1);
        assert!(s.planned.iter().all(Option::is_none), "{s:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_sends_are_all_counted() {
        let h = std::sync::Arc::new(SendHistory::new(Instant::now()));
        let mut threads = Vec::new();
        for _ in 0..4 {
            let h = std::sync::Arc::clone(&h);
            let now = Instant::now();
            threads.push(std::thread::spawn(move || {
                for _ in 0..10_000 {
                    h.record_send(now);
                }
            }));
        }
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(h.snapshot(Instant::now()).sent, [40_000]);
    }
}
