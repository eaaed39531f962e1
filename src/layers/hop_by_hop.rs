//! Header hygiene shared by both directions: hop-by-hop fields (RFC 9110
//! §7.6.1) are removed, including every field that any `Connection` line
//! names. Pure functions over a `HeaderMap`.

use http::header::{HeaderName, CONNECTION, PROXY_AUTHORIZATION};
use http::HeaderMap;

/// Removes hop-by-hop fields in place: the fixed set (`is_hop_by_hop`)
/// and each comma-separated name on every `Connection` line (a field
/// named only on the second line must not survive).
///
/// One pass over the names present rather than one lookup per listed
/// name: most messages carry none of these fields, and a lookup hashes the
/// name every time.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if is_hop_by_hop(name) {
            found.push(name.clone());
        }
    }
    if found.is_empty() {
        return;
    }
    if found.contains(&CONNECTION) {
        // Split the raw bytes: a line with obs-text is not valid UTF-8 but
        // the names on it must go all the same.
        let named = headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok());
        found.extend(named.collect::<Vec<_>>());
    }
    for name in found {
        headers.remove(name);
    }
}

/// Hop-by-hop whether or not `Connection` names them: RFC 9110 §7.6.1's
/// list, `Keep-Alive` and `Proxy-Connection` (old clients), and
/// `HTTP2-Settings`, which belongs to the obsolete h2c upgrade (RFC 9113
/// §3.1) and is connection-specific even when a client forgets to list it.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "keep-alive"
            | "proxy-connection"
            | "http2-settings"
    )
}

/// Removes every credential a client might have sent: the proxy owns the
/// upstream's credentials.
pub fn strip_client_credentials(headers: &mut HeaderMap) {
    headers.remove(http::header::AUTHORIZATION);
    headers.remove(PROXY_AUTHORIZATION);
}

/// Fields by which a client could claim an identity, an origin or a target
/// for the request. The upstream is a third party: a client
/// must not spoof them to it, and an internal load balancer's values (its
/// addresses, host names) must not leak to it (RFC 7239 §8, RFC 9110
/// §7.6.3). The proxy adds none of its own.
const FORWARDING_IDENTITY: [&str; 19] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-forwarded-server",
    "x-forwarded-ssl",
    "x-original-forwarded-for",
    "x-real-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "true-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-url",
    "x-original-host",
    "x-rewrite-url",
    "via",
];

/// Removes every forwarding-identity field (`FORWARDING_IDENTITY`).
/// One pass over the names present (usually none match, and nothing is
/// allocated), rather than one lookup per listed name.
pub fn strip_forwarding_identity(headers: &mut HeaderMap) {
    let found: Vec<HeaderName> = headers
        .keys()
        .filter(|name| FORWARDING_IDENTITY.contains(&name.as_str()))
        .cloned()
        .collect();
    for name in found {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_every_connection_line_and_the_fixed_set() {
        let mut h = map(&[
            ("connection", "keep-alive, x-first"),
            ("connection", "X-Second , ,bogus name"),
            ("x-first", "1"),
            ("x-second", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-t"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("proxy-authenticate", "Basic"),
            ("accept-language", "en_US"),
            ("accept-locale", "en_US"),
            ("fitbit-rate-limit-remaining", "7"),
        ]);
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "accept-language",
                "accept-locale",
                "fitbit-rate-limit-remaining"
            ]
        );
    }

    #[test]
    fn a_connection_line_with_obs_text_still_names_its_fields() {
        let mut h = HeaderMap::new();
        h.append(
            CONNECTION,
            http::HeaderValue::from_bytes(b"x-internal, \xff").unwrap(),
        );
        h.append("x-internal", "secret-ish".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn connection_cannot_remove_what_it_does_not_name() {
        let mut h = map(&[
            ("connection", "close"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn strips_forwarding_identity_and_nothing_else() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("X-Forwarded-For", "5.6.7.8"),
            ("forwarded", "for=10.0.0.1"),
            ("x-real-ip", "10.0.0.2"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-proto", "http"),
            ("x-original-url", "/oauth2/revoke"),
            ("x-rewrite-url", "/oauth2/revoke"),
            ("true-client-ip", "10.0.0.3"),
            ("via", "1.1 lb.corp.internal"),
            ("accept-language", "en_US"),
            ("x-forwarded-something-else", "kept"),
        ]);
        strip_forwarding_identity(&mut h);
        let mut left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept-language", "x-forwarded-something-else"]);
    }

    #[test]
    fn strips_client_credentials() {
        let mut h = map(&[
            ("authorization", "Basic x"),
            ("proxy-authorization", "y"),
            ("accept", "*/*"),
        ]);
        strip_client_credentials(&mut h);
        assert_eq!(h.len(), 1);
    }
}
