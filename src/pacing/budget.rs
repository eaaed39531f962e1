//! The quota budget of one upstream application: limit, what is left, and
//! when the window resets. It counts the proxy's own requests and reads the
//! upstream's headers, and believes whichever leaves less (SPEC §6). Pure
//! state: every method takes `now`, so tests drive it without a clock.

use std::time::Duration;

use tokio::time::Instant;

use super::headers::{RateLimit, MAX_RESET};

/// Two views of a window's end closer than this are the same window.
const SAME_WINDOW: Duration = Duration::from_secs(3);

/// Windows shorter than this are not believed: a window that closes before
/// its margin has passed would keep the budget closed for good.
const MIN_WINDOW: Duration = Duration::from_secs(5);

/// The reset header is whole seconds: the true reset may be up to this
/// much earlier than computed, so nothing is scheduled that close to it
/// (a request sent then could count against the next window).
const RESET_UNCERTAINTY: Duration = Duration::from_secs(1);

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
    /// Where the current window began, when the proxy saw that boundary
    /// pass; taken by the first reading, which learns the length from it.
    window_start: Option<Instant>,
    /// Requests spent in the current window, by our own count.
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
    /// `remaining` may be spread until `until` (the window's end less the
    /// reset's uncertainty). `seq` counts the requests sent so far.
    Open {
        remaining: u32,
        until: Instant,
        generation: u64,
        seq: u64,
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
            window_start: None,
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
        let mut boundary = self.window_end;
        while boundary + self.window_len + self.margin <= now {
            boundary += self.window_len;
        }
        self.window_start = Some(boundary);
        self.window_end = boundary + self.window_len;
        self.start_window(0);
    }

    fn start_window(&mut self, spent: u32) {
        self.sent = spent;
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
        let remaining = self.remaining(now);
        let until = self
            .window_end
            .checked_sub(RESET_UNCERTAINTY)
            .unwrap_or(self.window_end);
        if remaining == 0 || now >= until {
            return Allowance::Closed {
                until: self.window_end + self.margin,
            };
        }
        Allowance::Open {
            remaining,
            until,
            generation: self.generation,
            seq: self.seq,
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
        // The length is learned only against a boundary the proxy saw pass
        // (a roll), never against its own start-up: that would be a guess.
        if let Some(start) = self.window_start.take() {
            if end > start + SAME_WINDOW {
                self.window_len = (end - start).clamp(MIN_WINDOW, MAX_RESET);
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
            until,
            generation,
            ..
        } = b.allowance(t0 + secs(12))
        else {
            panic!("window did not roll");
        };
        assert_eq!((remaining, generation), (3, 1));
        // The length is not known yet (only the hour is assumed) until an
        // answer of this window says; the last second is kept free.
        assert_eq!(until, t0 + secs(10 + 3600 - 1));
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
        // The next window opens at 47 s; its first answer, 43 s before its
        // reset, shows it is 45 s long, and the one after is too.
        let s = b.on_send(t0 + secs(47));
        b.observe(t0 + secs(47), s, rl(20, 19, 43));
        for _ in 0..19 {
            b.on_send(t0 + secs(47));
        }
        let Allowance::Open { until, .. } = b.allowance(t0 + secs(92)) else {
            panic!()
        };
        assert_eq!(until, t0 + secs(135 - 1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reading_just_before_a_reset_does_not_freeze_the_budget() {
        // The proxy starts 28.3 s into a 30 s window; its first answer
        // says "reset in 1 s". The window's length is not learned from the
        // proxy's own start-up, so the next window reopens.
        let t0 = Instant::now();
        let mut b = Budget::new(150, MARGIN, t0);
        let s = b.on_send(t0 + secs(1));
        b.observe(t0 + secs(1), s, rl(30, 29, 1));
        let reopens = t0 + secs(2) + MARGIN;
        assert_eq!(
            b.allowance(t0 + secs(1)),
            Allowance::Closed { until: reopens }
        );
        let Allowance::Open { remaining, .. } = b.allowance(reopens) else {
            panic!("closed after the reset")
        };
        assert_eq!(remaining, 30);
        // The first answer of the new window teaches its length: 30 s.
        let s = b.on_send(reopens);
        b.observe(reopens, s, rl(30, 29, 28));
        for _ in 0..29 {
            b.on_send(reopens);
        }
        let next = t0 + secs(32) + MARGIN;
        let Allowance::Open { until, .. } = b.allowance(next) else {
            panic!()
        };
        assert_eq!(until, t0 + secs(62) - secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_length_learned_too_short_is_clamped_and_never_closes_for_good() {
        let t0 = Instant::now();
        let mut b = Budget::new(3, MARGIN, t0);
        let s = b.on_send(t0);
        b.observe(t0, s, rl(3, 2, 10));
        // Roll, then a first reading that claims a 1 s window.
        let after = t0 + secs(12);
        let s = b.on_send(after);
        b.observe(after, s, rl(3, 2, 0));
        for _ in 0..5 {
            let until = match b.allowance(after + secs(60)) {
                Allowance::Open { until, .. } => until,
                Allowance::Closed { until } => until,
            };
            assert!(until > after + secs(60), "stuck at {until:?}");
        }
        assert!(matches!(
            b.allowance(after + secs(60)),
            Allowance::Open { .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reading_from_a_later_window_never_discards_the_own_count() {
        // Lagging headers (+5) that claim a later window: the proxy keeps
        // its own count and waits, rather than trusting an inflated header.
        let t0 = Instant::now();
        let mut b = Budget::new(30, MARGIN, t0);
        let s = b.on_send(t0);
        b.observe(t0, s, rl(30, 29, 30));
        for _ in 0..29 {
            b.on_send(t0);
        }
        let s = b.on_send(t0 + secs(5));
        b.observe(t0 + secs(5), s, rl(30, 5, 60));
        assert_eq!(b.remaining(t0 + secs(5)), 0);
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
