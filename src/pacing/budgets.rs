//! Every budget the upstream's answers describe, kept together: one per
//! quota policy (the IETF fields may list several, such as 10 a second and
//! 1,000 a day), or, without quota headers, the sliding budget of
//! `quota` per `window`. Each send counts in all of them; whichever is the
//! most restrictive paces, and any that is spent closes.

use std::time::Duration;

use tokio::time::Instant;

use super::budget::{Allowance, Budget, Resume};
use super::dialect::Policy;
use super::sliding::Sliding;
use crate::config::{Dialect, RateLimitConfig, Reset};
use crate::error::QuotaView;

/// More policies than this in one answer are not tracked (none of the
/// APIs we know lists more than three).
const MAX_POLICIES: usize = 8;

pub(crate) struct Budgets {
    /// One per policy, by name (`""` for the single quota of a triple).
    policies: Vec<(String, Budget)>,
    /// With `headers = "none"`: the only budget.
    sliding: Option<Sliding>,
    /// Requests sent ever.
    seq: u64,
    cfg: RateLimitConfig,
}

/// What paces right now: which budget, and what it allows.
struct Choice {
    allowance: Allowance,
    /// `None`: the sliding budget.
    index: Option<usize>,
}

/// A budget before any headers: the configured quota and window, shared
/// with the configured replicas, its readings rounded as the dialect's are.
fn new_budget(cfg: &RateLimitConfig, now: Instant) -> Budget {
    let budget = Budget::new(cfg.quota, cfg.reset_margin, now)
        .assuming(cfg.window, now)
        .shared_by(cfg.replicas);
    if cfg.headers.reset() == Some(Reset::Epoch) {
        budget.rounded_either_way()
    } else {
        budget
    }
}

impl Budgets {
    /// [`Budgets::new`], in a window already under way (see [`Resume`]);
    /// later windows are this process's share, as with `replicas`.
    pub(crate) fn resuming(cfg: &RateLimitConfig, now: Instant, resume: Resume) -> Self {
        let mut budgets = Budgets::new(cfg, now);
        for (_, budget) in &mut budgets.policies {
            budget.resume(resume);
        }
        budgets
    }

    pub(crate) fn new(cfg: &RateLimitConfig, now: Instant) -> Self {
        let (policies, sliding) = if cfg.headers == Dialect::None {
            (Vec::new(), Some(Sliding::new(cfg.quota, cfg.window)))
        } else {
            (vec![(String::new(), new_budget(cfg, now))], None)
        };
        Budgets {
            policies,
            sliding,
            seq: 0,
            cfg: cfg.clone(),
        }
    }

    /// Takes a reloaded config. When what the budgets are made of (quota,
    /// window, dialect, replicas, reset margin) is as it was, they keep
    /// everything learned from the upstream's answers; otherwise they start
    /// over from the new settings (the count of sends goes on, so answers
    /// to requests sent before still find their place). Returns whether
    /// they started over.
    pub(crate) fn reconfigure(&mut self, cfg: &RateLimitConfig, now: Instant) -> bool {
        let same = |c: &RateLimitConfig| (c.quota, c.window, c.headers, c.replicas, c.reset_margin);
        if same(&self.cfg) == same(cfg) {
            self.cfg = cfg.clone();
            return false;
        }
        *self = Budgets {
            seq: self.seq,
            ..Budgets::new(cfg, now)
        };
        true
    }

    /// What may be sent now, and the steady pace to keep when there is one
    /// (the sliding budget's).
    pub(crate) fn allowance(&mut self, now: Instant) -> (Allowance, Option<Duration>) {
        let steady = self.sliding.as_ref().map(Sliding::interval);
        (self.choose(now).allowance, steady)
    }

    fn choose(&mut self, now: Instant) -> Choice {
        if let Some(sliding) = &mut self.sliding {
            return Choice {
                allowance: sliding.allowance(now),
                index: None,
            };
        }
        let mut closed: Option<(Instant, usize)> = None;
        let mut least = u32::MAX;
        let mut pacing: Option<(f64, usize, Allowance)> = None;
        for (i, (_, budget)) in self.policies.iter_mut().enumerate() {
            let allowance = budget.allowance(now);
            match allowance {
                Allowance::Closed { until } => {
                    if closed.is_none_or(|(t, _)| until > t) {
                        closed = Some((until, i));
                    }
                }
                Allowance::Open {
                    remaining,
                    until,
                    paced,
                    ..
                } => {
                    least = least.min(remaining);
                    // Requests per second it allows; an end not known yet
                    // allows everything that fits.
                    let rate = if paced {
                        f64::from(remaining)
                            / until.saturating_duration_since(now).as_secs_f64().max(1e-3)
                    } else {
                        f64::INFINITY
                    };
                    if pacing.as_ref().is_none_or(|(r, _, _)| rate < *r) {
                        pacing = Some((rate, i, allowance));
                    }
                }
            }
        }
        if let Some((until, i)) = closed {
            return Choice {
                allowance: Allowance::Closed { until },
                index: Some(i),
            };
        }
        let (_, i, allowance) = pacing.expect("there is always one budget");
        let Allowance::Open {
            until,
            generation,
            paced,
            ..
        } = allowance
        else {
            unreachable!("only open budgets pace")
        };
        Choice {
            allowance: Allowance::Open {
                remaining: least,
                until,
                // A change of the budget that paces is a new plan.
                generation: ((i as u64) << 40) | generation,
                seq: self.seq,
                paced,
            },
            index: Some(i),
        }
    }

    /// The first policy's window as known, and what the upstream's last
    /// reading left of it (see [`Budget::known`]).
    pub(crate) fn known(&mut self, now: Instant) -> Option<(Resume, Option<u32>)> {
        self.policies.first_mut()?.1.known(now)
    }

    /// Counts a request about to be sent in every budget; returns its
    /// sequence number.
    pub(crate) fn on_send(&mut self, now: Instant) -> u64 {
        self.seq += 1;
        if let Some(sliding) = &mut self.sliding {
            sliding.on_send(now);
        }
        for (_, budget) in &mut self.policies {
            budget.on_send(now);
        }
        self.seq
    }

    /// Reads the policies of the answer to request `seq`, `sent` then.
    pub(crate) fn observe(&mut self, now: Instant, seq: u64, sent: Instant, policies: &[Policy]) {
        if self.sliding.is_some() {
            return;
        }
        if policies.is_empty() {
            for (_, budget) in &mut self.policies {
                budget.on_unread(now);
            }
            return;
        }
        for policy in policies {
            let Some(budget) = self.budget_for(&policy.name, seq, now) else {
                continue;
            };
            budget.observe_window(now, seq, policy.rate, policy.window, sent);
        }
    }

    /// The budget of the policy `name`: the first one takes the name of the
    /// first policy the upstream reports; others are added as they appear.
    fn budget_for(&mut self, name: &str, seq: u64, now: Instant) -> Option<&mut Budget> {
        if let [(only, _)] = self.policies.as_mut_slice() {
            if only.is_empty() && !name.is_empty() {
                *only = name.to_owned();
            }
        }
        if let Some(i) = self.policies.iter().position(|(n, _)| n == name) {
            return Some(&mut self.policies[i].1);
        }
        if self.policies.len() >= MAX_POLICIES {
            return None;
        }
        let budget = new_budget(&self.cfg, now).first_seen(seq, self.seq);
        self.policies.push((name.to_owned(), budget));
        self.policies.last_mut().map(|(_, b)| b)
    }

    /// An upstream 429: every budget stops until `Retry-After` (or its own
    /// reset, if the answer gave one) plus the margin.
    pub(crate) fn on_rejected(
        &mut self,
        now: Instant,
        policies: &[Policy],
        retry_after: Option<Duration>,
    ) {
        if let Some(sliding) = &mut self.sliding {
            let wait = retry_after.unwrap_or(Duration::from_secs(60));
            sliding.pause(now + wait + self.cfg.reset_margin);
            return;
        }
        for (name, budget) in &mut self.policies {
            let rate = policies.iter().find(|p| &p.name == name).map(|p| p.rate);
            budget.on_rejected(now, rate, retry_after);
        }
    }

    /// A `Retry-After` on another answer (a 503): nothing is sent before it.
    pub(crate) fn pause(&mut self, until: Instant) {
        if let Some(sliding) = &mut self.sliding {
            sliding.pause(until);
        }
        for (_, budget) in &mut self.policies {
            budget.pause(until);
        }
    }

    /// The view of the budget that paces (or keeps the budget closed).
    pub(crate) fn view(&mut self, now: Instant) -> QuotaView {
        let index = self.choose(now).index;
        let (limit, remaining, reset, window) = match index {
            None => {
                let sliding = self.sliding.as_mut().expect("the sliding budget");
                let (limit, remaining, reset) = sliding.view(now);
                (limit, remaining, reset, Some(sliding.window()))
            }
            Some(i) => {
                let budget = &mut self.policies[i].1;
                let (limit, remaining, reset) = budget.view(now);
                (limit, remaining, reset, budget.window_len())
            }
        };
        QuotaView {
            window,
            ..QuotaView::new(limit, remaining, reset)
        }
    }

    /// The time between two sends once a full window is spread (the pace
    /// of the next window): from the window's length, or while that is not
    /// known from the part of the window seen (it is at least that long);
    /// `None` means the next window's requests go as soon as it opens.
    pub(crate) fn next_window_pace(&self) -> Option<Duration> {
        if let Some(sliding) = &self.sliding {
            return Some(sliding.interval());
        }
        self.policies
            .iter()
            .filter_map(|(_, b)| Some(b.window_len_at_least()? / b.share().max(1)))
            .max()
    }
}
