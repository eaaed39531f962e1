//! The IETF fields (draft-ietf-httpapi-ratelimit-headers-08 to -11):
//! `RateLimit-Policy: "burst";q=100;w=60, "daily";q=1000;w=86400` and
//! `RateLimit: "burst";r=50;t=30`, both structured-field lists (RFC 9651,
//! parsed by `sfv`). A policy is named by a string (-09 on) or a token
//! (-08); `q` is its quota, `w` its window; `r` what is left of it, `t` the
//! seconds until more comes. Policies counting anything but requests
//! (`qu`) are not pacing's business. A field that does not parse is
//! ignored (and reported), never fatal.

use std::collections::HashMap;
use std::time::Duration;

use http::HeaderMap;
use sfv::{BareItem, List, ListEntry, Parameters, Parser};

use super::{Malformed, Policy, RateLimit, MAX_LIMIT, MAX_RESET};

pub(crate) const RATELIMIT: &str = "ratelimit";
pub(crate) const RATELIMIT_POLICY: &str = "ratelimit-policy";

/// What a policy declares: its quota and window.
struct Declared {
    quota: u32,
    window: Option<Duration>,
}

pub(super) fn read(headers: &HeaderMap) -> (Vec<Policy>, Option<Malformed>) {
    let mut malformed = None;
    let declared = match list(headers, RATELIMIT_POLICY) {
        Ok(entries) => declared(&entries),
        Err(err) => {
            malformed = Some(err);
            HashMap::new()
        }
    };
    let current = match list(headers, RATELIMIT) {
        Ok(entries) => entries,
        Err(err) => return (Vec::new(), Some(err)),
    };
    let mut policies = Vec::new();
    for (name, params) in items(&current) {
        let Some(remaining) = int(params, "r", u64::from(MAX_LIMIT)) else {
            malformed.get_or_insert(Malformed::Invalid("RateLimit r"));
            continue;
        };
        let declared = declared.get(&name);
        let window = declared.and_then(|d| d.window);
        // Without `t` the quota comes back at the latest a window on.
        let reset = match int(params, "t", MAX_RESET.as_secs()) {
            Some(t) => Duration::from_secs(t),
            None if params.contains_key("t") => {
                malformed.get_or_insert(Malformed::Invalid("RateLimit t"));
                continue;
            }
            None => match window {
                Some(w) => w,
                None => continue,
            },
        };
        let remaining = remaining as u32;
        // A policy not declared: its quota is at least what is left.
        let limit = declared.map_or(remaining, |d| d.quota.max(remaining));
        policies.push(Policy {
            name,
            rate: RateLimit {
                limit,
                remaining,
                reset,
            },
            window,
        });
    }
    (policies, malformed)
}

/// The policies `RateLimit-Policy` declares, by name.
fn declared(entries: &List) -> HashMap<String, Declared> {
    let mut out = HashMap::new();
    for (name, params) in items(entries) {
        let counts_requests = match params.get("qu") {
            None => true,
            Some(BareItem::String(s)) => s.as_str() == "requests",
            Some(BareItem::Token(t)) => t.as_str() == "requests",
            Some(_) => false,
        };
        let Some(quota) = int(params, "q", u64::from(MAX_LIMIT)) else {
            continue;
        };
        if !counts_requests {
            continue;
        }
        let window = int(params, "w", MAX_RESET.as_secs())
            .filter(|w| *w > 0)
            .map(Duration::from_secs);
        out.insert(
            name,
            Declared {
                quota: quota as u32,
                window,
            },
        );
    }
    out
}

/// The field's lines joined (RFC 9110 §5.3) and parsed as a list; an
/// absent field is an empty list.
fn list(headers: &HeaderMap, name: &'static str) -> Result<List, Malformed> {
    let mut joined = Vec::new();
    for value in headers.get_all(name) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    if joined.is_empty() {
        return Ok(List::new());
    }
    Parser::new(&joined)
        .parse::<List>()
        .map_err(|_| Malformed::Structured(field_name(name), "not a list"))
}

fn field_name(name: &str) -> &'static str {
    if name == RATELIMIT {
        "RateLimit"
    } else {
        "RateLimit-Policy"
    }
}

/// The list's items with a name (a string or a token) and their parameters.
fn items(entries: &List) -> impl Iterator<Item = (String, &Parameters)> {
    entries.iter().filter_map(|entry| match entry {
        ListEntry::Item(item) => {
            let name = match &item.bare_item {
                BareItem::String(s) => s.as_str().to_owned(),
                BareItem::Token(t) => t.as_str().to_owned(),
                _ => return None,
            };
            Some((name, &item.params))
        }
        ListEntry::InnerList(_) => None,
    })
}

/// An integer parameter in `0..=max`.
fn int(params: &Parameters, key: &str, max: u64) -> Option<u64> {
    let value = i64::from(params.get(key)?.as_integer()?);
    u64::try_from(value).ok().filter(|v| *v <= max)
}
