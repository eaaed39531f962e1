//! The pacer: spreads what is left of the budget over the time to the reset
//! with a governor GCRA limiter (`burst` back to back, then one request per
//! interval), serves waiting requests in arrival order, and refuses at once
//! the ones whose slot is beyond `max_wait` or past `max_queued`. The
//! refusal is decided when a request arrives; one admitted is refused later
//! only when an answer moves its slot past its `max_wait`, and then at
//! once, when that answer comes, never after waiting it out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use http::{HeaderMap, StatusCode};

use super::budget::Allowance;
use super::budget::Resume;
use super::budgets::Budgets;
use super::dialect::{read, retry_after, Malformed};
use super::shape::{Plan, Shape, NO_REFILL};
use crate::config::RateLimitConfig;
use crate::error::QuotaView;

/// While a window's end is not known, the burst goes at once and the rest
/// waits for the answer that tells (woken by it; this is only how often
/// the head of the line looks again if none comes).
const UNKNOWN_END_RECHECK: Duration = Duration::from_millis(250);

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
    /// Fair (FIFO) turn-taking: only the head of the line asks the limiter.
    line: tokio::sync::Mutex<()>,
    /// Requests admitted and not yet sent (the head included).
    waiting: AtomicUsize,
    /// When the head of the line will be sent, for estimating slots.
    head_due: Mutex<Option<Instant>>,
    /// Woken when an answer changes the budget, so that the head of the
    /// line looks again rather than sleep on an old plan.
    changed: tokio::sync::Notify,
    cfg: RateLimitConfig,
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
            line: tokio::sync::Mutex::new(()),
            waiting: AtomicUsize::new(0),
            head_due: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
            cfg: cfg.clone(),
            remote,
        })
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
    pub async fn admit(&self) -> Result<Permit, Refusal> {
        if let Some(remote) = &self.remote {
            return remote.admit().await;
        }
        if let Some(permit) = self.try_admit_now() {
            return Ok(permit);
        }
        let arrived = Instant::now();
        let ahead = self.waiting.load(Ordering::Relaxed);
        let slot = self.estimate(arrived, ahead);
        if ahead >= self.cfg.max_queued {
            return Err(Refusal::QueueFull { retry_after: slot });
        }
        if slot > self.cfg.max_wait {
            return Err(self.rate_limited(slot));
        }
        let _place = Place::take(&self.waiting);
        let deadline = arrived + self.cfg.max_wait;
        let sent_before = self.budget().sent();
        // One place in the (first come, first served) line, kept however
        // often the budget changes meanwhile.
        let turn = self.line.lock();
        tokio::pin!(turn);
        let too_late = tokio::time::sleep_until(deadline);
        tokio::pin!(too_late);
        let _turn = loop {
            tokio::select! {
                turn = &mut turn => break turn,
                // An answer changed the budget: if this request's slot is
                // now past its wait, it is told at once, not at the end.
                () = self.changed.notified() => {
                    let now = Instant::now();
                    let sent = self.budget().sent() - sent_before;
                    let ahead = ahead.saturating_sub(usize::try_from(sent).unwrap_or(usize::MAX));
                    let slot = self.estimate(now, ahead);
                    if now + slot > deadline {
                        return Err(self.rate_limited(slot));
                    }
                }
                // Only if the estimates were wrong.
                () = &mut too_late => {
                    return Err(self.rate_limited(self.estimate(Instant::now(), ahead)));
                }
            }
        };
        loop {
            let now = Instant::now();
            let due = match self.next_send(now) {
                None => break,
                Some(due) => due,
            };
            if due > deadline {
                *lock(&self.head_due) = None;
                return Err(self.rate_limited(due - now));
            }
            *lock(&self.head_due) = Some(due);
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.changed.notified() => {}
            }
        }
        *lock(&self.head_due) = None;
        let sent = Instant::now();
        let seq = self.budget().on_send(sent);
        Ok(Permit {
            seq,
            sent,
            shared_window: None,
            fallback: 0,
        })
    }

    /// The common case without the line: nobody is waiting and the budget
    /// and the limiter let a request go now. `None` means "take the line"
    /// ([`Pacer::admit`]), which then decides (wait, or refuse).
    ///
    /// Order is kept: a request takes this path only while `waiting` is 0,
    /// and it holds a place (so `waiting` is at least 1) while it asks the
    /// limiter, so nobody who already waits (and holds a place until sent)
    /// can be overtaken, and anyone arriving meanwhile takes the line.
    pub fn try_admit_now(&self) -> Option<Permit> {
        if self.remote.is_some() {
            return None; // a shared slot costs a round trip: take the line
        }
        let _place = Place::take_if_first(&self.waiting)?;
        // `None`: may go now, and the limiter's cell is taken.
        if self.next_send(Instant::now()).is_some() {
            return None;
        }
        let sent = Instant::now();
        let seq = self.budget().on_send(sent);
        Some(Permit {
            seq,
            sent,
            shared_window: None,
            fallback: 0,
        })
    }

    fn rate_limited(&self, retry_after: Duration) -> Refusal {
        Refusal::RateLimited {
            retry_after,
            view: self.view(),
        }
    }

    /// `None` if a request may go now (and takes its cell from the
    /// limiter), else when to look again.
    fn next_send(&self, now: Instant) -> Option<Instant> {
        let (allowance, steady) = self.budget().allowance(now);
        match allowance {
            Allowance::Closed { until } => Some(until),
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
                if !paced {
                    return shape
                        .limiter
                        .check()
                        .err()
                        .map(|_| now + UNKNOWN_END_RECHECK);
                }
                match shape.limiter.check() {
                    Ok(()) => None,
                    Err(not_until) => Some(not_until.earliest_possible().0),
                }
            }
        }
    }

    /// The limiter for the budget as it stands: the current one while the
    /// budget goes as planned, a new one when it really changed (a new
    /// window, a different reset, less left than our own sends explain).
    /// Time passing alone never re-shapes, so the pace holds steady.
    fn shape_for(&self, now: Instant, plan: Plan) -> Arc<Shape> {
        let mut current = lock(&self.shape);
        if let Some(shape) = current.as_ref().filter(|s| s.plan.still_holds(&plan)) {
            return Arc::clone(shape);
        }
        // A new window starts with a full burst; a new pace within a window
        // keeps what was left of it and never hands one out again.
        let burst_left = match current.as_ref() {
            Some(s) if s.plan.generation == plan.generation => {
                let sent = u32::try_from(plan.seq - s.plan.seq).unwrap_or(u32::MAX);
                s.burst_left.saturating_sub(sent)
            }
            _ => u32::MAX,
        };
        let shape = Arc::new(Shape::new(now, plan, burst_left, self.cfg.burst));
        *current = Some(Arc::clone(&shape));
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
        let reopen = |until: Instant, queued: u32| {
            until.saturating_duration_since(now)
                + next_window_pace * queued.saturating_sub(self.cfg.burst)
        };
        match budget.allowance(now).0 {
            Allowance::Closed { until } => reopen(until, ahead_u32),
            Allowance::Open {
                remaining, until, ..
            } if ahead_u32 >= remaining => {
                // Past this window: it closes a second early and reopens a
                // margin after its end.
                let reopens = until + Duration::from_secs(1) + self.cfg.reset_margin;
                reopen(reopens, ahead_u32 - remaining)
            }
            // The rest of the burst goes at once, then the first answer.
            Allowance::Open { paced: false, .. } => Duration::ZERO,
            Allowance::Open { .. } if ahead == 0 => Duration::ZERO,
            Allowance::Open {
                remaining,
                until,
                generation,
                ..
            } => {
                drop(budget);
                let planned = until.saturating_duration_since(now) / remaining;
                // The limiter's pace, unless it was made for another plan
                // (an answer just changed it, or it waited for one).
                let interval = lock(&self.shape)
                    .as_ref()
                    .filter(|s| s.plan.generation == generation && s.plan.steady != Some(NO_REFILL))
                    .map_or(planned, |s| s.interval);
                let head = lock(&self.head_due).unwrap_or(now);
                head.saturating_duration_since(now) + interval * ahead_u32
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
        let (policies, malformed) = read(self.cfg.headers, headers);
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
    fn admit(&self) -> BoxFuture<'_, Result<Permit, Refusal>>;

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

/// A place in line, given back however the wait ends (sent, refused, or
/// the client gave up and the future was dropped).
struct Place<'a>(&'a AtomicUsize);

impl<'a> Place<'a> {
    fn take(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Place(waiting)
    }
}

impl<'a> Place<'a> {
    /// A place only if the line is empty (nobody admitted and not yet sent).
    fn take_if_first(waiting: &'a AtomicUsize) -> Option<Self> {
        waiting
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Place(waiting))
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
