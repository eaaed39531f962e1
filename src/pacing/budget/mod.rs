//! The quota budget of one upstream policy: limit, what is left, and
//! when the window resets. It counts the proxy's own requests and reads the
//! upstream's headers, and believes whichever leaves less. Pure
//! state: every method takes `now`, so tests drive it without a clock.
//!
//! Windows of any length from 5 s to a day. A length the headers give
//! (IETF `w`) is believed at once; otherwise it is learned: the proxy sees
//! a boundary pass, and the first answer after it says where the window
//! ends. While the current window's end is not known (at start-up, before
//! the first answer; just after a boundary whose window's length is not
//! known yet), nothing is held back or refused that the count and the
//! last reading say fits: requests go at once, never paced against an
//! assumed length. Once the end is known, what is left is spread to it,
//! so a proxy started anywhere in a window spreads the first full window
//! like every other.
//!
//! Several replicas on one client id (`rate_limit.replicas = N`)
//! each keep to a share of every window, `limit / N` by their own
//! count, so that together they never exceed it. Why a fixed share:
//!
//! - Safety. The upstream's windows are the same for every replica. A
//!   replica sends nothing from a second before its computed reset until
//!   `reset_margin` after it, so its sends of its window `k` land in the
//!   upstream's window `k`, except those within two seconds of the computed
//!   reset (whole-second headers, up to a second of latency), which may
//!   land in `k + 1`. Those are `late`: an answer showing its request
//!   counted in `k` clears one, an answer from `k + 1` makes the budget
//!   count everything against `k + 1`, and the rest count in `k + 1` too.
//!   So no replica spends more than its share of an upstream window, and
//!   the window holds at most `N * (limit / N) <= limit` of theirs.
//!   The remainder `limit % N` (less than `N`) is left to nobody: any
//!   replica taking it could meet another doing the same.
//! - No smarter rule is safe without talking to each other. Borrowing an
//!   idle replica's share fails because it may wake up at the window's end
//!   and spend its share then; "spend a `1/N` of the remaining the headers
//!   show" fails because a reading is only refreshed by one's own answers:
//!   a replica that read 30 and sends slowly still holds "10 of 30" after
//!   the others have spent 28. So with uneven demand up to `(N-1)/N` of
//!   the quota goes unused; that is the price of zero upstream 429s.
//!
//! A learned limit below `N` leaves a share of 0: that replica sends
//! nothing (`check` refuses `replicas` above `hourly_quota`). With `N = 1`
//! the share is the whole limit and nothing is late: the budget is exactly
//! the single-proxy one.

use std::time::Duration;

use tokio::time::Instant;

use super::dialect::{RateLimit, MAX_RESET};

/// Two views of a window's end closer than this are the same window.
const SAME_WINDOW: Duration = Duration::from_secs(3);

/// Windows shorter than this are not believed: a window that closes before
/// its margin has passed would keep the budget closed for good. (A policy
/// of a shorter window is paced as if its quota were per this long: safe,
/// if slower.)
pub(crate) const MIN_WINDOW: Duration = Duration::from_secs(5);

/// The reset header is whole seconds: the true reset may be up to this
/// much earlier than computed, so nothing is scheduled that close to it
/// (a request sent then could count against the next window).
const RESET_UNCERTAINTY: Duration = Duration::from_secs(1);

/// A reading is at most this old when it arrives (the answer's latency;
/// the same assumption that makes `reset_margin` of 2 s enough). With the
/// reset's whole seconds, the true reset is less than `RESET_UNCERTAINTY`
/// plus this before the computed one: a send that close to the computed
/// reset may count in the next upstream window.
const MAX_LATENCY: Duration = Duration::from_secs(1);

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
    /// When the current window ends at the latest (no margin), on our
    /// clock; while `settled` is false only a guess (now plus the assumed
    /// length).
    window_end: Instant,
    /// When it ends at the earliest: nothing is scheduled after this, so
    /// that no request counts in the next window.
    end_low: Instant,
    /// Whether `window_end` is known: from a reading of this window, or
    /// from a known length after a boundary.
    settled: bool,
    /// Whether `window_end` is a bound the readings give (the earliest of
    /// their ends), rather than a guess: then each new reading of the same
    /// window can only bring it closer.
    bounded: bool,
    /// How much later than a reading says the window may end: 0 for a
    /// reset rounded up (seconds from now), 1 s for one rounded either way
    /// (a Unix time read against a `Date`).
    rounding: Duration,
    /// The window's length, when known (given by the headers, or learned).
    window_len: Option<Duration>,
    /// Whether `window_len` is a length the headers gave (exact) rather
    /// than one learned off whole-second resets (a guess, up to two seconds
    /// off); false while there is none.
    len_given: bool,
    /// The configured window, for guesses only.
    assumed_len: Duration,
    /// Since when the proxy has watched the window: a window is at least
    /// as long as the part of it seen.
    watched_since: Instant,
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
    /// Proxies sharing this quota; each spends at most `limit / replicas`.
    replicas: u32,
    /// Sends of this window (by number) that may have reached the upstream
    /// after its true reset: close to the computed one, or before any
    /// reading told where it is. An answer that shows its request counted
    /// in this window takes it off; with several replicas the rest count
    /// in the next window too (its share must hold them).
    late: Vec<u64>,
    /// Whether any answer's headers were read yet.
    read: bool,
}

/// A window under way that this process takes over alone: what it may
/// still send of it, and what is known of the window.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Resume {
    pub(crate) limit: u32,
    /// What this process may send before the window ends.
    pub(crate) left: u32,
    /// When the window ends at the latest, and at the earliest.
    pub(crate) end: Instant,
    pub(crate) end_low: Instant,
    pub(crate) window: Option<Duration>,
}

/// What the budget allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allowance {
    /// `remaining` may be spread until `until` (the window's end less the
    /// reset's uncertainty). `seq` counts the requests sent so far. When
    /// not `paced`, the window's end is not known yet: nothing that fits is
    /// held back.
    Open {
        remaining: u32,
        until: Instant,
        generation: u64,
        seq: u64,
        paced: bool,
    },
    /// Nothing may be sent before this instant.
    Closed { until: Instant },
}

impl Budget {
    /// Before any headers: `quota` for a window whose end is not known
    /// (assumed an hour; see [`Budget::assuming`]).
    pub fn new(quota: u32, margin: Duration, now: Instant) -> Self {
        let assumed_len = Duration::from_secs(3600);
        Budget {
            limit: quota,
            window_end: now + assumed_len,
            end_low: now + assumed_len - RESET_UNCERTAINTY,
            settled: false,
            bounded: false,
            rounding: Duration::ZERO,
            window_len: None,
            len_given: false,
            assumed_len,
            watched_since: now,
            window_start: None,
            sent: 0,
            seq: 0,
            window_first_seq: 0,
            reading: None,
            paused_until: None,
            generation: 0,
            margin,
            replicas: 1,
            late: Vec::new(),
            read: false,
        }
    }

    /// The configured window: the guess of a window's length until one is
    /// known (used only once an answer without headers leaves no other).
    pub fn assuming(mut self, window: Duration, now: Instant) -> Self {
        self.assumed_len = window.clamp(MIN_WINDOW, MAX_RESET);
        self.window_end = now + self.assumed_len;
        self.end_low = self.window_end - RESET_UNCERTAINTY;
        self
    }

    /// Readings whose reset may be up to a second early (an epoch read
    /// against a whole-second `Date`).
    pub(crate) fn rounded_either_way(mut self) -> Self {
        self.rounding = RESET_UNCERTAINTY;
        self
    }

    /// A budget for a policy first seen in the answer to request `seq`,
    /// with `sent` requests sent so far: that answer is its first reading.
    pub(crate) fn first_seen(mut self, seq: u64, sent: u64) -> Self {
        self.seq = sent;
        self.window_first_seq = seq.saturating_sub(1);
        self
    }

    /// This budget is one of `replicas` proxies spending the same quota
    /// (at least 1): it keeps to its share of each window.
    pub fn shared_by(mut self, replicas: u32) -> Self {
        self.replicas = replicas.max(1);
        self
    }

    /// What this proxy may spend of a window by its own count.
    pub fn share(&self) -> u32 {
        self.limit / self.replicas
    }

    /// Takes over a window under way with `resume.left` to send in it:
    /// its end is known, and so (if given) is its length.
    pub(crate) fn resume(&mut self, resume: Resume) {
        self.limit = resume.limit;
        self.window_end = resume.end;
        self.end_low = resume.end_low.min(resume.end);
        self.settled = true;
        self.bounded = true;
        self.window_len = resume.window.map(|w| w.clamp(MIN_WINDOW, MAX_RESET));
        // Another process's length may have been learned: not exact.
        self.len_given = false;
        self.sent = self.share().saturating_sub(resume.left);
        self.read = true;
    }

    /// Moves into a new window once the old one ended (plus the margin):
    /// the own count starts again, readings of the old window are dropped.
    fn roll(&mut self, now: Instant) {
        if now < self.window_end + self.margin {
            return;
        }
        let mut boundary = self.window_end;
        // Windows that passed unseen (nothing was asked) are skipped.
        let step = self.window_len.unwrap_or(self.assumed_len);
        while boundary + step + self.margin <= now {
            boundary += step;
        }
        // The new window's end is the old one moved on by whole windows: a
        // guess, since a learned length is itself read off whole-second
        // resets (and its error adds up over windows that passed unseen).
        // Its earliest end stays at least a second before it (a guess taken
        // as a bound once let the budget send its last request of a window
        // after the upstream's window had ended).
        let shifted_low = self.end_low + (boundary + step - self.window_end);
        self.end_low = shifted_low.min(boundary + step - RESET_UNCERTAINTY);
        self.window_start = Some(boundary);
        self.window_end = boundary + step;
        // A known length gives the new window's end; otherwise its first
        // answer will. Only a length the headers gave makes that end a
        // bound: a learned one is a guess, which the first reading
        // replaces (taking the earlier of the two let a learned length's
        // error add up window after window, until a window's first send
        // went before the upstream's reset: a 429).
        self.settled = self.settled && self.window_len.is_some();
        self.bounded = self.bounded && self.len_given;
        let carried = if self.read {
            u32::try_from(self.late.len()).unwrap_or(u32::MAX)
        } else {
            0
        };
        self.start_window(carried);
    }

    fn start_window(&mut self, spent: u32) {
        self.sent = spent;
        self.late.clear();
        self.reading = None;
        self.window_first_seq = self.seq;
        self.generation += 1;
    }

    /// Left in this window: the lower of our count (against our share) and
    /// the freshest header, less what we sent after the request that
    /// header answered.
    pub fn remaining(&mut self, now: Instant) -> u32 {
        self.roll(now);
        let own = self.share().saturating_sub(self.sent);
        match self.reading {
            Some(r) => {
                let since = u32::try_from(self.seq.saturating_sub(r.seq)).unwrap_or(u32::MAX);
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
        let until = self.end_low.min(self.window_end);
        if remaining == 0 || (self.settled && now >= until) {
            return Allowance::Closed {
                until: self.window_end + self.margin,
            };
        }
        Allowance::Open {
            remaining,
            // A guessed end is never in the past.
            until: if self.settled {
                until
            } else {
                until.max(now + RESET_UNCERTAINTY)
            },
            generation: self.generation,
            seq: self.seq,
            paced: self.settled,
        }
    }

    /// Counts a request about to be sent; returns its sequence number.
    pub fn on_send(&mut self, now: Instant) -> u64 {
        self.roll(now);
        self.sent += 1;
        self.seq += 1;
        let near_reset = now + RESET_UNCERTAINTY + MAX_LATENCY >= self.window_end;
        if self.replicas > 1 && (!self.read || near_reset) {
            self.late.push(self.seq);
        }
        self.seq
    }

    /// Reads an answer's headers. `seq` is the request's send number.
    pub fn observe(&mut self, now: Instant, seq: u64, rl: RateLimit) {
        let sent = now.checked_sub(MAX_LATENCY).unwrap_or(now);
        self.observe_window(now, seq, rl, None, sent);
    }

    /// [`Budget::observe`] with the window's length when the answer gives
    /// it (then it is believed at once), and when the request was `sent`.
    pub(crate) fn observe_window(
        &mut self,
        now: Instant,
        seq: u64,
        rl: RateLimit,
        window: Option<Duration>,
        sent: Instant,
    ) {
        self.roll(now);
        if seq <= self.window_first_seq {
            return; // sent in an earlier window: says nothing of this one
        }
        // The upstream read its clock between `sent` and `now`, and the
        // reset is whole seconds: the window ends after `sent + reset - 1s`
        // and, rounded up, by `now + reset` (a second later if it may have
        // been rounded either way).
        let (low, end) = (
            (sent + rl.reset)
                .checked_sub(RESET_UNCERTAINTY)
                .unwrap_or(sent),
            now + rl.reset + self.rounding,
        );
        // Answers overtake each other: one to a request sent before the
        // freshest reading's, ending a window that ended before this one,
        // describes a window already over. (Believing it once moved the
        // end back to the old window; the budget then rolled into the new
        // one with a fresh count, forgetting what it had sent in it.)
        let stale = self.bounded
            && self.reading.is_some_and(|r| seq < r.seq)
            && end + SAME_WINDOW <= self.window_end;
        if stale {
            return;
        }
        self.settle_late(seq, end, rl.reset);
        self.read = true;
        // Every reading of a window bounds its end; together they close in
        // on it (each rounded at another fraction of a second).
        let same = self.bounded && distance(end, self.window_end) < SAME_WINDOW;
        let (low, end) = if same {
            (low.max(self.end_low), end.min(self.window_end))
        } else {
            (low, end)
        };
        if let Some(given) = window {
            self.window_len = Some(given.clamp(MIN_WINDOW, MAX_RESET));
            self.len_given = true;
        }
        // Otherwise the length is learned only against a boundary the proxy
        // saw pass (a roll), never against its own start-up: that would be
        // a guess.
        if let Some(start) = self.window_start.take() {
            if end > start + SAME_WINDOW && window.is_none() {
                self.window_len = Some((end - start).clamp(MIN_WINDOW, MAX_RESET));
                self.len_given = false;
            }
        }
        self.window_end = end;
        self.end_low = low.min(end);
        self.settled = true;
        self.bounded = true;
        self.limit = rl.limit;
        if self.reading.is_none_or(|r| seq >= r.seq) {
            self.reading = Some(Reading {
                remaining: rl.remaining,
                seq,
            });
        }
    }

    /// What an answer to request `seq` says of the late sends: the window
    /// its request was counted in ends at `end`, `reset` from now.
    fn settle_late(&mut self, seq: u64, end: Instant, reset: Duration) {
        let same_window = distance(end, self.window_end) < SAME_WINDOW;
        if !self.read && reset >= RESET_UNCERTAINTY + MAX_LATENCY {
            // The first reading: all sent so far went out before now, and
            // the true reset is after now, so none of it is late.
            self.late.clear();
        } else if !self.read || same_window {
            self.late.retain(|s| *s != seq);
        } else if end > self.window_end {
            // A later window: from now on everything counts against it.
            self.late.clear();
        }
    }

    /// An answer carried no reading: if the window's end is still not
    /// known, the configured window is all there is to go by.
    pub(crate) fn on_unread(&mut self, now: Instant) {
        self.roll(now);
        self.settled = true;
    }

    /// An upstream 429: nothing more until `Retry-After` (which wins over
    /// any quota header), else the headers' reset, plus the margin.
    pub fn on_rejected(
        &mut self,
        now: Instant,
        rl: Option<RateLimit>,
        retry_after: Option<Duration>,
    ) {
        let wait = retry_after
            .or(rl.map(|r| r.reset))
            .unwrap_or(DEFAULT_429_PAUSE);
        self.pause(now + wait + self.margin);
        if let Some(rl) = rl {
            // This window is spent, whatever the counts said.
            self.limit = rl.limit;
            self.window_end = now + rl.reset + self.rounding;
            self.end_low = (now + rl.reset)
                .checked_sub(RESET_UNCERTAINTY + MAX_LATENCY)
                .unwrap_or(now);
            self.settled = true;
            self.bounded = true;
            self.sent = self.limit;
        }
    }

    /// Nothing is sent before `until` (an upstream's `Retry-After`).
    pub(crate) fn pause(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |t| t.max(until)));
    }

    /// The window's length, when known.
    pub fn window_len(&self) -> Option<Duration> {
        self.window_len
    }

    /// The window's length if known, else the part of the current window
    /// seen so far (it is at least that long), once its end is bounded.
    pub(crate) fn window_len_at_least(&self) -> Option<Duration> {
        self.window_len.or_else(|| {
            let seen = self.end_low.saturating_duration_since(self.watched_since);
            (self.bounded && !seen.is_zero()).then_some(seen)
        })
    }

    /// The window as this budget knows it, once its end is known; `left`
    /// is what the upstream's last reading left, less the sends since
    /// (`None` without a reading in this window).
    pub(crate) fn known(&mut self, now: Instant) -> Option<(Resume, Option<u32>)> {
        self.roll(now);
        if !self.settled {
            return None;
        }
        let read_left = self.reading.map(|r| {
            let since = u32::try_from(self.seq.saturating_sub(r.seq)).unwrap_or(u32::MAX);
            r.remaining.saturating_sub(since)
        });
        let resume = Resume {
            limit: self.limit,
            left: self.remaining(now),
            end: self.window_end,
            end_low: self.end_low,
            window: self.window_len,
        };
        Some((resume, read_left))
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

/// How far apart two instants are, either way.
fn distance(a: Instant, b: Instant) -> Duration {
    if a > b {
        a - b
    } else {
        b - a
    }
}

#[cfg(test)]
mod tests;
