//! The status page on the admin port (`GET /`) and the same data for
//! machines (`GET /status.json`): readiness, the token, the quota with its
//! send history, the pacing line, callers, shared state and the effective
//! configuration with every secret redacted. Both are read-only snapshots of
//! state the proxy keeps anyway; neither can change anything.

mod page;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde::Serialize;
use tokio::time::Instant;

use super::health::Health;
use super::history::{History, INTERVAL};
use super::metrics::Metrics;
use crate::config::Config;
use crate::pacing::Pacer;
use crate::token::FetchError;

pub(crate) use page::Page;

/// How often the budget's plan is sampled into the send history.
const PLAN_SAMPLE: Duration = Duration::from_secs(10);

/// Everything the status page reads, gathered once by `run`.
pub(crate) struct Sources {
    pub(crate) health: Arc<Health>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) pacer: Arc<Pacer>,
    pub(crate) started: Instant,
    /// What the configuration says; replaced by each reload.
    pub(crate) about: ArcSwap<About>,
}

/// The configuration's part of the status: which API, and the effective
/// config as `check` prints it (secrets redacted).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct About {
    pub(crate) profile: &'static str,
    pub(crate) upstream: String,
    pub(crate) config: String,
}

impl About {
    pub(crate) fn of(config: &Config) -> About {
        About {
            profile: config.profile.name(),
            upstream: config.upstream.url.to_string(),
            config: config.render_redacted(),
        }
    }
}

/// `/status.json`. Durations are in seconds; times are "seconds ago" or
/// "seconds from now", since the proxy's clock is not the reader's.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    version: &'static str,
    uptime_secs: u64,
    ready: bool,
    /// Why the proxy is not ready; `null` when it is.
    reason: Option<String>,
    #[serde(flatten)]
    about: About,
    token: TokenStatus,
    quota: Quota,
    line: Line,
    /// Callers (at most `max_callers`, then `other`), the busiest first.
    callers: Vec<CallerStatus>,
    shared: Shared,
}

#[derive(Debug, Serialize)]
struct TokenStatus {
    /// A valid token is held.
    held: bool,
    /// 1 for the first token fetched, 2 for the next…; 0 before the first.
    generation: u64,
    /// Seconds until the held token expires; 0 when none is held.
    expires_in_secs: u64,
    fetching: bool,
    /// `ok`, `rejected`, `failed`, or `null` before the first attempt ended.
    last_fetch: Option<&'static str>,
    last_fetch_ago_secs: Option<u64>,
    /// What went wrong with the last attempt, if it failed.
    last_error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Quota {
    limit: u32,
    remaining: u32,
    reset_secs: u64,
    /// Share of this window's quota spent, 0 to 1.
    spent: f64,
    history: History,
}

#[derive(Debug, Serialize)]
struct Line {
    waiting: i64,
    wait_p50_secs: Option<f64>,
    wait_p99_secs: Option<f64>,
    refused_rate_limited: u64,
    refused_queue_full: u64,
}

#[derive(Debug, Serialize)]
struct CallerStatus {
    /// Its name, or `other` for every caller beyond `max_callers`.
    caller: String,
    /// Answers it got, from the upstream or the proxy.
    requests: u64,
    /// Requests it sent upstream: the quota it spent.
    sent: u64,
    /// Its share of every request sent upstream since the start, 0 to 1.
    quota_share: f64,
    /// Requests of its the pacer refused (429 or 503).
    refused: u64,
}

#[derive(Debug, Serialize)]
struct Shared {
    /// `connected`, `unreachable` (this replica runs alone meanwhile), or
    /// `disabled`: this proxy shares nothing with other replicas.
    state: &'static str,
    /// Why it is unreachable; `null` otherwise.
    reason: Option<String>,
    /// Where pacing slots come from with Redis configured: `shared` (the
    /// replicas' one budget) or `fallback` (this replica's own share while
    /// Redis cannot be used); `null` without Redis.
    budget: Option<&'static str>,
    /// Replicas seen alive through the shared heartbeat (this one
    /// included); `null` without Redis.
    replicas: Option<i64>,
}

impl Sources {
    pub(crate) fn snapshot(&self) -> Status {
        let now = Instant::now();
        let reason = self.health.readiness().err();
        let view = self.pacer.view();
        let m = &self.metrics;
        let refused = |reason: &str| {
            m.paced_rejections_total
                .get_or_create(&[("reason", reason.to_owned())])
                .get()
        };
        Status {
            version: env!("CARGO_PKG_VERSION"),
            uptime_secs: now.duration_since(self.started).as_secs(),
            ready: reason.is_none(),
            reason,
            about: About::clone(&self.about.load()),
            token: self.token(now),
            quota: Quota {
                limit: view.limit,
                remaining: view.remaining,
                reset_secs: view.reset_secs,
                spent: if view.limit == 0 {
                    0.0
                } else {
                    f64::from(view.limit.saturating_sub(view.remaining)) / f64::from(view.limit)
                },
                history: m.history.snapshot(now),
            },
            line: Line {
                waiting: m.queue_depth.get(),
                wait_p50_secs: m.pacing_wait_quantile(0.5),
                wait_p99_secs: m.pacing_wait_quantile(0.99),
                refused_rate_limited: refused("rate_limited"),
                refused_queue_full: refused("queue_full"),
            },
            callers: self.callers(),
            shared: {
                let shared = self.health.shared();
                let budget = self.health.shared_budget();
                Shared {
                    state: shared.as_str(),
                    reason: shared.reason().map(str::to_owned),
                    budget: budget.map(|mode| mode.as_str()),
                    replicas: budget.map(|_| m.shared.live_replicas.get()),
                }
            },
        }
    }

    fn callers(&self) -> Vec<CallerStatus> {
        let rows = self.metrics.callers.snapshot();
        let sent: u64 = rows.iter().map(|r| r.sent).sum();
        rows.into_iter()
            .map(|r| CallerStatus {
                quota_share: if sent == 0 {
                    0.0
                } else {
                    r.sent as f64 / sent as f64
                },
                caller: r.caller,
                requests: r.requests,
                sent: r.sent,
                refused: r.refused,
            })
            .collect()
    }

    fn token(&self, now: Instant) -> TokenStatus {
        let tokens = self.health.tokens();
        let held = tokens.valid();
        let status = tokens.status();
        let failure = status.failure.as_ref().map(|f| &f.error);
        TokenStatus {
            held: held.is_some(),
            generation: held.as_ref().map_or(0, |t| t.generation()),
            expires_in_secs: held.as_ref().map_or(0, |t| {
                t.expires_at().saturating_duration_since(now).as_secs()
            }),
            fetching: status.fetching,
            last_fetch: status.last_fetch.map(|_| match failure {
                None => "ok",
                Some(FetchError::Rejected { .. }) => "rejected",
                Some(_) => "failed",
            }),
            last_fetch_ago_secs: status
                .last_fetch
                .map(|at| now.saturating_duration_since(at).as_secs()),
            last_error: failure.map(ToString::to_string),
        }
    }

    /// Records, every few seconds, what the budget plans to send per
    /// minute: what is left spread evenly over the time to the reset.
    pub(crate) async fn sample_plans(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PLAN_SAMPLE);
        loop {
            tick.tick().await;
            let view = self.pacer.view();
            let reset = view.reset_secs as f64;
            let per_minute = if reset <= INTERVAL.as_secs_f64() {
                f64::from(view.remaining)
            } else {
                f64::from(view.remaining) * INTERVAL.as_secs_f64() / reset
            };
            self.metrics
                .history
                .record_plan(Instant::now(), per_minute.round() as u32);
        }
    }
}
