//! Running alone while Redis cannot be used: the replica's own pacer on
//! its share of what was left (`state.rs`), then `limit / N` a window; and
//! the rejoin that adds what it sent meanwhile to the shared window.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::state::{Reply, Snapshot};
use super::{lock, millis, Inner};
use crate::config::{Dialect, RateLimitConfig};
use crate::layers::caller::Caller;
use crate::pacing::{Pacer, Permit, Refusal};
use crate::shared::client::CallError;

/// Sends made alone remembered for the rejoin, at most.
const MAX_SENDS_KEPT: usize = 10_000;

/// Running alone while Redis cannot be used.
pub(super) struct Alone {
    pub(super) pacer: Arc<Pacer>,
    /// Which fallback this is (from 1): answers to another's sends are
    /// not this pacer's to learn from.
    pub(super) episode: u64,
    /// When this replica's sends went, for the count it adds on rejoining
    /// (the last `MAX_SENDS_KEPT`; the rejoin takes the upstream's last
    /// reading too, which counts everyone's).
    sends: VecDeque<Instant>,
    /// What it knew of the window when it fell back (to start a budget
    /// Redis lost).
    known: Option<Snapshot>,
    /// The end of the window it is in, and the windows' length, to count
    /// the windows spent alone.
    window_end: Instant,
    window_len: Duration,
}

impl Inner {
    /// Adds the sends made alone to the shared window and goes back to it.
    pub(super) async fn rejoin(&self) {
        let Some(clock) = *lock(&self.last) else {
            return;
        };
        let (sends, pacer, known) = match lock(&self.alone).as_ref() {
            Some(a) => (a.sends.clone(), Arc::clone(&a.pacer), a.known),
            None => return,
        };
        // What this replica knows of the window: its own pacer's view
        // (learned from answers while alone), else the budget as it was.
        // Conservative for the rest of this window (a replica rejoining
        // last counts twice what the others left), exact from the next.
        let seed = match pacer.known() {
            Some((w, read_left)) => Some((
                w.limit,
                clock.redis_ms(w.end),
                clock.redis_ms(w.end_low),
                w.window.map_or(0, |d| millis(d) as i64),
                // Until the window ends, the group may send no more than
                // this replica had left of its share: the others, still
                // alone, are spending theirs (and add them when they rejoin).
                i64::from(
                    w.limit
                        .saturating_sub(w.left.min(read_left.unwrap_or(u32::MAX))),
                ),
            )),
            None => known
                .filter(|k| k.settled)
                .map(|k| (k.limit, k.reset, k.low, k.len, -1)),
        };
        let keys = [self.budget_key.as_str()];
        let result: Result<Reply, _> = self
            .redis
            .eval("budget_rejoin", &self.scripts.rejoin, &keys, |inv| {
                self.common(inv);
                let (limit, reset, low, len, used) = seed.unwrap_or((0, 0, 0, 0, -1));
                inv.arg(limit).arg(reset).arg(low).arg(len).arg(used);
                for sent in &sends {
                    inv.arg(clock.redis_ms(*sent));
                }
            })
            .await;
        let Ok(reply) = result else { return };
        self.keep(&reply);
        *lock(&self.alone) = None;
        self.episode.send_replace(0);
        self.metrics.shared.budget_shared.set(1);
        tracing::info!(
            counted = reply.1,
            "shared budget reachable again: this replica takes its slots from it"
        );
        self.changed.notify_waiters();
    }

    /// The fallback under way, if any, with its number; counts the windows
    /// it has lasted into.
    pub(super) fn alone_pacer(&self) -> Option<(Arc<Pacer>, u64)> {
        let mut alone = lock(&self.alone);
        let a = alone.as_mut()?;
        let now = Instant::now();
        while now >= a.window_end + self.cfg.reset_margin {
            a.window_end += a.window_len;
            self.metrics.shared.fallback_windows.inc();
        }
        Some((Arc::clone(&a.pacer), a.episode))
    }

    /// A slot from this fallback's own pacer; `None` if the replica
    /// rejoined the shared budget meanwhile (the request then takes a
    /// shared slot: a fallback's pacer must not send beside it).
    pub(super) async fn admit_alone(
        &self,
        (pacer, episode): (Arc<Pacer>, u64),
        caller: &Caller,
    ) -> Option<Result<Permit, Refusal>> {
        let mut mode = self.episode.subscribe();
        let mut permit = tokio::select! {
            admitted = pacer.admit(caller) => match admitted {
                Ok(permit) => permit,
                Err(refusal) => return Some(Err(refusal)),
            },
            _ = mode.wait_for(|e| *e != episode) => return None,
        };
        permit.fallback = episode;
        // Counted for the rejoin while this fallback lasts; a send after
        // it is counted by its answer (granted takes limit - remaining).
        if let Some(a) = lock(&self.alone).as_mut().filter(|a| a.episode == episode) {
            let keep_from = permit.sent.checked_sub(a.window_len * 2);
            while a.sends.len() >= MAX_SENDS_KEPT
                || a.sends
                    .front()
                    .zip(keep_from)
                    .is_some_and(|(s, from)| *s < from)
            {
                a.sends.pop_front();
            }
            a.sends.push_back(permit.sent);
        }
        Some(Ok(permit))
    }

    /// Starts running alone (if not already): this replica's share of what
    /// the budget last showed, then `limit / replicas` a window.
    pub(super) fn fall_back(&self, error: &CallError) -> (Arc<Pacer>, u64) {
        let mut alone = lock(&self.alone);
        if let Some(a) = alone.as_ref() {
            return (Arc::clone(&a.pacer), a.episode);
        }
        let now = Instant::now();
        let replicas = self
            .cfg
            .replicas
            .max(self.live.load(Ordering::Relaxed))
            .max(1);
        let cfg = RateLimitConfig {
            replicas,
            ..self.cfg.clone()
        };
        let known = *lock(&self.last);
        let resume = known
            .filter(|_| self.cfg.headers != Dialect::None)
            .and_then(|k| k.fallback(now, replicas, self.cfg.reset_margin));
        let pacer = match resume {
            Some(resume) => Pacer::resuming(&cfg, resume),
            None => Pacer::new(&cfg),
        };
        let window_len = known
            .and_then(|k| k.window_len())
            .unwrap_or(self.cfg.window);
        tracing::warn!(
            error = %error,
            replicas,
            left_here = resume.map(|r| r.left),
            "shared budget unreachable: this replica keeps to its own share until Redis is back"
        );
        let m = &self.metrics.shared;
        m.budget_shared.set(0);
        m.fallback_windows.inc();
        let episode = self.episodes.fetch_add(1, Ordering::Relaxed) + 1;
        self.episode.send_replace(episode);
        *alone = Some(Alone {
            pacer: Arc::clone(&pacer),
            episode,
            sends: VecDeque::new(),
            known,
            window_end: resume.map_or(now + window_len, |r| r.end),
            window_len,
        });
        (pacer, episode)
    }
}
