//! The quota budget of one upstream application: limit, what is left, and
//! when the window resets. It counts the proxy's own requests and reads the
//! upstream's headers, and believes whichever leaves less (SPEC §6). Pure
//! state: every method takes `now`, so tests drive it without a clock.

use std::time::Duration;

use tokio::time::Instant;

use super::headers::RateLimit;

/// Two views of a window's end closer than this are the same window.
const SAME_WINDOW: Duration = Duration::from_secs(3);

/// Without a `Retry-After` or reset header, an upstream 429 pauses this long.
const DEFAULT_429_PAUSE: Duration = Duration::from_secs(60);

/// The freshest header reading in the current window.
#[derive(Debug, Clone, Copy)]
struct Reading {
    remaining: u32,
    /// The send sequence number of the request it answered.
    seq: u64,
}

#[derive(Debug)]
pub struct Budget {
    limit: u32,
    /// When the current window ends (no margin), on our clock.
    window_end: Instant,
    /// The window's length, learned from `-reset`; assumed an hour before.
    window_len: Duration,
    /// Requests sent in the current window, by our own count.
    sent: u32,
    /// Requests sent ever; each send gets the next number.
    seq: u64,
    /// `seq` when the current window began: older answers describe an
    /// older window.
    window_first_seq: u64,
    reading: Option<Reading>,
    /// After an upstream 429: nothing is sent before this.
    paused_until: Option<Instant>,
    /// Bumped at every new window (the limiter hands out a fresh burst).
    generation: u64,
    margin: Duration,
}

/// What the budget allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// `remaining` may be spread until `window_end`.
    Open {
        remaining: u32,
        window_end: Instant,
        generation: u64,
    },
    /// Nothing may be sent before this instant.
    Closed { until: Instant },
}

impl Budget {
    /// Before any headers: `hourly_quota` for an hour from `now`.
    pub fn new(hourly_quota: u32, margin: Duration, now: Instant) -> Self {
        let window_len = Duration::from_secs(3600);
        Budget {
            limit: hourly_quota,
            window_end: now + window_len,
            window_len,
            sent: 0,
            seq: 0,
            window_first_seq: 0,
            reading: None,
            paused_until: None,
            generation: 0,
            margin,
        }
    }

    /// Moves into a new window once the old one ended (plus the margin):
    /// the own count starts again, readings of the old window are dropped.
    fn roll(&mut self, now: Instant) {
        if now < self.window_end + self.margin {
            return;
        }
        while self.window_end + self.margin <= now {
            self.window_end += self.window_len;
        }
        self.sent = 0;
        self.reading = None;
        self.window_first_seq = self.seq;
        self.generation += 1;
    }

    /// Left in this window: the lower of our count and the freshest header,
    /// less what we sent after the request that header answered.
    pub fn remaining(&mut self, now: Instant) -> u32 {
        self.roll(now);
        let own = self.limit.saturating_sub(self.sent);
        match self.reading {
            Some(r) => {
                let since = u32::try_from(self.seq - r.seq).unwrap_or(u32::MAX);
                own.min(r.remaining.saturating_sub(since))
            }
            None => own,
        }
    }

    pub fn allowance(&mut self, now: Instant) -> Allowance {
        if let Some(until) = self.paused_until.filter(|t| now < *t) {
            return Allowance::Closed { until };
        }
        self.paused_until = None;
        match self.remaining(now) {
            0 => Allowance::Closed {
                until: self.window_end + self.margin,
            },
            remaining => Allowance::Open {
                remaining,
                window_end: self.window_end,
                generation: self.generation,
            },
        }
    }

    /// Counts a request about to be sent; returns its sequence number.
    pub fn on_send(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.sent += 1;
        self.seq += 1;
        self.seq
    }

    /// Reads an answer's headers. `seq` is the request's send number.
    pub fn observe(&mut self, now: Instant, seq: u64, rl: RateLimit) {
        self.roll(now);
        if seq <= self.window_first_seq {
            return; // sent in an earlier window: says nothing of this one
        }
        let end = now + rl.reset;
        if end + SAME_WINDOW < self.window_end || self.window_end + SAME_WINDOW < end {
            // The first reading of a window, or the proxy's guess was off:
            // the upstream's reset is the truth.
            if let Some(start) = self.window_end.checked_sub(self.window_len) {
                if end > start {
                    self.window_len = (end - start).max(Duration::from_secs(1));
                }
            }
        }
        self.window_end = end;
        self.limit = rl.limit;
        if self.reading.is_none_or(|r| seq >= r.seq) {
            self.reading = Some(Reading {
                remaining: rl.remaining,
                seq,
            });
        }
    }

    /// An upstream 429 (P5): nothing more until the reset (from the
    /// headers, else `Retry-After`) plus the margin.
    pub fn on_rejected(
        &mut self,
        now: Instant,
        rl: Option<RateLimit>,
        retry_after: Option<Duration>,
    ) {
        let wait = rl
            .map(|r| r.reset)
            .or(retry_after)
            .unwrap_or(DEFAULT_429_PAUSE);
        let until = now + wait + self.margin;
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
        if let Some(rl) = rl {
            // This window is spent, whatever the counts said.
            self.limit = rl.limit;
            self.window_end = now + rl.reset;
            self.sent = self.limit;
        }
    }

    /// The window's length as last learned.
    pub fn window_len(&self) -> Duration {
        self.window_len
    }

    /// The proxy's own view, for its 429 answers and the metrics.
    pub fn view(&mut self, now: Instant) -> (u32, u32, Duration) {
        let remaining = self.remaining(now);
        (
            self.limit,
            remaining,
            self.window_end.saturating_duration_since(now),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MARGIN: Duration = Duration::from_secs(2);

    fn rl(limit: u32, remaining: u32, reset: u64) -> RateLimit {
        RateLimit {
            limit,
            remaining,
            reset: Duration::from_secs(reset),
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[tokio::test(start_paused = true)]
    async fn assumes_the_hourly_quota_until_headers_arrive() {
        let t0 = Instant::now();
        let mut b = Budget::new(150, MARGIN, t0);
        assert_eq!(b.remaining(t0), 150);
        let seq = b.on_send(t0);
        assert_eq!(b.remaining(t0), 149);
        // The upstream says: 30 per window, 29 left, 60 s to go.
        b.observe(t0, seq, rl(30, 29, 60));
        assert_eq!(b.remaining(t0), 29);
        assert_eq!(b.view(t0), (30, 29, secs(60)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_lower_of_own_count_and_headers_wins() {
        let t0 = Instant::now();
        let mut b = Budget::new(30, MARGIN, t0);
        let first = b.on_send(t0);
        b.observe(t0, first, rl(30, 29, 60));
        // Lagging headers: 5 more sends, the answers still say 29.
        let seqs: Vec<u64> = (0..5).map(|_| b.on_send(t0)).collect();
        for s in &seqs {
            b.observe(t0, *s, rl(30, 29, 60));
        }
        assert_eq!(b.remaining(t0), 24, "own count: 30 - 6");
        // Another consumer: the header falls faster than our count.
        let s = b.on_send(t0);
        b.observe(t0, s, rl(30, 10, 59));
        assert_eq!(b.remaining(t0), 10);
        // Two more sent, not answered yet: they are taken off the header.
        b.on_send(t0);
        b.on_send(t0);
        assert_eq!(b.remaining(t0), 8);
        // An older answer arriving late does not replace a fresher one.
        b.observe(t0, first, rl(30, 29, 60));
        assert_eq!(b.remaining(t0), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_window_starts_only_a_margin_after_the_reset() {
        let t0 = Instant::now();
        let mut b = Budget::new(30, MARGIN, t0);
        let s = b.on_send(t0);
        b.observe(t0, s, rl(3, 2, 10));
        b.on_send(t0);
        b.on_send(t0);
        assert_eq!(
            b.allowance(t0),
            Allowance::Closed {
                until: t0 + secs(12)
            }
        );
        assert!(matches!(
            b.allowance(t0 + secs(11)),
            Allowance::Closed { .. }
        ));
        let Allowance::Open {
            remaining,
            window_end,
            generation,
        } = b.allowance(t0 + secs(12))
        else {
            panic!("window did not roll");
        };
        assert_eq!((remaining, generation), (3, 1));
        assert_eq!(
            window_end,
            t0 + secs(20),
            "the next window is as long as the last"
        );
        // An answer to a request of the old window says nothing of this one.
        b.observe(t0 + secs(12), s, rl(3, 0, 0));
        assert_eq!(b.remaining(t0 + secs(12)), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_window_length_is_learned_from_reset() {
        let t0 = Instant::now();
        let mut b = Budget::new(150, MARGIN, t0);
        let s = b.on_send(t0);
        b.observe(t0, s, rl(20, 19, 45));
        // Spend it all; the next window is 45 s long, not an hour.
        for _ in 0..19 {
            b.on_send(t0);
        }
        let Allowance::Open { window_end, .. } = b.allowance(t0 + secs(47)) else {
            panic!()
        };
        assert_eq!(window_end, t0 + secs(90));
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_429_closes_until_reset_plus_margin() {
        let t0 = Instant::now();
        let mut b = Budget::new(150, MARGIN, t0);
        b.on_send(t0);
        b.on_rejected(t0, Some(rl(150, 0, 30)), Some(secs(99)));
        assert_eq!(
            b.allowance(t0 + secs(31)),
            Allowance::Closed {
                until: t0 + secs(32)
            }
        );
        assert!(matches!(
            b.allowance(t0 + secs(32)),
            Allowance::Open { remaining: 150, .. }
        ));
        // Retry-After alone, then nothing at all.
        let mut b = Budget::new(150, MARGIN, t0);
        b.on_rejected(t0, None, Some(secs(17)));
        assert_eq!(
            b.allowance(t0),
            Allowance::Closed {
                until: t0 + secs(19)
            }
        );
        let mut b = Budget::new(150, MARGIN, t0);
        b.on_rejected(t0, None, None);
        assert_eq!(
            b.allowance(t0),
            Allowance::Closed {
                until: t0 + secs(62)
            }
        );
    }
}
