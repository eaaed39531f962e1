//! The budget the replicas share (`[shared]`): every send takes the next
//! paced slot of one budget in Redis (`lua.rs`: one round trip), and every
//! answer's headers reconcile it, in the background. Slots nobody took go
//! to whichever replica asks next, so unused quota flows to the replicas
//! with demand however it moves. Waiting requests take their slots in
//! arrival order within this replica; the slots themselves are handed out
//! in the order the replicas ask.
//!
//! When Redis cannot be used (a failed or timed-out call, the breaker
//! open) the replica falls back to its own share of what was left in the
//! window (`state.rs`), then to `limit / replicas` a window, paced by this
//! process's own pacer (`alone.rs`); `replicas` is the larger of the configured value
//! and the live replicas last seen in the heartbeat set. Once Redis answers
//! again the replica adds the sends it made alone to the shared window and
//! rejoins.

mod alone;
mod lua;
mod state;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::{HeaderMap, StatusCode};
use redis::ScriptInvocation;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use self::alone::Alone;
use self::lua::Scripts;
use self::state::{Reply, Snapshot};
use super::client::{CallError, Redis, SharedState};
use crate::config::{Dialect, RateLimitConfig, Reset};
use crate::error::QuotaView;
use crate::layers::caller::Caller;
use crate::ops::metrics::Metrics;
use crate::pacing::dialect::{read, retry_after, Malformed};
use crate::pacing::fair::FairGate;
use crate::pacing::{Permit, Refusal, Remote};

/// Each replica adds itself to the heartbeat set this often (and reads
/// the budget, so that its share is never more than this stale).
const BEAT: Duration = Duration::from_secs(1);
/// A replica not seen for this long no longer counts as live.
const LIVE_FOR: Duration = Duration::from_secs(10);
/// Refused for a full line: look again this much later.
const QUEUE_FULL_RETRY: Duration = Duration::from_secs(1);

/// Whether this replica's slots come from Redis now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetMode {
    Shared,
    /// Redis could not be used: this replica keeps to its own share.
    Fallback,
}

impl BudgetMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetMode::Shared => "shared",
            BudgetMode::Fallback => "fallback",
        }
    }
}

/// What a reservation got.
enum Grant {
    /// A slot this long from now, in the shared window numbered so.
    Slot { delay: Duration, window: u64 },
    /// Nothing before this long from now (the window is spent, a 429
    /// paused it, or its end is not known yet); not refused by itself.
    NotBefore(Duration),
    /// The next slot is past the longest wait: refused.
    Late(Duration),
}

pub(crate) struct SharedBudget {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Arc<Redis>,
    scripts: Scripts,
    budget_key: String,
    replicas_key: String,
    /// This replica's name in the heartbeat set.
    id: String,
    cfg: RateLimitConfig,
    /// Turn-taking in weighted fair order among callers (arrival order
    /// within each): only the request whose turn it is reserves.
    line: FairGate,
    waiting: AtomicUsize,
    seq: AtomicU64,
    /// Woken when an answer changed the budget.
    changed: Notify,
    last: Mutex<Option<Snapshot>>,
    live: AtomicU32,
    alone: Mutex<Option<Alone>>,
    /// Fallbacks so far.
    episodes: AtomicU64,
    /// The fallback under way (0: none), for requests waiting in one.
    episode: watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for SharedBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBudget")
            .field("key", &self.inner.budget_key)
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl SharedBudget {
    pub(crate) fn new(
        redis: Arc<Redis>,
        prefix: &str,
        client_id: &str,
        cfg: &RateLimitConfig,
        metrics: Arc<Metrics>,
    ) -> SharedBudget {
        let base = format!("{prefix}:{{{client_id}}}");
        metrics.shared.budget_shared.set(1);
        SharedBudget {
            inner: Arc::new(Inner {
                redis,
                scripts: Scripts::default(),
                budget_key: format!("{base}:budget"),
                replicas_key: format!("{base}:replicas"),
                id: format!("{:016x}", rand::random::<u64>()),
                cfg: cfg.clone(),
                line: FairGate::default(),
                waiting: AtomicUsize::new(0),
                seq: AtomicU64::new(0),
                changed: Notify::new(),
                last: Mutex::new(None),
                live: AtomicU32::new(0),
                alone: Mutex::new(None),
                episodes: AtomicU64::new(0),
                episode: watch::channel(0).0,
                metrics,
            }),
        }
    }

    pub(crate) fn mode(&self) -> BudgetMode {
        if lock(&self.inner.alone).is_some() {
            BudgetMode::Fallback
        } else {
            BudgetMode::Shared
        }
    }

    /// Beats, reads the budget, and rejoins after a fallback, every
    /// second; runs until aborted.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        loop {
            tokio::time::sleep(BEAT).await;
            self.inner.beat().await;
        }
    }
}

impl Remote for SharedBudget {
    fn admit<'a>(&'a self, caller: &'a Caller) -> BoxFuture<'a, Result<Permit, Refusal>> {
        Box::pin(self.inner.admit(caller))
    }

    fn observe(
        &self,
        permit: Permit,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Malformed> {
        if permit.shared_window.is_some() {
            return self.inner.observe_later(permit, status, headers);
        }
        // Sent alone: the fallback's own pacer learns from it.
        let pacer = lock(&self.inner.alone)
            .as_ref()
            .filter(|a| a.episode == permit.fallback)
            .map(|a| Arc::clone(&a.pacer));
        if let Some(pacer) = pacer {
            return pacer.observe(permit, status, headers);
        }
        // Sent by a fallback that has ended: its reading goes to the shared
        // budget, which may not have counted that send.
        let last = lock(&self.inner.last).map_or(0, |s| s.window);
        let permit = Permit::shared(permit.seq, permit.sent, last);
        self.inner.observe_later(permit, status, headers)
    }

    fn view(&self) -> QuotaView {
        let now = Instant::now();
        let alone = lock(&self.inner.alone)
            .as_ref()
            .map(|a| Arc::clone(&a.pacer));
        if let Some(pacer) = alone {
            return pacer.view();
        }
        let waiting = u32::try_from(self.queue_depth()).unwrap_or(u32::MAX);
        let view = lock(&self.inner.last).map_or_else(
            || {
                QuotaView::new(
                    self.inner.cfg.quota,
                    self.inner.cfg.quota,
                    self.inner.cfg.window,
                )
            },
            |s| s.view(now),
        );
        QuotaView { waiting, ..view }
    }

    fn queue_depth(&self) -> usize {
        let alone = lock(&self.inner.alone)
            .as_ref()
            .map(|a| Arc::clone(&a.pacer));
        self.inner.waiting.load(Ordering::Relaxed) + alone.map_or(0, |p| p.queue_depth())
    }
}

/// What an answer said, for the observe script.
struct Answer {
    status: u16,
    reading: Option<(crate::pacing::dialect::RateLimit, Option<Duration>)>,
    retry_after: Option<Duration>,
    latency: Duration,
    window: u64,
}

impl Inner {
    /// Parses an answer and reconciles the shared budget with it in the
    /// background; returns what was wrong with its headers.
    fn observe_later(
        self: &Arc<Self>,
        permit: Permit,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Option<Malformed> {
        let window = permit.shared_window.unwrap_or(0);
        let (policies, malformed) = read(self.cfg.headers, headers);
        let answer = Answer {
            status: status.as_u16(),
            // One budget is shared: the first policy the answer lists.
            reading: policies.first().map(|p| (p.rate, p.window)),
            retry_after: retry_after(headers),
            latency: permit.sent.elapsed(),
            window,
        };
        let inner = Arc::clone(self);
        tokio::spawn(async move { inner.observe(answer).await });
        malformed
    }

    async fn admit(&self, caller: &Caller) -> Result<Permit, Refusal> {
        let arrived = Instant::now();
        let deadline = arrived + self.cfg.max_wait;
        loop {
            if let Some(alone) = self.alone_pacer() {
                match self.admit_alone(alone, caller).await {
                    Some(admitted) => return admitted,
                    None => continue, // rejoined while waiting
                }
            }
            match self.admit_shared(deadline, caller).await {
                Ok(admitted) => return admitted,
                Err(error) => {
                    self.fall_back(&error);
                }
            }
        }
    }

    /// A slot from the shared budget, or the call's error.
    async fn admit_shared(
        &self,
        deadline: Instant,
        caller: &Caller,
    ) -> Result<Result<Permit, Refusal>, CallError> {
        if self.waiting.load(Ordering::Relaxed) >= self.cfg.max_queued {
            return Ok(Err(Refusal::QueueFull {
                retry_after: QUEUE_FULL_RETRY,
            }));
        }
        let _place = Place::take(&self.waiting);
        let turn = self.line.turn(caller).await;
        loop {
            // Listening before asking: an answer read while the script runs
            // still wakes this request.
            let changed = self.changed.notified();
            let now = Instant::now();
            let max_wait = deadline.saturating_duration_since(now);
            match self.reserve(max_wait).await? {
                Grant::Slot { delay, window } => {
                    turn.served();
                    // A free slot now goes now: even a zero sleep would
                    // wait for the timer's next millisecond tick.
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
                    return Ok(Ok(Permit::shared(seq, Instant::now(), window)));
                }
                Grant::Late(wait) => return Ok(Err(self.rate_limited(wait))),
                Grant::NotBefore(wait) if now + wait > deadline => {
                    return Ok(Err(self.rate_limited(wait)))
                }
                Grant::NotBefore(wait) => {
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = changed => {}
                    }
                }
            }
        }
    }

    fn rate_limited(&self, retry_after: Duration) -> Refusal {
        let view = lock(&self.last).map_or_else(
            || QuotaView::new(self.cfg.quota, 0, retry_after),
            |s| s.view(Instant::now()),
        );
        Refusal::RateLimited { retry_after, view }
    }

    /// The first arguments of every script (see `lua.rs`).
    fn common(&self, inv: &mut ScriptInvocation<'_>) {
        inv.arg(self.cfg.quota)
            .arg(millis(self.cfg.window))
            .arg(millis(self.cfg.reset_margin))
            .arg(u8::from(self.cfg.headers == Dialect::None));
    }

    /// Takes the next slot, if it is within `max_wait`.
    async fn reserve(&self, max_wait: Duration) -> Result<Grant, CallError> {
        let script = &self.scripts.reserve;
        let keys = [self.budget_key.as_str()];
        let reply: Reply = self
            .redis
            .eval("budget_reserve", script, &keys, |inv| {
                self.common(inv);
                inv.arg(self.cfg.burst)
                    .arg(millis(max_wait))
                    .arg(self.cfg.replicas);
            })
            .await?;
        let snapshot = self.keep(&reply);
        let ms = Duration::from_millis(reply.1.max(0).unsigned_abs());
        Ok(match reply.0.as_str() {
            "ok" => Grant::Slot {
                delay: ms,
                window: snapshot.window,
            },
            "late" => Grant::Late(ms),
            _ => Grant::NotBefore(ms),
        })
    }

    /// Reconciles the shared budget with an answer (in the background).
    async fn observe(&self, answer: Answer) {
        let script = &self.scripts.observe;
        let keys = [self.budget_key.as_str()];
        let rounding = if self.cfg.headers.reset() == Some(Reset::Epoch) {
            1000
        } else {
            0
        };
        let (has, rl, window) = match answer.reading {
            Some((rl, window)) => (1, Some(rl), window),
            None => (0, None, None),
        };
        let result: Result<Reply, _> = self
            .redis
            .eval("budget_observe", script, &keys, |inv| {
                self.common(inv);
                inv.arg(answer.status)
                    .arg(has)
                    .arg(rl.map_or(0, |r| r.limit))
                    .arg(rl.map_or(0, |r| r.remaining))
                    .arg(rl.map_or(0, |r| millis(r.reset)))
                    .arg(millis(answer.latency))
                    .arg(window.map_or(0, millis))
                    .arg(answer.retry_after.map_or(-1, |d| millis(d) as i64))
                    .arg(rounding)
                    .arg(answer.window);
            })
            .await;
        if let Ok(reply) = result {
            self.keep(&reply);
        }
        if answer.status == 429 {
            tracing::warn!("upstream answered 429; no replica sends until its reset");
        }
        self.changed.notify_waiters();
    }

    /// Keeps a script's reply as the budget last seen.
    fn keep(&self, reply: &Reply) -> Snapshot {
        let snapshot = Snapshot::from_reply(Instant::now(), reply);
        *lock(&self.last) = Some(snapshot);
        snapshot
    }

    /// Adds this replica to the heartbeat set and reads the budget; after
    /// a fallback, rejoins once Redis answers.
    /// A replica that cannot reach Redis falls back here too, with or
    /// without demand, so that it rejoins (and counts its sends) like the
    /// others.
    async fn beat(&self) {
        if !matches!(self.redis.state(), SharedState::Connected) {
            if lock(&self.last).is_some() && self.alone_pacer().is_none() {
                self.fall_back(&CallError::Unavailable);
            }
            return;
        }
        let keys = [self.budget_key.as_str(), self.replicas_key.as_str()];
        let result: Result<Reply, _> = self
            .redis
            .eval("budget_beat", &self.scripts.beat, &keys, |inv| {
                self.common(inv);
                inv.arg(&self.id).arg(millis(LIVE_FOR));
            })
            .await;
        let reply = match result {
            Ok(reply) => reply,
            Err(error) => {
                if self.alone_pacer().is_none() {
                    self.fall_back(&error);
                }
                return;
            }
        };
        let live = u32::try_from(reply.1.max(0)).unwrap_or(u32::MAX);
        self.live.store(live, Ordering::Relaxed);
        self.metrics.shared.live_replicas.set(i64::from(live));
        // A budget Redis does not hold (yet) says nothing.
        if reply.6 > 0 {
            self.keep(&reply);
        }
        if self.alone_pacer().is_some() {
            self.rejoin().await;
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A place in line, given back however the wait ends.
struct Place<'a>(&'a AtomicUsize);

impl<'a> Place<'a> {
    fn take(waiting: &'a AtomicUsize) -> Self {
        waiting.fetch_add(1, Ordering::Relaxed);
        Place(waiting)
    }
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
