//! Who is calling: a request's caller is named by the configured header
//! (`callers.header`, default `x-caller`) when it holds exactly one value
//! that is a token of 1 to 64 characters, else by the client's source
//! address. A bad header (too long, control characters, repeated) is never
//! an error: the address is used and the metrics count it. The header is
//! taken off the request, so the upstream never sees it. The access layer
//! names every request's caller this way and puts the [`Caller`] in the
//! request's extensions for the pacing line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

use crate::config::{is_caller_name, CallersConfig};
use crate::ops::callers::CallerSeries;
use crate::ops::metrics::Metrics;

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Its name as given (or its source address), for the access log and
    /// the pacing line.
    pub name: Arc<str>,
    /// Its share of the pacing slots while callers compete.
    pub weight: u32,
    /// Its metric series (its name, or `other` beyond `max_callers`).
    pub series: CallerSeries,
}

impl Caller {
    /// A caller of weight `weight` whose series counts nowhere that is
    /// rendered (for tests and benches that drive the pacer directly).
    pub fn standalone(name: &str, weight: u32) -> Caller {
        Caller {
            name: Arc::from(name),
            weight,
            series: CallerSeries::standalone(name),
        }
    }
}

/// The caller of a request that came without one (a stack built without
/// the access layer, as in the benches).
pub const UNKNOWN: &str = "unknown";

/// What a request says about its caller.
#[derive(Debug, PartialEq, Eq)]
pub enum Named<'a> {
    /// The header names it.
    Header(&'a str),
    /// No header (or none configured).
    Missing,
    /// A header that names nobody: too long, not a token, repeated.
    Invalid,
}

/// Reads the caller's name from `headers` (pure; the header stays).
pub fn named<'a>(headers: &'a HeaderMap, header: Option<&HeaderName>) -> Named<'a> {
    let Some(header) = header else {
        return Named::Missing;
    };
    let mut values = headers.get_all(header).iter();
    let Some(value) = values.next() else {
        return Named::Missing;
    };
    if values.next().is_some() || !is_caller_name(value.as_bytes()) {
        return Named::Invalid;
    }
    // A token is ASCII.
    value.to_str().map_or(Named::Invalid, Named::Header)
}

/// How callers are named and weighed.
#[derive(Debug, Clone)]
pub struct Identify {
    header: Option<HeaderName>,
    weights: Arc<BTreeMap<String, u32>>,
}

impl Identify {
    pub fn of(cfg: &CallersConfig) -> Self {
        Identify {
            header: cfg.header.clone(),
            weights: Arc::new(cfg.weights.clone()),
        }
    }

    /// Callers by source address only, all of weight 1.
    pub fn by_address() -> Self {
        Identify {
            header: None,
            weights: Arc::default(),
        }
    }

    /// The caller of a request from `client`, its header taken off.
    pub fn caller(
        &self,
        headers: &mut HeaderMap,
        client: Option<IpAddr>,
        metrics: &Metrics,
    ) -> Caller {
        let key = match named(headers, self.header.as_ref()) {
            Named::Header(name) => Key::Header(name),
            Named::Missing => Key::Address(client),
            Named::Invalid => {
                metrics.caller_header_invalid.inc();
                Key::Address(client)
            }
        };
        let caller = LAST.with(|last| {
            let mut last = last.borrow_mut();
            if let Some(hit) = last.as_ref().and_then(|l| l.get(self, &key, metrics)) {
                return hit;
            }
            let caller = self.new_caller(&key, metrics);
            *last = Some(Last {
                registry: metrics.callers.id(),
                weights: Arc::clone(&self.weights),
                key: key.owned(),
                caller: caller.clone(),
            });
            caller
        });
        if let Some(header) = &self.header {
            headers.remove(header);
        }
        caller
    }

    fn new_caller(&self, key: &Key<'_>, metrics: &Metrics) -> Caller {
        let name: Arc<str> = match *key {
            Key::Header(name) => Arc::from(name),
            Key::Address(None) => Arc::from(UNKNOWN),
            Key::Address(Some(ip)) => Arc::from(ip.to_string()),
        };
        Caller {
            weight: self.weights.get(&*name).copied().unwrap_or(1),
            series: metrics.callers.series(&name),
            name,
        }
    }
}

/// What names a request's caller: the header's value, or the address.
#[derive(PartialEq, Eq)]
enum Key<'a> {
    Header(&'a str),
    Address(Option<IpAddr>),
}

impl Key<'_> {
    fn owned(&self) -> OwnedKey {
        match *self {
            Key::Header(name) => OwnedKey::Header(Box::from(name)),
            Key::Address(ip) => OwnedKey::Address(ip),
        }
    }
}

enum OwnedKey {
    Header(Box<str>),
    Address(Option<IpAddr>),
}

/// The last caller named on this thread. Consecutive requests mostly come
/// from the same caller (a client's connection, a service's pool), and
/// naming one costs an address formatted, a weight looked up and the
/// registry's lock: reused while the key, the weights table and the
/// registry are the same. The registry never forgets a name, so the series
/// it gave a name is the series it would give it again.
struct Last {
    registry: u64,
    /// Held, so that its address cannot be reused by a newer table.
    weights: Arc<BTreeMap<String, u32>>,
    key: OwnedKey,
    caller: Caller,
}

impl Last {
    fn get(&self, identify: &Identify, key: &Key<'_>, metrics: &Metrics) -> Option<Caller> {
        let same_key = match (&self.key, key) {
            (OwnedKey::Header(a), Key::Header(b)) => **a == **b,
            (OwnedKey::Address(a), Key::Address(b)) => a == b,
            _ => false,
        };
        (same_key
            && self.registry == metrics.callers.id()
            && Arc::ptr_eq(&self.weights, &identify.weights))
        .then(|| self.caller.clone())
    }
}

thread_local! {
    static LAST: std::cell::RefCell<Option<Last>> = const { std::cell::RefCell::new(None) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const X_CALLER: HeaderName = HeaderName::from_static("x-caller");

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(X_CALLER, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn only_one_token_of_1_to_64_characters_names_a_caller() {
        let long = vec![b'a'; 64];
        let too_long = vec![b'a'; 65];
        let huge = vec![b'b'; 10 * 1024];
        let cases: &[(&[&[u8]], Named<'_>)] = &[
            (&[b"billing"], Named::Header("billing")),
            (&[b"svc.reports-2~x"], Named::Header("svc.reports-2~x")),
            (&[&long], Named::Header(std::str::from_utf8(&long).unwrap())),
            (&[], Named::Missing),
            (&[&too_long], Named::Invalid),
            (&[&huge], Named::Invalid),
            (&[b""], Named::Invalid),
            (&[b"has space"], Named::Invalid),
            (&[b"tab\there"], Named::Invalid),
            (&[b"a/b"], Named::Invalid),
            (&[b"caf\xc3\xa9"], Named::Invalid),
            (&[b"billing", b"billing"], Named::Invalid),
        ];
        for (values, want) in cases {
            let h = headers(values);
            assert_eq!(&named(&h, Some(&X_CALLER)), want, "{values:?}");
        }
        assert_eq!(named(&headers(&[b"billing"]), None), Named::Missing);
    }

    #[test]
    fn the_last_caller_is_reused_only_for_the_same_name_weights_and_registry() {
        let with_weight = |w| {
            Identify::of(&CallersConfig {
                weights: [("billing".to_owned(), w)].into(),
                ..CallersConfig::default()
            })
        };
        let (three, five) = (with_weight(3), with_weight(5));
        let (m1, m2) = (Metrics::new(), Metrics::new());
        let a: IpAddr = "192.0.2.7".parse().unwrap();
        let b: IpAddr = "192.0.2.8".parse().unwrap();
        let name = |id: &Identify, h: &[&[u8]], ip, m| {
            let c = id.caller(&mut headers(h), Some(ip), m);
            (c.name.to_string(), c.weight)
        };
        assert_eq!(name(&three, &[b"billing"], a, &m1), ("billing".into(), 3));
        assert_eq!(name(&three, &[b"billing"], b, &m1), ("billing".into(), 3));
        assert_eq!(name(&five, &[b"billing"], a, &m1), ("billing".into(), 5));
        assert_eq!(name(&five, &[b"reports"], a, &m1), ("reports".into(), 1));
        assert_eq!(name(&five, &[], a, &m1), ("192.0.2.7".into(), 1));
        assert_eq!(name(&five, &[], b, &m1), ("192.0.2.8".into(), 1));
        assert_eq!(name(&five, &[b"a", b"b"], b, &m1), ("192.0.2.8".into(), 1));
        // The same caller again, but named in another registry: its series
        // is that registry's.
        assert_eq!(name(&five, &[], b, &m2), ("192.0.2.8".into(), 1));
        let seen = |m: &Metrics| -> Vec<String> {
            m.callers.snapshot().into_iter().map(|r| r.caller).collect()
        };
        assert!(
            seen(&m2).contains(&"192.0.2.8".to_owned()),
            "{:?}",
            seen(&m2)
        );
        assert!(!seen(&m2).contains(&"billing".to_owned()));
        assert!(seen(&m1).contains(&"billing".to_owned()));
    }

    #[test]
    fn a_bad_header_falls_back_to_the_address_counted_and_is_taken_off() {
        let metrics = Metrics::new();
        let identify = Identify::of(&CallersConfig {
            weights: [("billing".to_owned(), 3)].into(),
            ..CallersConfig::default()
        });
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let mut h = headers(&[b"billing"]);
        let caller = identify.caller(&mut h, Some(ip), &metrics);
        assert_eq!((&*caller.name, caller.weight), ("billing", 3));
        assert!(h.is_empty());
        let mut h = headers(&[b"a", b"b"]);
        let caller = identify.caller(&mut h, Some(ip), &metrics);
        assert_eq!((&*caller.name, caller.weight), ("192.0.2.7", 1));
        assert!(h.is_empty());
        assert_eq!(metrics.caller_header_invalid.get(), 1);
        let caller = identify.caller(&mut HeaderMap::new(), None, &metrics);
        assert_eq!(&*caller.name, UNKNOWN);
        assert_eq!(metrics.caller_header_invalid.get(), 1);
    }
}
