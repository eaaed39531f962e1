//! One pace of the pacer: a governor GCRA limiter on tokio's clock, and
//! the budget it was planned for. A new plan (a new window, a moved end,
//! less left than the sends explain) makes a new limiter; time passing
//! alone never does, so the pace holds steady.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use super::clock::{TokioClock, TokioInstant};

pub(super) type Limiter =
    RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<TokioInstant>>;

/// The limiter is rebuilt when the budget falls short of plan by more than
/// this share (or by more than one request): every answer nudges the
/// budget a little, and a rebuilt limiter costs an interval.
const RESHAPE_SHORTFALL: f64 = 0.1;

/// A window end that moved less than this is the same plan.
const SAME_END: Duration = Duration::from_secs(2);

/// The shortest interval the limiter is given: small enough not to cap a
/// large quota (a millisecond would hold a 10M/hour budget to 1000/s).
const MIN_INTERVAL: Duration = Duration::from_micros(1);

/// The limiter's interval while a window's end is not known: no cell comes
/// back before an answer re-plans.
pub(super) const NO_REFILL: Duration = Duration::from_secs(24 * 3600);

/// The limiter for one pace, and the budget it was planned for.
pub(super) struct Shape {
    pub(super) limiter: Limiter,
    pub(super) interval: Duration,
    pub(super) plan: Plan,
    /// Burst cells it started with (what the window's burst had left).
    pub(super) burst_left: u32,
}

/// A budget as the pacer planned for it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) remaining: u32,
    pub(super) until: Instant,
    pub(super) generation: u64,
    /// Requests sent when the plan was made.
    pub(super) seq: u64,
    /// A steady pace to keep (the sliding budget's), rather than spreading
    /// `remaining` to `until`.
    pub(super) steady: Option<Duration>,
}

impl Plan {
    /// `now` is what became of `self`: same window, same end, and no more
    /// missing than the sends since explain.
    pub(super) fn still_holds(&self, now: &Plan) -> bool {
        // An estimate's reading may be older than the pace (saturating).
        let sent_since = u32::try_from(now.seq.saturating_sub(self.seq)).unwrap_or(u32::MAX);
        let expected = self.remaining.saturating_sub(sent_since);
        let slack = ((f64::from(expected) * RESHAPE_SHORTFALL) as u32).max(1);
        let moved = if now.until > self.until {
            now.until - self.until
        } else {
            self.until - now.until
        };
        // An end that moved by an eighth of what is left is a new plan, so
        // short windows are re-planned for a fraction of a second.
        let left = self.until.saturating_duration_since(Instant::now());
        if self.steady.is_some() || now.steady.is_some() {
            return self.steady == now.steady && self.generation == now.generation;
        }
        self.generation == now.generation
            && moved < SAME_END.min(left / 8)
            && now.remaining + slack >= expected
    }
}

/// The longest interval governor can hold for `burst` cells: it keeps the
/// burst's span, interval × (burst − 1), in u64 nanoseconds, and a longer
/// one wraps (a window of unknown end, [`NO_REFILL`] apart, with a burst of
/// 10 million: the limiter then allowed a few hundred thousand requests,
/// and refused every one after that while the budget had millions left).
/// Capped here, a cell comes back at most this often, which the budget's
/// own count (`Allowance`) still bounds.
fn longest_interval(burst: NonZeroU32) -> Duration {
    Duration::from_nanos(u64::MAX / u64::from(burst.get()))
}

impl Shape {
    /// A limiter for `plan`: what is left of the burst (`burst_left`, of
    /// the configured `burst`) at once, the rest spread.
    pub(super) fn new(now: Instant, plan: Plan, burst_left: u32, burst: u32) -> Shape {
        // A steady pace (no quota headers) has no burst: see `sliding.rs`.
        let burst = match plan.steady {
            Some(interval) if interval != NO_REFILL => 1,
            _ => burst.min(plan.remaining).max(1),
        };
        let burst = NonZeroU32::new(burst).expect("at least 1");
        let left = burst_left.min(burst.get());
        // What is left of the burst goes at once; the rest is spread one
        // interval apart to the end (the earliest the window may end, which
        // later readings only move later).
        let spread = (plan.remaining - left).max(1);
        // The last one half an interval before the end, so that it is
        // never the instant the window closes.
        let time_left = plan.until.saturating_duration_since(now);
        let interval = plan
            .steady
            .unwrap_or_else(|| time_left * 2 / (2 * spread + 1))
            .max(MIN_INTERVAL)
            .min(longest_interval(burst));
        let quota = Quota::with_period(interval)
            .expect("interval > 0")
            .allow_burst(burst);
        let limiter = RateLimiter::direct_with_clock(quota, TokioClock);
        if let Some(used) = NonZeroU32::new(burst.get() - left) {
            let _ = limiter.check_n(used);
        }
        tracing::debug!(
            interval_ms = interval.as_millis() as u64,
            remaining = plan.remaining,
            burst = burst.get(),
            burst_left = left,
            "pace set"
        );
        Shape {
            limiter,
            interval,
            plan,
            burst_left: left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window whose end is not known yet, with a burst of ten million
    /// (benches/load's "never hold back" config): the whole burst goes at
    /// once, and nothing more until an answer re-plans. governor's span of
    /// NO_REFILL × 10M nanoseconds overflowed (a panic in debug builds; in
    /// release, after ~2.2 million requests every one was refused).
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_ten_million_with_no_refill_lets_all_of_it_through() {
        let burst = 10_000_000;
        let now = Instant::now();
        let plan = Plan {
            remaining: burst,
            until: now + Duration::from_secs(3600),
            generation: 1,
            seq: 0,
            steady: Some(NO_REFILL),
        };
        let shape = Shape::new(now, plan, u32::MAX, burst);
        let most = NonZeroU32::new(burst - 1).unwrap();
        assert_eq!(shape.limiter.check_n(most), Ok(Ok(())));
        assert!(shape.limiter.check().is_ok(), "the last cell of the burst");
        assert!(shape.limiter.check().is_err(), "nothing past the burst");
        // A cell comes back no sooner than the longest interval governor
        // can hold for this burst (over half an hour).
        tokio::time::advance(Duration::from_secs(30 * 60)).await;
        assert!(shape.limiter.check().is_err());
    }
}
