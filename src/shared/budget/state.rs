//! What a replica knows of the shared budget: the last state a script
//! returned, placed on this process's clock, and from it the share of
//! what is left that this replica may send alone while Redis cannot be
//! reached. Pure: every function takes `now`, tested without Redis.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::QuotaView;
use crate::pacing::Resume;

/// The budget as a script last returned it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Snapshot {
    /// When the reply came, on this process's clock, and Redis's time
    /// (ms) in it: together they place Redis times on tokio's clock.
    pub(crate) at: Instant,
    pub(crate) redis_now: i64,
    pub(crate) limit: u32,
    pub(crate) granted: u32,
    pub(crate) reset: i64,
    pub(crate) low: i64,
    pub(crate) len: i64,
    pub(crate) settled: bool,
    pub(crate) next_slot: i64,
    pub(crate) window: u64,
}

/// A script's reply: what it says, one number, then the budget.
pub(crate) type Reply = (String, i64, i64, i64, i64, i64, i64, i64, i64, i64, i64);

impl Snapshot {
    pub(crate) fn from_reply(at: Instant, r: &Reply) -> Snapshot {
        let clamp = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Snapshot {
            at,
            redis_now: r.2,
            limit: clamp(r.3),
            granted: clamp(r.4),
            reset: r.5,
            low: r.6,
            len: r.7,
            settled: r.8 == 1,
            next_slot: r.9,
            window: u64::try_from(r.10).unwrap_or(0),
        }
    }

    /// A Redis time (ms) on this process's clock.
    pub(crate) fn local(&self, redis_ms: i64) -> Instant {
        let delta = Duration::from_millis(redis_ms.abs_diff(self.redis_now));
        if redis_ms >= self.redis_now {
            self.at + delta
        } else {
            self.at.checked_sub(delta).unwrap_or(self.at)
        }
    }

    /// A time on this process's clock as Redis time (ms).
    pub(crate) fn redis_ms(&self, local: Instant) -> i64 {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        if local >= self.at {
            self.redis_now.saturating_add(ms(local - self.at))
        } else {
            self.redis_now.saturating_sub(ms(self.at - local))
        }
    }

    /// The window's length, when known.
    pub(crate) fn window_len(&self) -> Option<Duration> {
        (self.len > 0).then(|| Duration::from_millis(self.len.unsigned_abs()))
    }

    /// The quota as this snapshot shows it at `now`.
    pub(crate) fn view(&self, now: Instant) -> QuotaView {
        let reset = self.local(self.reset).saturating_duration_since(now);
        QuotaView {
            window: self.window_len(),
            ..QuotaView::new(self.limit, self.limit.saturating_sub(self.granted), reset)
        }
    }

    /// What this replica may send alone of the window under way, one of
    /// `replicas` doing the same: `floor(left / replicas)`, where `left`
    /// is what the snapshot left, less what the group could have sent since
    /// at the pace it then had (the snapshot may be a second old). `None`
    /// when the window is over or was never known: the replica then keeps
    /// to `limit / replicas` from the next window it sees.
    pub(crate) fn fallback(&self, now: Instant, replicas: u32, margin: Duration) -> Option<Resume> {
        let end = self.local(self.reset);
        if !self.settled || now >= end + margin {
            return None;
        }
        let left = self.limit.saturating_sub(self.granted);
        let from = self.next_slot.max(self.redis_now);
        let interval = (self.low - from) / i64::from(left.max(1));
        let since =
            i64::try_from(now.saturating_duration_since(self.at).as_millis()).unwrap_or(i64::MAX);
        let maybe_sent = if interval > 0 {
            since.saturating_add(interval - 1) / interval
        } else {
            i64::from(left)
        };
        let left = i64::from(left).saturating_sub(maybe_sent).max(0);
        let share = left / i64::from(replicas.max(1));
        Some(Resume {
            limit: self.limit,
            left: u32::try_from(share).unwrap_or(0),
            end,
            end_low: self.local(self.low),
            window: self.window_len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(at: Instant) -> Snapshot {
        // 60 per 30 s, 20 granted, 15 s left, the next slot now.
        Snapshot {
            at,
            redis_now: 1_000_000,
            limit: 60,
            granted: 20,
            reset: 1_015_000,
            low: 1_014_000,
            len: 30_000,
            settled: true,
            next_slot: 1_000_000,
            window: 3,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_fresh_snapshot_leaves_each_replica_its_part_of_what_is_left() {
        let now = Instant::now();
        let s = snapshot(now);
        let r = s.fallback(now, 3, Duration::from_secs(2)).unwrap();
        assert_eq!((r.limit, r.left), (60, 13), "floor(40 / 3)");
        assert_eq!(r.end, now + Duration::from_secs(15));
        assert_eq!(r.end_low, now + Duration::from_secs(14));
        assert_eq!(r.window, Some(Duration::from_secs(30)));
        assert_eq!(s.redis_ms(now + Duration::from_millis(5)), 1_000_005);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_snapshot_counts_what_the_group_may_have_sent_since() {
        let at = Instant::now();
        let s = snapshot(at);
        // 40 over 14 s: one every 350 ms; 1 s later up to 3 may have gone.
        let r = s
            .fallback(at + Duration::from_secs(1), 3, Duration::from_secs(2))
            .unwrap();
        assert_eq!(r.left, 12, "floor(37 / 3)");
    }

    #[tokio::test(start_paused = true)]
    async fn an_ended_or_unknown_window_leaves_no_share_of_it() {
        let at = Instant::now();
        let s = snapshot(at);
        assert!(s
            .fallback(at + Duration::from_secs(17), 3, Duration::from_secs(2))
            .is_none());
        let unknown = Snapshot {
            settled: false,
            ..snapshot(at)
        };
        assert!(unknown.fallback(at, 3, Duration::from_secs(2)).is_none());
        let spent = Snapshot {
            granted: 60,
            ..snapshot(at)
        };
        assert_eq!(
            spent.fallback(at, 3, Duration::from_secs(2)).unwrap().left,
            0
        );
    }
}
