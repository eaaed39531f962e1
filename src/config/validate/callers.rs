//! The `[callers]` checks: the header that names a caller, the weights of
//! named callers, and how many callers get their own metric series.

use std::collections::BTreeMap;

use http::HeaderName;

use super::Validator;
use crate::config::error::Problem;
use crate::config::raw::RawCallers;
use crate::config::{is_caller_name, quote, CallersConfig, MAX_CALLER_NAME};

/// A weight above this would let one caller starve the others for minutes
/// at a time; shares that uneven are better served by two proxies.
const MAX_WEIGHT: i64 = 1000;
/// Each tracked caller is a series in every per-caller metric.
const MAX_TRACKED: i64 = 10_000;

/// Headers the proxy itself reads, frames or replaces: naming callers by
/// one of them would change what is forwarded or how.
const RESERVED: &[&str] = &[
    "host",
    "authorization",
    "proxy-authorization",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "upgrade",
    "proxy-connection",
    "x-request-id",
];

impl Validator<'_> {
    pub(super) fn callers(&mut self, raw: &RawCallers) -> Option<CallersConfig> {
        let header = self.caller_header(&raw.header);
        let weights = self.weights(&raw.weights);
        let max_callers = self.count("callers.max_callers", raw.max_callers, 1);
        let max_callers = max_callers.and_then(|n: usize| {
            if i64::try_from(n).unwrap_or(i64::MAX) <= MAX_TRACKED {
                return Some(n);
            }
            let message = format!(
                "must be at most {MAX_TRACKED}: every caller tracked is a series in each per-caller metric"
            );
            let problem = Problem::new("callers.max_callers", message);
            self.problem(problem.with_value(raw.max_callers.to_string()));
            None
        });
        Some(CallersConfig {
            header: header?,
            weights: weights?,
            max_callers: max_callers?,
        })
    }

    /// `Some(None)` when `header = ""` (callers by source address only).
    fn caller_header(&mut self, raw: &str) -> Option<Option<HeaderName>> {
        const KEY: &str = "callers.header";
        if raw.is_empty() {
            return Some(None);
        }
        let message = match HeaderName::from_bytes(raw.as_bytes()) {
            Err(_) => {
                "must be a header name (letters, digits and -) or \"\" for source addresses only"
                    .to_owned()
            }
            Ok(name) if RESERVED.contains(&name.as_str()) => {
                "must not be a header the proxy reads or replaces itself".to_owned()
            }
            Ok(name) => return Some(Some(name)),
        };
        self.problem(Problem::new(KEY, message).with_value(quote(raw)));
        None
    }

    fn weights(&mut self, raw: &BTreeMap<String, i64>) -> Option<BTreeMap<String, u32>> {
        let mut weights = BTreeMap::new();
        let mut ok = true;
        for (name, &weight) in raw {
            let key = format!("callers.weights.{name}");
            if !is_caller_name(name.as_bytes()) {
                let message = format!(
                    "must be a caller name: 1 to {MAX_CALLER_NAME} characters of letters, digits and !#$%&'*+-.^_`|~"
                );
                let problem = Problem::new(&key, message).near("callers.weights");
                self.problem(problem.with_value(quote(name)));
                ok = false;
                continue;
            }
            if !(1..=MAX_WEIGHT).contains(&weight) {
                let message = format!("must be from 1 to {MAX_WEIGHT}");
                self.problem(Problem::new(&key, message).with_value(weight.to_string()));
                ok = false;
                continue;
            }
            weights.insert(name.clone(), u32::try_from(weight).unwrap_or(1));
        }
        ok.then_some(weights)
    }
}
