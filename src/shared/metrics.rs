//! The shared state's metrics, registered beside the proxy's own (see
//! `ops/metrics.rs`) under `fitbit_proxy_shared_…`: whether Redis is in
//! use, the breaker, each Redis call's latency and errors by operation,
//! how this replica came by its tokens, and whether its pacing slots come
//! from the shared budget.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::breaker::BreakerState;

/// Loopback calls take tens of microseconds, a remote Redis a millisecond
/// or two; the top buckets are the call timeout's range (at most 5 s).
const CALL_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 5.0,
];

/// What a Redis call was for: `connect`, `ping`, `token_obtain`,
/// `token_store`, `token_release`, `budget_reserve`, `budget_observe`,
/// `budget_beat`, `budget_rejoin`.
pub type OpLabels = [(&'static str, &'static str); 1];
/// `op` and `kind` (`timeout`, `io`, `auth`, `server`, `other`).
pub type ErrorLabels = [(&'static str, &'static str); 2];
/// `state` of the breaker (`closed`, `open`), or `how` a token was had.
pub type StateLabels = [(&'static str, &'static str); 1];

#[derive(Debug)]
pub struct SharedMetrics {
    /// 1 while Redis is in use, 0 while the proxy runs alone.
    pub state_up: Gauge,
    /// 1 on the breaker's current state, 0 on the other (no series while
    /// Redis is not configured).
    pub breaker: Family<StateLabels, Gauge>,
    /// Times the breaker opened.
    pub breaker_opened: Counter,
    /// Seconds per Redis call, by operation, failures included.
    pub call_duration: Family<OpLabels, Histogram>,
    /// Failed Redis calls, by operation and kind.
    pub call_errors: Family<ErrorLabels, Counter>,
    /// Tokens this replica started using, by how: `adopted` (another
    /// replica fetched it), `fetched` (fetched here and shared), `alone`
    /// (fetched here while Redis could not be used).
    pub tokens: Family<StateLabels, Counter>,
    /// 1 while this replica takes its pacing slots from the shared budget,
    /// 0 while it keeps to its own share (fallback).
    pub budget_shared: Gauge,
    /// Windows this replica spent (partly) on its own share.
    pub fallback_windows: Counter,
    /// Replicas seen in the heartbeat set lately (this one included).
    pub live_replicas: Gauge,
}

impl Default for SharedMetrics {
    fn default() -> Self {
        let m = SharedMetrics {
            state_up: Gauge::default(),
            breaker: Family::default(),
            breaker_opened: Counter::default(),
            call_duration: Family::new_with_constructor(|| Histogram::new(CALL_BUCKETS)),
            call_errors: Family::default(),
            tokens: Family::default(),
            budget_shared: Gauge::default(),
            fallback_windows: Counter::default(),
            live_replicas: Gauge::default(),
        };
        for how in ["adopted", "fetched", "alone"] {
            m.tokens.get_or_create_owned(&[("how", how)]);
        }
        m
    }
}

impl SharedMetrics {
    /// Adds the families to `registry` (already prefixed `fitbit_proxy`).
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "shared_state_up",
            "1 while Redis is in use for shared state, 0 while this replica runs alone",
            self.state_up.clone(),
        );
        r.register(
            "shared_breaker",
            "1 on the Redis circuit breaker's current state (closed or open)",
            self.breaker.clone(),
        );
        r.register(
            "shared_breaker_opened",
            "Times the Redis circuit breaker opened after failed calls in a row",
            self.breaker_opened.clone(),
        );
        r.register_with_unit(
            "shared_call_duration",
            "Time of one Redis call, by operation",
            Unit::Seconds,
            self.call_duration.clone(),
        );
        r.register(
            "shared_call_errors",
            "Failed Redis calls by operation and kind (timeout, io, auth, server, other)",
            self.call_errors.clone(),
        );
        r.register(
            "shared_tokens",
            "Tokens this replica started using: adopted from another replica, fetched and shared, or fetched alone",
            self.tokens.clone(),
        );
        r.register(
            "shared_budget_shared",
            "1 while pacing slots come from the shared budget in Redis, 0 while this replica keeps to its own share",
            self.budget_shared.clone(),
        );
        r.register(
            "shared_fallback_windows",
            "Quota windows this replica spent, wholly or partly, on its own share because Redis could not be used",
            self.fallback_windows.clone(),
        );
        r.register(
            "shared_live_replicas",
            "Replicas seen in the heartbeat set in the last 10 s, this one included",
            self.live_replicas.clone(),
        );
    }

    pub(crate) fn set_breaker(&self, state: BreakerState) {
        for s in [BreakerState::Closed, BreakerState::Open] {
            let on = i64::from(s == state);
            self.breaker.get_or_create(&[("state", s.as_str())]).set(on);
        }
    }

    pub(crate) fn token(&self, how: &'static str) {
        self.tokens.get_or_create(&[("how", how)]).inc();
    }
}
