//! The proxy's metrics: one [`Metrics`] created by `run`, shared as
//! `Arc<Metrics>` by the access layer, the token refresher, the pacing
//! layer and the connection drivers, and rendered by the admin listener's
//! `/metrics` together with the process metrics (`process.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::callers::{CallerRegistry, CallerSeries, SendingSeries};
use super::history::SendHistory;
use crate::error::QuotaView;

/// Every metric name starts with this and an underscore.
pub const PREFIX: &str = "fitbit_proxy";

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Bounds of the request duration histogram, in seconds: sub-millisecond
/// local refusals up to answers that waited for a pacing slot (`max_wait`)
/// or for a slow upstream (`request_timeout`).
const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Bounds of the pacing wait histogram, in seconds: no wait at all up to
/// the longest `rate_limit.max_wait` worth allowing.
const WAIT_BUCKETS: [f64; 12] = [
    0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Who produced an answer: the upstream, or the proxy itself (one of its
/// own error answers, recognised by its `x-fitbit-proxy-error` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    Upstream,
    Proxy,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Upstream => "upstream",
            Origin::Proxy => "proxy",
        }
    }
}

impl EncodeLabelValue for Origin {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of `fitbit_proxy_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    pub origin: Origin,
    pub code: u16,
}

/// Labels of `fitbit_proxy_caller_requests_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallerRequestLabels {
    pub caller: CallerSeries,
    pub origin: Origin,
    pub code: u16,
}

/// Labels of the per-caller metrics that have no other label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallerLabels {
    pub caller: CallerSeries,
}

/// Labels of `fitbit_proxy_caller_paced_rejections_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct CallerReasonLabels {
    pub caller: CallerSeries,
    pub reason: &'static str,
}

/// The per-caller wait histograms, each made with the wait buckets.
type WaitFamily = Family<CallerLabels, Histogram, fn() -> Histogram>;

fn wait_histogram() -> Histogram {
    Histogram::new(WAIT_BUCKETS)
}

/// Labels of `fitbit_proxy_token_fetches_total`: `result` is `ok`,
/// `rejected` (the credentials were refused) or `failed` (anything else).
pub type FetchLabels = [(&'static str, &'static str); 1];

/// Labels of `fitbit_proxy_task_restarts_total`: `task` names the
/// background task (`token_refresher`).
pub type TaskLabels = [(&'static str, &'static str); 1];

/// Labels of `fitbit_proxy_paced_rejections_total`: `reason` is
/// `rate_limited` or `queue_full`.
pub type ReasonLabels = [(&'static str, String); 1];

/// Labels of `fitbit_proxy_open_connections`: `protocol` is `http1` or `h2`.
pub type ProtocolLabels = [(&'static str, &'static str); 1];

/// Labels of `fitbit_proxy_config_reloads_total`: `result` is `success`
/// or `failure`.
pub type ResultLabels = [(&'static str, &'static str); 1];

/// Labels of `fitbit_proxy_build_info`.
pub type BuildLabels = [(&'static str, &'static str); 3];

/// What this binary is: its version, the git revision it was built from and
/// the compiler's version (`unknown` when the build had no git checkout).
pub const BUILD: BuildLabels = [
    ("version", env!("CARGO_PKG_VERSION")),
    ("revision", env!("FITBIT_PROXY_REVISION")),
    ("rustversion", env!("FITBIT_PROXY_RUSTC_VERSION")),
];

/// The protocols of `fitbit_proxy_open_connections`.
pub const PROTOCOLS: [&str; 2] = ["http1", "h2"];

/// All metrics. Each field is a cheap handle (an `Arc` inside); updating one
/// never locks anything but, for a new label set, the family's map.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Answers by origin and status code.
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from a request's arrival to its response headers.
    pub request_duration: Histogram,
    /// Requests whose client went away before the answer was ready.
    pub requests_cancelled: Counter,
    /// Token fetches by result (`ok`, `rejected`, `failed`).
    pub token_fetches: Family<FetchLabels, Counter>,
    /// Seconds until the current token expires; set at scrape time.
    pub token_expires_in: Gauge<f64, AtomicU64>,
    /// The upstream's `fitbit-rate-limit-limit`, as last seen.
    pub rate_limit_limit: Gauge,
    /// Requests left in the current window, as the pacer reckons them.
    pub rate_limit_remaining: Gauge,
    /// Seconds until the current window resets.
    pub rate_limit_reset_seconds: Gauge<f64, AtomicU64>,
    /// Requests waiting for a pacing slot.
    pub queue_depth: Gauge,
    /// 429 answers from the upstream.
    pub upstream_rate_limited_total: Counter,
    /// 410 answers from the upstream.
    pub upstream_gone_total: Counter,
    /// Malformed `fitbit-rate-limit-*` headers ignored.
    pub rate_limit_header_errors_total: Counter,
    /// Requests the pacer answered itself, by reason.
    pub paced_rejections_total: Family<ReasonLabels, Counter>,
    /// Background tasks restarted after a panic, by task.
    pub task_restarts_total: Family<TaskLabels, Counter>,
    /// Config reloads (SIGHUP, or a secret or TLS file changed on disk) by
    /// result (`success`, `failure`).
    config_reloads: Family<ResultLabels, Counter>,
    /// When the config was last loaded or reloaded successfully, in
    /// seconds since the epoch (start-up counts as a load).
    config_last_reload_success: Gauge<f64, AtomicU64>,
    /// Inbound connections open now, past their first bytes, by protocol.
    open_connections: Family<ProtocolLabels, Gauge>,
    /// 1, labelled with the build's version, git revision and compiler.
    build_info: Family<BuildLabels, Gauge>,
    /// Tasks alive in the runtime that renders the metrics; set at scrape
    /// time (a leak of tasks shows as growth, benches/soak.sh).
    runtime_tasks: Gauge,
    /// Log lines dropped because the log writer could not keep up; brought
    /// up to date at scrape time.
    log_lines_dropped: Counter,
    /// Seconds each request sent upstream waited for its pacing slot.
    pacing_wait: Histogram,
    /// The same waits by bucket, for the status page's quantiles.
    wait_counts: [AtomicU64; WAIT_BUCKETS.len() + 1],
    /// Upstream answers per minute over the last hour (the status page's
    /// chart).
    pub(crate) history: SendHistory,
    /// Redis, the breaker and shared tokens (`fitbit_proxy_shared_…`).
    pub shared: crate::shared::metrics::SharedMetrics,
    /// The callers with their own series (at most `max_callers`, then
    /// `other`).
    pub callers: CallerRegistry,
    /// Answers by caller, origin and status code.
    caller_requests: Family<CallerRequestLabels, Counter>,
    /// Requests sent upstream (the quota spent) by caller.
    caller_sent: Family<CallerLabels, Counter>,
    /// Requests the pacer refused, by caller and reason.
    caller_paced_rejections: Family<CallerReasonLabels, Counter>,
    /// Pacing waits of the requests sent upstream, by caller.
    caller_pacing_wait: WaitFamily,
    /// Caller headers that named no caller (too long, not a token,
    /// repeated): the source address was used instead.
    pub caller_header_invalid: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The default of `callers.max_callers`.
const DEFAULT_MAX_CALLERS: usize = 100;

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_max_callers(DEFAULT_MAX_CALLERS)
    }

    /// Metrics that give at most `max_callers` callers their own series.
    pub fn with_max_callers(max_callers: usize) -> Metrics {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Histogram::new(DURATION_BUCKETS),
            requests_cancelled: Counter::default(),
            token_fetches: Family::default(),
            token_expires_in: Gauge::default(),
            rate_limit_limit: Gauge::default(),
            rate_limit_remaining: Gauge::default(),
            rate_limit_reset_seconds: Gauge::default(),
            queue_depth: Gauge::default(),
            upstream_rate_limited_total: Counter::default(),
            upstream_gone_total: Counter::default(),
            rate_limit_header_errors_total: Counter::default(),
            paced_rejections_total: Family::default(),
            task_restarts_total: Family::default(),
            config_reloads: Family::default(),
            config_last_reload_success: Gauge::default(),
            open_connections: Family::default(),
            build_info: Family::default(),
            runtime_tasks: Gauge::default(),
            log_lines_dropped: Counter::default(),
            pacing_wait: Histogram::new(WAIT_BUCKETS),
            wait_counts: std::array::from_fn(|_| AtomicU64::new(0)),
            history: SendHistory::new(tokio::time::Instant::now()),
            shared: crate::shared::metrics::SharedMetrics::default(),
            callers: CallerRegistry::new(max_callers),
            caller_requests: Family::default(),
            caller_sent: Family::default(),
            caller_paced_rejections: Family::default(),
            caller_pacing_wait: Family::new_with_constructor(wait_histogram),
            caller_header_invalid: Counter::default(),
        };
        m.build_info.get_or_create(&BUILD).set(1);
        // Known label values start at zero, so that a rate of them can be
        // computed before the first one happens.
        for result in ["ok", "rejected", "failed"] {
            m.token_fetches.get_or_create_owned(&[("result", result)]);
        }
        for reason in ["rate_limited", "queue_full"] {
            m.paced_rejections_total
                .get_or_create_owned(&[("reason", reason.to_owned())]);
        }
        for result in ["success", "failure"] {
            m.config_reloads.get_or_create_owned(&[("result", result)]);
        }
        m.config_last_reload_success.set(unix_now());
        for protocol in PROTOCOLS {
            m.open_connections
                .get_or_create_owned(&[("protocol", protocol)]);
        }
        m.register()
    }

    /// The registry holds clones of the handles; the fields stay usable.
    fn register(mut self) -> Metrics {
        // The standard process_* names, unprefixed as in every client
        // library, so that dashboards made for them work as they are.
        self.registry
            .register_collector(Box::new(crate::ops::process::ProcessCollector));
        let r = self.registry.sub_registry_with_prefix(PREFIX);
        r.register(
            "build_info",
            "1, labelled with the version, the git revision and the compiler of this build",
            self.build_info.clone(),
        );
        r.register(
            "requests",
            "Answers by origin (upstream or proxy) and status code",
            self.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from a request's arrival to its response headers",
            Unit::Seconds,
            self.request_duration.clone(),
        );
        r.register(
            "requests_cancelled",
            "Requests whose client went away before the answer was ready",
            self.requests_cancelled.clone(),
        );
        r.register(
            "token_fetches",
            "Token fetches by result (ok, rejected, failed)",
            self.token_fetches.clone(),
        );
        r.register_with_unit(
            "token_expires_in",
            "Time until the current access token expires (0 when none is valid)",
            Unit::Seconds,
            self.token_expires_in.clone(),
        );
        r.register(
            "rate_limit_limit",
            "The upstream's request quota per window (fitbit-rate-limit-limit)",
            self.rate_limit_limit.clone(),
        );
        r.register(
            "rate_limit_remaining",
            "Requests left in the current quota window",
            self.rate_limit_remaining.clone(),
        );
        r.register_with_unit(
            "rate_limit_reset",
            "Time until the current quota window resets",
            Unit::Seconds,
            self.rate_limit_reset_seconds.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting for a pacing slot",
            self.queue_depth.clone(),
        );
        r.register(
            "upstream_rate_limited",
            "429 answers from the upstream",
            self.upstream_rate_limited_total.clone(),
        );
        r.register(
            "upstream_gone",
            "410 Gone answers from the upstream",
            self.upstream_gone_total.clone(),
        );
        r.register(
            "rate_limit_header_errors",
            "Malformed fitbit-rate-limit-* headers that were ignored",
            self.rate_limit_header_errors_total.clone(),
        );
        r.register(
            "paced_rejections",
            "Requests the proxy refused itself to keep within the quota, by reason",
            self.paced_rejections_total.clone(),
        );
        r.register(
            "task_restarts",
            "Background tasks restarted after a panic, by task",
            self.task_restarts_total.clone(),
        );
        r.register(
            "runtime_tasks",
            "Tasks alive in the proxy's runtime",
            self.runtime_tasks.clone(),
        );
        r.register_with_unit(
            "pacing_wait",
            "Time requests sent upstream waited for their pacing slot",
            Unit::Seconds,
            self.pacing_wait.clone(),
        );
        r.register(
            "open_connections",
            "Inbound connections open now (past their first bytes), by protocol (http1, h2)",
            self.open_connections.clone(),
        );
        r.register(
            "config_reloads",
            "Config reloads (SIGHUP, or a secret or TLS file changed on disk) by result (success, failure)",
            self.config_reloads.clone(),
        );
        r.register_with_unit(
            "config_last_reload_success_timestamp",
            "When the config was last loaded or reloaded successfully, in seconds since the epoch",
            Unit::Seconds,
            self.config_last_reload_success.clone(),
        );
        r.register(
            "log_lines_dropped",
            "Log lines dropped because standard error could not take them fast enough",
            self.log_lines_dropped.clone(),
        );
        r.register(
            "caller_requests",
            "Answers by caller (its name, or \"other\" beyond callers.max_callers), origin and status code",
            self.caller_requests.clone(),
        );
        r.register(
            "caller_sent",
            "Requests sent upstream (the quota spent) by caller",
            self.caller_sent.clone(),
        );
        r.register(
            "caller_paced_rejections",
            "Requests the proxy refused itself to keep within the quota, by caller and reason",
            self.caller_paced_rejections.clone(),
        );
        r.register_with_unit(
            "caller_pacing_wait",
            "Time requests sent upstream waited for their pacing slot, by caller",
            Unit::Seconds,
            self.caller_pacing_wait.clone(),
        );
        r.register(
            "caller_header_invalid",
            "Caller headers that named no caller (too long, not a token, repeated); the source address was used",
            self.caller_header_invalid.clone(),
        );
        self.shared.register(r);
        self
    }

    /// Counts one answer to `caller` (beside [`Metrics::request`], which
    /// counts it in the totals).
    pub fn caller_request(&self, caller: &CallerSeries, origin: Origin, code: u16) {
        self.caller_requests
            .get_or_create(&CallerRequestLabels {
                caller: caller.clone(),
                origin,
                code,
            })
            .inc();
        caller.totals().requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request of `caller` is sent upstream after waiting `wait` for
    /// its slot: the wait in the totals and the caller's, and one more
    /// of the quota spent by the caller.
    pub(crate) fn caller_waited(&self, caller: &CallerSeries, wait: Duration) {
        self.pacing_waited(wait);
        let series = caller.totals().sending.get_or_init(|| {
            let labels = CallerLabels {
                caller: caller.clone(),
            };
            SendingSeries {
                wait: self.caller_pacing_wait.get_or_create(&labels).clone(),
                sent: self.caller_sent.get_or_create(&labels).clone(),
            }
        });
        series.wait.observe(wait.as_secs_f64());
        series.sent.inc();
        caller.totals().sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A request of `caller` refused by the pacer (`rate_limited`,
    /// `queue_full`), in the totals and the caller's.
    pub(crate) fn caller_refused(&self, caller: &CallerSeries, reason: &'static str) {
        self.paced_rejection(reason);
        self.caller_paced_rejections
            .get_or_create(&CallerReasonLabels {
                caller: caller.clone(),
                reason,
            })
            .inc();
        caller.totals().refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one answer and its time to response headers; an answer from
    /// the upstream is a request sent, for the status page's chart.
    pub fn request(&self, origin: Origin, code: u16, to_headers: Duration) {
        self.requests
            .get_or_create(&RequestLabels { origin, code })
            .inc();
        self.request_duration.observe(to_headers.as_secs_f64());
        if origin == Origin::Upstream {
            self.history.record_send(tokio::time::Instant::now());
        }
    }

    /// The quota gauges, as the pacer sees the window now.
    pub(crate) fn show_quota(&self, view: QuotaView) {
        self.rate_limit_limit.set(i64::from(view.limit));
        self.rate_limit_remaining.set(i64::from(view.remaining));
        self.rate_limit_reset_seconds.set(view.reset_secs as f64);
    }

    /// How long a request that is sent upstream waited for its slot.
    pub(crate) fn pacing_waited(&self, wait: Duration) {
        let secs = wait.as_secs_f64();
        self.pacing_wait.observe(secs);
        let bucket = WAIT_BUCKETS
            .iter()
            .position(|&bound| secs <= bound)
            .unwrap_or(WAIT_BUCKETS.len());
        self.wait_counts[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The `q` quantile (0 to 1) of the pacing waits so far, estimated the
    /// way Prometheus's `histogram_quantile` does: the upper bound of the
    /// bucket it falls in, interpolated linearly. `None` before any wait.
    pub(crate) fn pacing_wait_quantile(&self, q: f64) -> Option<f64> {
        let counts: Vec<u64> = self
            .wait_counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        quantile(&WAIT_BUCKETS, &counts, q)
    }

    /// Counts one token fetch by its result: `ok`, `rejected` (the
    /// credentials were refused) or `failed` (anything else).
    pub fn token_fetch(&self, result: &'static str) {
        self.token_fetches
            .get_or_create(&[("result", result)])
            .inc();
    }

    /// Counts a request the pacer answered itself (`rate_limited`, `queue_full`).
    pub fn paced_rejection(&self, reason: &str) {
        self.paced_rejections_total
            .get_or_create(&[("reason", reason.to_owned())])
            .inc();
    }

    /// The restart counter of the background task `task`, for
    /// `ops::supervise::spawn_supervised`.
    pub fn task_restarts(&self, task: &'static str) -> Counter {
        self.task_restarts_total
            .get_or_create_owned(&[("task", task)])
    }

    /// Counts one config reload; a successful one also moves
    /// `config_last_reload_success_timestamp_seconds` to now.
    pub fn config_reload(&self, success: bool) {
        let result = if success { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&[("result", result)])
            .inc();
        if success {
            self.config_last_reload_success.set(unix_now());
        }
    }

    /// The gauge of open inbound connections speaking `protocol` (one of
    /// [`PROTOCOLS`]).
    pub fn open_connections(&self, protocol: &'static str) -> Gauge {
        self.open_connections
            .get_or_create_owned(&[("protocol", protocol)])
    }

    /// The OpenMetrics text exposition of every metric, with the token's
    /// remaining lifetime as of now.
    pub fn render(&self, token_expires_in: Option<Duration>) -> String {
        self.token_expires_in
            .set(token_expires_in.map_or(0.0, |d| d.as_secs_f64()));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let tasks = runtime.metrics().num_alive_tasks();
            self.runtime_tasks
                .set(i64::try_from(tasks).unwrap_or(i64::MAX));
        }
        let dropped = crate::ops::logging::dropped_lines();
        self.log_lines_dropped
            .inc_by(dropped.saturating_sub(self.log_lines_dropped.get()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// Seconds since the epoch, now (the wall clock as tokio time advances it).
fn unix_now() -> f64 {
    crate::pacing::wallclock::unix_now().as_secs_f64()
}

/// `histogram_quantile` over bucket `bounds` and per-bucket `counts` (one
/// more than the bounds: the last bucket is everything above them).
fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &count) in counts.iter().enumerate() {
        if count > 0 && (below + count) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                // Above every bound: Prometheus answers the highest bound.
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / count as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += count;
    }
    bounds.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line<'a>(text: &'a str, start: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line starting with {start:?} in:\n{text}"))
    }

    #[test]
    fn every_metric_is_named_with_the_prefix() {
        let m = Metrics::new();
        m.request(Origin::Proxy, 403, Duration::from_millis(2));
        m.token_fetch("failed");
        m.task_restarts("token_refresher");
        m.paced_rejection("queue_full");
        m.rate_limit_reset_seconds.set(12.5);
        let text = m.render(Some(Duration::from_secs(90)));
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                l.starts_with("fitbit_proxy_") || l.starts_with("process_"),
                "{l}"
            );
        }
        for (start, value) in [
            (
                "fitbit_proxy_requests_total{origin=\"proxy\",code=\"403\"}",
                "1",
            ),
            ("fitbit_proxy_request_duration_seconds_count", "1"),
            ("fitbit_proxy_token_fetches_total{result=\"failed\"}", "1"),
            ("fitbit_proxy_token_fetches_total{result=\"ok\"}", "0"),
            ("fitbit_proxy_token_expires_in_seconds", "90.0"),
            ("fitbit_proxy_rate_limit_reset_seconds", "12.5"),
            ("fitbit_proxy_rate_limit_limit", "0"),
            ("fitbit_proxy_queue_depth", "0"),
            ("fitbit_proxy_upstream_rate_limited_total", "0"),
            ("fitbit_proxy_upstream_gone_total", "0"),
            ("fitbit_proxy_rate_limit_header_errors_total", "0"),
            (
                "fitbit_proxy_paced_rejections_total{reason=\"queue_full\"}",
                "1",
            ),
            (
                "fitbit_proxy_task_restarts_total{task=\"token_refresher\"}",
                "0",
            ),
            ("fitbit_proxy_open_connections{protocol=\"http1\"}", "0"),
            ("fitbit_proxy_open_connections{protocol=\"h2\"}", "0"),
        ] {
            assert_eq!(
                line(&text, &format!("{start} ")),
                format!("{start} {value}")
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn build_info_is_one_with_the_version_revision_and_compiler() {
        let text = Metrics::new().render(None);
        let want = format!(
            "fitbit_proxy_build_info{{version=\"{}\",revision=\"{}\",rustversion=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            env!("FITBIT_PROXY_REVISION"),
            env!("FITBIT_PROXY_RUSTC_VERSION"),
        );
        assert!(text.lines().any(|l| l == want), "{want}\n{text}");
        assert!(!env!("FITBIT_PROXY_RUSTC_VERSION").is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn process_metrics_are_rendered_under_their_standard_names() {
        let text = Metrics::new().render(None);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_virtual_memory_bytes ",
            "process_start_time_seconds ",
            "process_threads ",
            "process_open_fds ",
            "process_max_fds ",
        ] {
            assert!(text.lines().any(|l| l.starts_with(name)), "{name}\n{text}");
        }
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let bounds = [1.0, 2.0, 4.0];
        // 10 at or below 1 s, 10 in (1, 2], nothing higher.
        let counts = [10, 10, 0, 0];
        assert_eq!(quantile(&bounds, &counts, 0.5), Some(1.0));
        assert_eq!(quantile(&bounds, &counts, 0.75), Some(1.5));
        assert_eq!(quantile(&bounds, &counts, 1.0), Some(2.0));
        assert_eq!(quantile(&bounds, &[0, 0, 0, 3], 0.5), Some(4.0));
        assert_eq!(quantile(&bounds, &[0; 4], 0.5), None);
        let m = Metrics::new();
        for _ in 0..99 {
            m.pacing_waited(Duration::ZERO);
        }
        m.pacing_waited(Duration::from_secs(3));
        assert_eq!(m.pacing_wait_quantile(0.5), Some(0.0));
        assert!(m.pacing_wait_quantile(0.995).unwrap() > 2.5);
    }

    #[test]
    fn no_token_renders_zero_seconds() {
        let text = Metrics::new().render(None);
        assert_eq!(
            line(&text, "fitbit_proxy_token_expires_in_seconds "),
            "fitbit_proxy_token_expires_in_seconds 0.0"
        );
    }
}
