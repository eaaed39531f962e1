//! A governor clock on tokio's time, so that paused-time tests control the
//! limiter like every other timer (governor's default clock is real time).

use std::ops::Add;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use tokio::time::Instant;

/// `tokio::time::Instant` as a governor reference point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(pub Instant);

impl Add<Nanos> for TokioInstant {
    type Output = TokioInstant;
    fn add(self, rhs: Nanos) -> TokioInstant {
        TokioInstant(self.0 + std::time::Duration::from_nanos(rhs.as_u64()))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_duration_since(earlier.0))
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        let d = std::time::Duration::from_nanos(duration.as_u64());
        TokioInstant(self.0.checked_sub(d).unwrap_or(self.0))
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn follows_paused_time() {
        let clock = TokioClock;
        let a = clock.now();
        tokio::time::advance(Duration::from_secs(5)).await;
        let b = clock.now();
        assert_eq!(b.duration_since(a), Nanos::from(Duration::from_secs(5)));
        assert_eq!(a.duration_since(b), Nanos::from(0u64));
        assert_eq!(a + Nanos::from(Duration::from_secs(5)), b);
        assert_eq!(b.saturating_sub(Nanos::from(Duration::from_secs(5))), a);
    }
}
