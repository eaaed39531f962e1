//! The pacer: spreads what is left of the budget over the time to the reset
//! with a governor GCRA limiter (`burst` back to back, then one request per
//! interval), serves waiting requests in weighted fair order among callers
//! and in arrival order within each (`fair.rs`: start-time fair queuing),
//! and refuses at once the ones whose slot is beyond `max_wait` or past
//! `max_queued`. The refusal is decided when a request arrives, from where
//! its slot falls in the fair order; one admitted is refused later only
//! when its slot moves past its `max_wait` (an answer shrank the budget,
//! or callers with an earlier place in the fair order arrived), and then
//! at once, when that is seen, never after waiting it out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use http::{HeaderMap, StatusCode};

use super::budget::Allowance;
use super::budget::Resume;
use super::budgets::Budgets;
use super::dialect::{read, retry_after, Malformed};
use super::fair::{FairLine, Tagged};
use super::shape::{Plan, Shape, NO_REFILL};
use crate::config::RateLimitConfig;
use crate::error::QuotaView;
use crate::layers::caller::Caller;

/// While a window's end is not known, the burst goes at once and the rest
/// waits for the answer that tells (woken by it; this is only how often
/// the head of the line looks again if none comes).
const UNKNOWN_END_RECHECK: Duration = Duration::from_millis(250);

/// The shortest wait a refusal names.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a request is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its slot is further away than `max_wait`.
    RateLimited {
        retry_after: Duration,
        view: QuotaView,
    },
    /// `max_queued` requests are already waiting.
    QueueFull { retry_after: Duration },
}

/// A request that may be sent; its number ties the answer to it.
#[derive(Debug, Clone, Copy)]
pub struct Permit {
    pub(crate) seq: u64,
    /// When it was sent: its answer describes the upstream after this.
    pub(crate) sent: Instant,
    /// The shared window it was reserved in, when a shared budget gave it
    /// (`None`: this process's own budget).
    pub(crate) shared_window: Option<u64>,
    /// Which of a shared budget's fallbacks gave it, when one did (its
    /// answer teaches that fallback's pacer only); 0 otherwise.
    pub(crate) fallback: u64,
}

impl Permit {
    /// A permit of a shared budget, for the answer to come back to it.
    pub(crate) fn shared(seq: u64, sent: Instant, window: u64) -> Permit {
        Permit {
            seq,
            sent,
            shared_window: Some(window),
            fallback: 0,
        }
    }
}

pub struct Pacer {
    budget: Mutex<Budgets>,
    shape: Mutex<Option<Arc<Shape>>>,
    /// The waiting requests in weighted fair order: only the first asks
    /// the limiter. Locked before the budget, the shape and `head_due`.
    line: Mutex<FairLine>,
    /// Requests admitted and not yet sent (the head included).
    waiting: AtomicUsize,
    /// When the head of the line will be sent, and the pace (shape) that
    /// said so, for estimating slots: a due time of an older pace is not
    /// one (the head has not looked since an answer changed it).
    head_due: Mutex<Option<(Instant, Option<Arc<Shape>>)>>,
    /// Woken when an answer changes the budget, so that the head of the
    /// line looks again rather than sleep on an old plan.
    changed: tokio::sync::Notify,
    /// Replaced whole by a reload ([`Pacer::reconfigure`]); read where
    /// used, never held across a wait.
    cfg: ArcSwap<RateLimitConfig>,
    /// A budget kept elsewhere (shared with other replicas) that every
    /// call goes to instead of this one's; see [`Remote`].
    remote: Option<Arc<dyn Remote>>,
}

impl Pacer {
    pub fn new(cfg: &RateLimitConfig) -> Arc<Self> {
        Self::with_budgets(cfg, Budgets::new(cfg, Instant::now()), None)
    }

    /// A pacer whose slots come from `remote` (the budget the replicas
    /// share); this process's own budget is not used.
    pub(crate) fn with_remote(cfg: &RateLimitConfig, remote: Arc<dyn Remote>) -> Arc<Self> {
        Self::with_budgets(cfg, Budgets::new(cfg, Instant::now()), Some(remote))
    }

    /// A pacer that takes over a window already under way: `resume` says
    /// what is left of it for this process (a replica falling back to its
    /// own share when the shared budget cannot be reached).
    pub(crate) fn resuming(cfg: &RateLimitConfig, resume: Resume) -> Arc<Self> {
        let now = Instant::now();
        Self::with_budgets(cfg, Budgets::resuming(cfg, now, resume), None)
    }

    fn with_budgets(
        cfg: &RateLimitConfig,
        budgets: Budgets,
        remote: Option<Arc<dyn Remote>>,
    ) -> Arc<Self> {
        Arc::new(Pacer {
            budget: Mutex::new(budgets),
            shape: Mutex::new(None),
            line: Mutex::new(FairLine::default()),
            waiting: AtomicUsize::new(0),
            head_due: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            cfg: ArcSwap::from_pointee(cfg.clone()),
            remote,
        })
    }

    /// Applies reloaded rate-limit settings: requests admitted from now on
    /// are held to the new `max_wait`, `max_queued` and `burst`. What the
    /// budget learned from the upstream is kept unless the quota settings
    /// themselves changed (see `Budgets::reconfigure`). Waiting requests
    /// look again at once.
    pub fn reconfigure(&self, cfg: &RateLimitConfig) {
        let burst_changed = self.cfg.load().burst != cfg.burst;
        self.cfg.store(Arc::new(cfg.clone()));
        let restarted = self.budget().reconfigure(cfg, Instant::now());
        if restarted || burst_changed {
            *lock(&self.shape) = None;
        }
        self.changed.notify_waiters();
    }

    fn budget(&self) -> MutexGuard<'_, Budgets> {
        lock(&self.budget)
    }

    pub fn queue_depth(&self) -> usize {
        if let Some(remote) = &self.remote {
            return remote.queue_depth();
        }
        self.waiting.load(Ordering::Relaxed)
    }

    /// The proxy's view of the quota, with the requests waiting for it.
    pub fn view(&self) -> QuotaView {
        if let Some(remote) = &self.remote {
            return remote.view();
        }
        let waiting = u32::try_from(self.queue_depth()).unwrap_or(u32::MAX);
        QuotaView {
            waiting,
            ..self.budget().view(Instant::now())
        }
    }

    /// The window as this pacer's budget knows it, and what the upstream's
    /// last reading left of it; `None` while its end is not known.
    pub(crate) fn known(&self) -> Option<(Resume, Option<u32>)> {
        self.budget().known(Instant::now())
    }

    /// Waits for this request's slot, or refuses it at once.
    ///
    /// The refusal is decided when the request arrives, from where its
    /// slot falls in the fair order of the line (see [`FairLine`]). It is
    /// refused later only if its slot moves past its `max_wait` (an answer
    /// shrank the budget, or callers with an earlier place in the fair
    /// order arrived), and then as soon as that is seen.
    pub async fn admit(&self, caller: &Caller) -> Result<Permit, Refusal> {
        if let Some(remote) = &self.remote {
            return remote.admit(caller).await;
        }
        let arrived = Instant::now();
        let cfg = self.cfg.load_full();
        let deadline = arrived + cfg.max_wait;
        let mut place = {
            let mut line = lock(&self.line);
            if line.is_empty() && self.next_send(arrived).is_none() {
                line.served_at_once(caller);
                return Ok(self.send());
            }
            let tag = line.tag(caller);
            let ahead = line.ahead_of(tag.tag);
            let slot = self.estimate(arrived, ahead);
            if line.len() >= cfg.max_queued {
                return Err(Refusal::QueueFull { retry_after: slot });
            }
            if slot > cfg.max_wait {
                return Err(self.rate_limited(slot));
            }
            Place::join(self, &mut line, tag)
        };
        let too_late = tokio::time::sleep_until(deadline);
        tokio::pin!(too_late);
        loop {
            // Listening before looking: an answer read between the look and
            // the wait still wakes this request (notify_waiters wakes every
            // `Notified` made before it, polled or not).
            let changed = self.changed.notified();
            tokio::pin!(changed);
            let now = Instant::now();
            // Only the first in the fair order asks the limiter.
            let due = {
                let mut line = lock(&self.line);
                if line.first() == Some(place.tag.tag) {
                    match self.next_send(now) {
                        None => {
                            place.served(&mut line);
                            let permit = self.send();
                            drop(line);
                            *lock(&self.head_due) = None;
                            return Ok(permit);
                        }
                        Some((due, _)) if due > deadline => {
                            drop(line);
                            *lock(&self.head_due) = None;
                            return Err(self.rate_limited(due - now));
                        }
                        Some(due) => Some(due),
                    }
                } else {
                    None
                }
            };
            if let Some((due, shape)) = due {
                *lock(&self.head_due) = Some((due, shape));
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = &mut changed => {}
                    // One with an earlier place in the fair order arrived.
                    () = place.turn.notified() => {}
                }
                continue;
            }
            tokio::select! {
                // Its turn may have come: look again.
                () = place.turn.notified() => {}
                // An answer changed the budget: if this request's slot is
                // now past its wait, it is told at once, not at the end.
                () = &mut changed => {
                    let now = Instant::now();
                    let ahead = lock(&self.line).ahead_of(place.tag.tag);
                    let slot = self.estimate(now, ahead);
                    if now + slot > deadline {
                        return Err(self.rate_limited(slot));
                    }
                }
                // Only if the estimates were wrong; unless its turn came
                // just now (then the head's check above sends it or says
                // how long it would still wait).
                () = &mut too_late => {
                    let line = lock(&self.line);
                    if line.first() == Some(place.tag.tag) {
                        continue;
                    }
                    let ahead = line.ahead_of(place.tag.tag);
                    drop(line);
                    return Err(self.rate_limited(self.estimate(Instant::now(), ahead)));
                }
            }
        }
    }

    /// The common case without waiting: nobody is in line and the budget
    /// and the limiter let a request go now. `None` means "take the line"
    /// ([`Pacer::admit`]), which then decides (wait, or refuse). Nobody
    /// waiting can be overtaken: the line is empty, and stays so while
    /// this holds its lock.
    pub fn try_admit_now(&self, caller: &Caller) -> Option<Permit> {
        if self.remote.is_some() {
            return None; // a shared slot costs a round trip: take the line
        }
        let mut line = lock(&self.line);
        if !line.is_empty() || self.next_send(Instant::now()).is_some() {
            return None;
        }
        line.served_at_once(caller);
        Some(self.send())
    }

    /// Counts a request about to be sent. Called with the line locked, so
    /// that the next in line asks the budget only after this send counts.
    fn send(&self) -> Permit {
        let sent = Instant::now();
        let seq = self.budget().on_send(sent);
        Permit {
            seq,
            sent,
            shared_window: None,
            fallback: 0,
        }
    }

    /// A refusal never says "come back now": at least a second, as the
    /// `Retry-After` header it becomes does.
    fn rate_limited(&self, retry_after: Duration) -> Refusal {
        Refusal::RateLimited {
            retry_after: retry_after.max(MIN_RETRY_AFTER),
            view: self.view(),
        }
    }

    /// `None` if a request may go now (and takes its cell from the
    /// limiter), else when to look again, and the pace that says so (none
    /// while the window is closed).
    fn next_send(&self, now: Instant) -> Option<(Instant, Option<Arc<Shape>>)> {
        let (allowance, steady) = self.budget().allowance(now);
        match allowance {
            Allowance::Closed { until } => Some((until, None)),
            Allowance::Open {
                remaining,
                until,
                generation,
                seq,
                paced,
            } => {
                // A window whose end is not known: its burst goes at once,
                // the rest waits for the first answer (never for an
                // assumed length).
                let steady = if paced { steady } else { Some(NO_REFILL) };
                let shape = self.shape_for(
                    now,
                    Plan {
                        remaining,
                        until,
                        generation,
                        seq,
                        steady,
                    },
                );
                let due = match shape.limiter.check() {
                    Ok(()) => return None,
                    Err(_) if !paced => now + UNKNOWN_END_RECHECK,
                    Err(not_until) => not_until.earliest_possible().0,
                };
                Some((due, Some(shape)))
            }
        }
    }

    /// The limiter for the budget as it stands: the current one while the
    /// budget goes as planned, a new one when it really changed (a new
    /// window, a different reset, less left than our own sends explain).
    /// Time passing alone never re-shapes, so the pace holds steady.
    fn shape_for(&self, now: Instant, plan: Plan) -> Arc<Shape> {
        self.shape_with(now, plan, true)
    }

    /// [`Pacer::shape_for`], kept as the pace only with `keep`: an estimate
    /// (which may run outside the line's lock, on a reading of the budget
    /// that a send has since overtaken) sees the pace the head would set,
    /// and leaves setting it to the head.
    fn shape_with(&self, now: Instant, plan: Plan, keep: bool) -> Arc<Shape> {
        let mut current = lock(&self.shape);
        if let Some(shape) = current.as_ref().filter(|s| s.plan.still_holds(&plan)) {
            return Arc::clone(shape);
        }
        // A new window starts with a full burst; a new pace within a window
        // keeps what was left of it and never hands one out again.
        let burst_left = match current.as_ref() {
            Some(s) if s.plan.generation == plan.generation => {
                let sent = u32::try_from(plan.seq.saturating_sub(s.plan.seq)).unwrap_or(u32::MAX);
                s.burst_left.saturating_sub(sent)
            }
            _ => u32::MAX,
        };
        let shape = Arc::new(Shape::new(now, plan, burst_left, self.cfg.load().burst));
        if keep {
            *current = Some(Arc::clone(&shape));
        }
        shape
    }

    /// When a request arriving now, with `ahead` waiting before it, would be
    /// sent: the head's due time plus one interval per request ahead, or
    /// the next window's opening when this one is spent. A window whose
    /// length is not known yet is never assumed long: its requests go as
    /// soon as it opens.
    fn estimate(&self, now: Instant, ahead: usize) -> Duration {
        let ahead_u32 = u32::try_from(ahead).unwrap_or(u32::MAX);
        let mut budget = self.budget();
        let next_window_pace = budget.next_window_pace().unwrap_or(Duration::ZERO);
        let (burst, reset_margin) = {
            let cfg = self.cfg.load();
            (cfg.burst, cfg.reset_margin)
        };
        let reopen = |until: Instant, queued: u32| {
            until.saturating_duration_since(now) + next_window_pace * queued.saturating_sub(burst)
        };
        let (allowance, steady) = budget.allowance(now);
        match allowance {
            Allowance::Closed { until } => reopen(until, ahead_u32),
            Allowance::Open {
                remaining, until, ..
            } if ahead_u32 >= remaining => {
                // Past this window: it closes a second early and reopens a
                // margin after its end.
                let reopens = until + Duration::from_secs(1) + reset_margin;
                reopen(reopens, ahead_u32 - remaining)
            }
            // The rest of the burst goes at once, then the first answer.
            Allowance::Open { paced: false, .. } => Duration::ZERO,
            Allowance::Open { .. } if ahead == 0 => Duration::ZERO,
            Allowance::Open {
                remaining,
                until,
                generation,
                seq,
                ..
            } => {
                drop(budget);
                // The pace the head will keep: the limiter for the budget
                // as it stands (the one the head will make, if an answer
                // just changed it; made here only to be read).
                let plan = Plan {
                    remaining,
                    until,
                    generation,
                    seq,
                    steady,
                };
                let shape = self.shape_with(now, plan, false);
                let head = match &*lock(&self.head_due) {
                    Some((due, Some(of))) if Arc::ptr_eq(of, &shape) => *due,
                    // The head has not looked since the pace changed: it
                    // goes when the new limiter's next cell comes, at once
                    // while the window's burst lasts, else an interval on.
                    Some(_) => {
                        let sent =
                            u32::try_from(seq.saturating_sub(shape.plan.seq)).unwrap_or(u32::MAX);
                        if shape.burst_left > sent {
                            now
                        } else {
                            now + shape.interval
                        }
                    }
                    None => now,
                };
                head.saturating_duration_since(now) + shape.interval * ahead_u32
            }
        }
    }
}

impl Pacer {
    /// Learns from an upstream answer to the request that held `permit`:
    /// its rate-limit headers, a 429. Returns what was wrong with the
    /// headers, if anything: malformed headers are ignored, never fatal.
    pub fn observe(
        &self,
        permit: Permit,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Malformed> {
        if let Some(remote) = &self.remote {
            return remote.observe(permit, status, headers);
        }
        let now = Instant::now();
        let (policies, malformed) = read(self.cfg.load().headers, headers);
        let retry_after = retry_after(headers);
        let mut budget = self.budget();
        if status == StatusCode::TOO_MANY_REQUESTS {
            budget.on_rejected(now, &policies, retry_after);
            let view = budget.view(now);
            tracing::warn!(
                limit = view.limit,
                remaining = view.remaining,
                reset_secs = view.reset_secs,
                "upstream answered 429; nothing is sent until its reset"
            );
        } else {
            if let (StatusCode::SERVICE_UNAVAILABLE, Some(after)) = (status, retry_after) {
                budget.pause(now + after);
            }
            budget.observe(now, permit.seq, permit.sent, &policies);
        }
        drop(budget);
        self.changed.notify_waiters();
        malformed
    }
}

/// The seam to a budget kept outside this process: with `[shared]` the
/// replicas take their slots from one budget in Redis (`shared/budget/`),
/// and the pacer hands every call to it instead of its own. The layer and
/// the status page see one `Pacer` either way.
pub(crate) trait Remote: Send + Sync {
    /// Waits for this request's slot, or refuses it (as
    /// [`Pacer::admit`] does).
    fn admit<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<Permit, Refusal>>;

    /// Learns from the answer to the request that held `permit`.
    fn observe(&self, permit: Permit, status: StatusCode, headers: &HeaderMap)
        -> Option<Malformed>;

    /// The quota as this replica last saw it.
    fn view(&self) -> QuotaView;

    /// Requests of this replica waiting for their slot.
    fn queue_depth(&self) -> usize;
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A place in the fair line, given back however the wait ends (sent,
/// refused, or the client gave up and the future was dropped).
struct Place<'a> {
    pacer: &'a Pacer,
    tag: Tagged,
    /// Woken when this request may have become the first in line.
    turn: Arc<tokio::sync::Notify>,
    sent: bool,
}

impl<'a> Place<'a> {
    fn join(pacer: &'a Pacer, line: &mut FairLine, tag: Tagged) -> Self {
        let turn = Arc::new(tokio::sync::Notify::new());
        line.join(&tag, Arc::clone(&turn));
        pacer.waiting.fetch_add(1, Ordering::Relaxed);
        Place {
            pacer,
            tag,
            turn,
            sent: false,
        }
    }

    fn served(&mut self, line: &mut FairLine) {
        line.served(self.tag.tag);
        self.sent = true;
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.pacer.waiting.fetch_sub(1, Ordering::Relaxed);
        if !self.sent {
            lock(&self.pacer.line).left(&self.tag);
        }
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn fitbit(limit: u32, remaining: u32, reset: u32) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("fitbit-rate-limit-limit", limit),
            ("fitbit-rate-limit-remaining", remaining),
            ("fitbit-rate-limit-reset", reset),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
        headers
    }

    fn limit_and_remaining(pacer: &Pacer) -> (u32, u32) {
        let view = pacer.view();
        (view.limit, view.remaining)
    }

    /// The burst went while the window's end was not known; two more wait
    /// in line. The first answer tells the end: the one behind the head is
    /// now a whole interval after it, past `max_wait`, and is refused at
    /// once, whichever of the two looks first. (The one behind used to
    /// estimate from the head's due time of the old plan, a quarter second
    /// away, so it stayed in line until its `max_wait` ran out: the status
    /// page test failed on CI that way.)
    #[tokio::test(start_paused = true)]
    async fn an_answer_that_tells_the_end_refuses_at_once_who_waits_too_long() {
        let pacer = Pacer::new(&RateLimitConfig::default());
        let caller = crate::layers::caller::Caller::standalone("test", 1);
        let mut burst = Vec::new();
        for _ in 0..10 {
            burst.push(pacer.admit(&caller).await.expect("the burst goes at once"));
        }
        let waiter = |pacer: Arc<Pacer>| {
            let caller = caller.clone();
            tokio::spawn(async move { pacer.admit(&caller).await.map(|_| ()) })
        };
        let head = waiter(Arc::clone(&pacer));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let second = waiter(Arc::clone(&pacer));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(pacer.queue_depth(), 2);

        // As the one behind sees it the moment the answer is read, before
        // the head has looked again: one interval (25.6 s) after the head,
        // which waits one interval itself.
        pacer.observe(burst[0], StatusCode::OK, &fitbit(150, 140, 3600));
        let estimate = pacer.estimate(Instant::now(), 1);
        assert!(estimate > Duration::from_secs(50), "{estimate:?}");

        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(second.is_finished(), "the second is refused at once");
        assert!(matches!(
            second.await.unwrap(),
            Err(Refusal::RateLimited { .. })
        ));
        assert_eq!(pacer.queue_depth(), 1);
        assert!(!head.is_finished());
        tokio::time::sleep(Duration::from_secs(26)).await;
        assert!(head.await.unwrap().is_ok(), "the head goes one interval on");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_keeps_what_the_budget_learned_unless_the_quota_changed() {
        let cfg = RateLimitConfig::default();
        let pacer = Pacer::new(&cfg);
        let caller = crate::layers::caller::Caller::standalone("test", 1);
        let permit = pacer.admit(&caller).await.expect("the first request goes");
        pacer.observe(permit, StatusCode::OK, &fitbit(150, 40, 1200));
        assert_eq!(limit_and_remaining(&pacer), (150, 40));
        // The line's settings change; the budget is what the upstream said.
        let waits = RateLimitConfig {
            max_wait: Duration::from_secs(5),
            max_queued: 3,
            burst: 2,
            ..cfg.clone()
        };
        pacer.reconfigure(&waits);
        assert_eq!(limit_and_remaining(&pacer), (150, 40));
        assert_eq!(pacer.cfg.load().max_wait, Duration::from_secs(5));
        // A new quota starts the budget over from it.
        pacer.reconfigure(&RateLimitConfig {
            quota: 500,
            ..waits
        });
        assert_eq!(limit_and_remaining(&pacer), (500, 500));
        let permit = pacer.admit(&caller).await.expect("a request goes");
        assert!(permit.seq > 1, "the count of sends goes on: {}", permit.seq);
    }
}
