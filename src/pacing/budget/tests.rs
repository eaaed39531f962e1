//! Unit tests of the budget: pure state driven with explicit instants.

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
        generation,
        paced,
        ..
    } = b.allowance(t0 + secs(12))
    else {
        panic!("window did not roll");
    };
    assert_eq!((remaining, generation), (3, 1));
    // The length is not known yet until an answer of this window says:
    // nothing that fits is held back meanwhile.
    assert!(!paced);
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
    // Nothing after the earliest end the reading allows: whole seconds, and
    // (the send time not given) the answer up to a second late.
    assert_eq!(until, t0 + secs(135 - 2));
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
    assert_eq!(until, t0 + secs(62) - secs(2));
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
    b.on_rejected(t0, Some(rl(150, 0, 30)), None);
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
    // Retry-After wins over the quota headers.
    let mut b = Budget::new(150, MARGIN, t0);
    b.on_rejected(t0, Some(rl(150, 0, 30)), Some(secs(99)));
    assert_eq!(
        b.allowance(t0),
        Allowance::Closed {
            until: t0 + secs(101)
        }
    );
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

#[tokio::test(start_paused = true)]
async fn a_replica_spends_its_share_and_counts_a_late_send_twice() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut b = Budget::new(30, MARGIN, t0).shared_by(3);
    assert_eq!(b.remaining(t0), 10, "30 / 3");
    let s = b.on_send(t0);
    b.observe(t0, s, rl(30, 29, 12));
    for _ in 0..8 {
        b.on_send(t0 + secs(1));
    }
    // The others spent nothing yet: the header leaves 21, the share 1.
    assert_eq!(b.remaining(t0 + secs(1)), 1);
    // Sent 1.5 s before the computed reset, answered only after the
    // window rolled: it may have counted in the next window.
    b.on_send(t0 + ms(10_500));
    assert_eq!(
        b.remaining(t0 + secs(14)),
        9,
        "carried into the next window"
    );
    // The same, but its answer shows it counted in this window.
    let mut b = Budget::new(30, MARGIN, t0).shared_by(3);
    let s = b.on_send(t0);
    b.observe(t0, s, rl(30, 29, 12));
    let late = b.on_send(t0 + ms(10_500));
    b.observe(t0 + ms(10_600), late, rl(30, 20, 2));
    assert_eq!(b.remaining(t0 + secs(15)), 10, "not carried");
    // One proxy: the whole limit, nothing carried (the header says).
    let mut b = Budget::new(30, MARGIN, t0).shared_by(1);
    let s = b.on_send(t0);
    b.observe(t0, s, rl(30, 29, 12));
    b.on_send(t0 + ms(10_500));
    assert_eq!(b.remaining(t0 + secs(14)), 30);
}

#[tokio::test(start_paused = true)]
async fn sends_before_the_first_reading_are_late_only_if_it_says_the_reset_is_near() {
    let t0 = Instant::now();
    for (reset, carried) in [(1, 2), (2, 0), (60, 0)] {
        let mut b = Budget::new(30, MARGIN, t0).shared_by(3);
        let first = b.on_send(t0);
        b.on_send(t0);
        b.on_send(t0);
        b.observe(t0, first, rl(30, 29, reset));
        let after = t0 + secs(reset) + MARGIN;
        assert_eq!(b.remaining(after), 10 - carried, "reset {reset}");
    }
}
