//! The circuit breaker in front of Redis: after a few failed calls in a
//! row the connection is dropped and nothing calls Redis for a few seconds,
//! so that a dead or stalled Redis costs requests nothing; then the
//! connector tries a fresh connection, and its success closes the breaker.
//! Pure bookkeeping on tokio time, tested alone.

use std::time::Duration;

/// Calls that fail in a row before the breaker opens.
pub(crate) const FAILURES_TO_OPEN: u32 = 3;
/// Nothing calls Redis for this long after the breaker opens.
pub(crate) const OPEN_FOR: Duration = Duration::from_secs(3);
/// Failed connection attempts are retried after 1 s, doubling up to this,
/// so that a Redis that comes back is rejoined within seconds.
const RETRY_MAX: Duration = Duration::from_secs(8);
/// A refused password is retried this slowly: only an operator fixes it.
const AUTH_RETRY: Duration = Duration::from_secs(10);

/// Whether calls may go to Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail at once, without touching Redis, until a connection
    /// attempt succeeds.
    Open,
}

impl BreakerState {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
        }
    }
}

/// Counts failures in a row; starts open (nothing to call yet).
#[derive(Debug)]
pub(crate) struct Breaker {
    failures: u32,
    state: BreakerState,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            failures: 0,
            state: BreakerState::Open,
        }
    }
}

impl Breaker {
    #[cfg(test)]
    fn state(&self) -> BreakerState {
        self.state
    }

    /// A fresh connection works: calls may go through again.
    pub(crate) fn close(&mut self) {
        self.failures = 0;
        self.state = BreakerState::Closed;
    }

    pub(crate) fn success(&mut self) {
        self.failures = 0;
    }

    /// Counts a failed call; `true` when this one opened the breaker.
    pub(crate) fn failure(&mut self) -> bool {
        self.failures = self.failures.saturating_add(1);
        let opens = self.state == BreakerState::Closed && self.failures >= FAILURES_TO_OPEN;
        if opens {
            self.state = BreakerState::Open;
        }
        opens
    }
}

/// How long the connector waits after its `attempts`-th failed connection
/// attempt in a row (from 1).
pub(crate) fn retry_delay(attempts: u32, auth_refused: bool) -> Duration {
    if auth_refused {
        return AUTH_RETRY;
    }
    let doublings = attempts.saturating_sub(1).min(8);
    Duration::from_secs(1)
        .saturating_mul(1 << doublings)
        .min(RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_three_failures_in_a_row_and_closes_on_a_connection() {
        let mut b = Breaker::default();
        assert_eq!(b.state(), BreakerState::Open, "nothing to call yet");
        assert!(!b.failure(), "an open breaker does not open again");
        b.close();
        assert!(!b.failure());
        assert!(!b.failure());
        b.success();
        assert!(!b.failure());
        assert!(!b.failure());
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.failure(), "the third in a row opens it");
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.failure());
        b.close();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(!b.failure(), "a fresh connection starts the count over");
    }

    #[test]
    fn connection_retries_back_off_from_one_second_to_eight() {
        let want = [1, 2, 4, 8, 8, 8];
        for (i, secs) in want.iter().enumerate() {
            let attempt = i as u32 + 1;
            assert_eq!(retry_delay(attempt, false), Duration::from_secs(*secs));
        }
        assert_eq!(retry_delay(u32::MAX, false), RETRY_MAX);
        assert_eq!(retry_delay(1, true), AUTH_RETRY);
    }
}
