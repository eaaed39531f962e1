//! The callers the metrics tell apart: the first `max_callers` distinct
//! names seen each get their own series, every later one counts as
//! `other`, so that no number of names (a misconfigured client sending a
//! new one with every request) grows the metrics without bound. Each
//! tracked caller also keeps running totals for the status page.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};

/// The label of every caller beyond `max_callers`.
pub const OTHER: &str = "other";

/// One caller's series: its label (its name, or [`OTHER`]) and its running
/// totals. Cheap to clone; equal when the labels are.
#[derive(Debug, Clone)]
pub struct CallerSeries {
    label: Arc<str>,
    totals: Arc<CallerTotals>,
}

/// What one series has counted so far.
#[derive(Debug, Default)]
pub struct CallerTotals {
    /// Answers, from the upstream or the proxy.
    pub requests: AtomicU64,
    /// Requests sent upstream: the quota it spent.
    pub sent: AtomicU64,
    /// Requests the pacer refused (429 or 503) without sending them.
    pub refused: AtomicU64,
    /// The series' wait histogram and sent counter in `/metrics`, looked
    /// up once (`Metrics::caller_waited`) rather than per request.
    pub(crate) sending: OnceLock<SendingSeries>,
}

/// Handles on one caller's per-send metric series (they share their
/// values with the families that render them).
#[derive(Debug)]
pub(crate) struct SendingSeries {
    pub(crate) wait: Histogram,
    pub(crate) sent: Counter,
}

impl CallerSeries {
    fn new(label: &str) -> Self {
        CallerSeries {
            label: Arc::from(label),
            totals: Arc::default(),
        }
    }

    /// A series outside any registry (for tests and benches that build a
    /// caller by hand): it counts, but nowhere that is rendered.
    pub fn standalone(label: &str) -> Self {
        CallerSeries::new(label)
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn totals(&self) -> &CallerTotals {
        &self.totals
    }
}

impl PartialEq for CallerSeries {
    fn eq(&self, other: &Self) -> bool {
        self.label == other.label
    }
}

impl Eq for CallerSeries {}

impl Hash for CallerSeries {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.label.hash(state);
    }
}

impl EncodeLabelValue for CallerSeries {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&&*self.label, encoder)
    }
}

/// The bounded set of callers with their own series.
#[derive(Debug)]
pub struct CallerRegistry {
    /// Unique in the process, for caches of what it answered.
    id: u64,
    max: usize,
    known: Mutex<HashMap<Arc<str>, CallerSeries>>,
    other: CallerSeries,
}

/// One row of [`CallerRegistry::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerRow {
    pub caller: String,
    pub requests: u64,
    pub sent: u64,
    pub refused: u64,
}

impl CallerRegistry {
    pub fn new(max_callers: usize) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        CallerRegistry {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            max: max_callers,
            known: Mutex::new(HashMap::new()),
            other: CallerSeries::new(OTHER),
        }
    }

    /// This registry, among all the process makes.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The series of the caller `name`: its own while fewer than
    /// `max_callers` names have been seen (or it is one of them), else
    /// the shared `other`.
    pub fn series(&self, name: &str) -> CallerSeries {
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = known.get(name) {
            return series.clone();
        }
        if name == OTHER || known.len() >= self.max {
            return self.other.clone();
        }
        let series = CallerSeries::new(name);
        known.insert(Arc::clone(&series.label), series.clone());
        series
    }

    /// Every series with its totals (`other` last, when it counted any),
    /// the busiest first.
    pub fn snapshot(&self) -> Vec<CallerRow> {
        let row = |s: &CallerSeries| CallerRow {
            caller: s.label.to_string(),
            requests: s.totals.requests.load(Ordering::Relaxed),
            sent: s.totals.sent.load(Ordering::Relaxed),
            refused: s.totals.refused.load(Ordering::Relaxed),
        };
        let mut rows: Vec<CallerRow> = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(row)
            .collect();
        rows.sort_by(|a, b| (b.sent, b.requests, &a.caller).cmp(&(a.sent, a.requests, &b.caller)));
        let other = row(&self.other);
        if other.requests > 0 || other.sent > 0 || other.refused > 0 {
            rows.push(other);
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_beyond_the_bound_share_other() {
        let registry = CallerRegistry::new(3);
        let labels: Vec<String> = ["a", "b", "a", "c", "d", "e", "b", "other"]
            .iter()
            .map(|n| registry.series(n).label().to_owned())
            .collect();
        assert_eq!(labels, ["a", "b", "a", "c", "other", "other", "b", "other"]);
    }
}
