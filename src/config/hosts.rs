//! `listen.hosts`: the names a request may give the proxy (a guard
//! against DNS rebinding). One canonical form serves both the configured
//! entries and each request's Host, so that `Proxy.Internal.:8080` matches
//! an entry `proxy.internal`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The canonical form of a host as `http::uri::Authority::host` gives it:
/// lower case, without one trailing dot, an IPv6 literal written the one way
/// `Ipv6Addr` prints it (`[0:0::1]` is `[::1]`).
pub fn canonical_host(host: &str) -> String {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let ipv6 = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    match ipv6.map(str::parse::<Ipv6Addr>) {
        Some(Ok(ip)) => format!("[{ip}]"),
        _ => host,
    }
}

/// A configured entry: a DNS name, an IPv4 address or an IPv6 address
/// (bracketed or not), without a port. `Ok` holds its canonical form.
pub(super) fn entry(raw: &str) -> Result<String, &'static str> {
    if let Ok(ip) = raw.parse::<Ipv6Addr>() {
        return Ok(format!("[{ip}]"));
    }
    let host = canonical_host(raw);
    let ipv6 = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if ipv6.is_some_and(|ip| ip.parse::<Ipv6Addr>().is_ok())
        || host.parse::<Ipv4Addr>().is_ok()
        || is_dns_name(&host)
    {
        return Ok(host);
    }
    let with_port = raw
        .rsplit_once(':')
        .is_some_and(|(host, port)| port.parse::<u16>().is_ok() && entry(host).is_ok());
    if with_port {
        return Err("must not have a port: the port a request names is ignored when matching");
    }
    Err(
        r#"must be a host name or IP address such as "fitbit-proxy.internal", "10.0.0.5" or "[::1]""#,
    )
}

/// Labels of letters, digits, `-` and `_` (service names in some clusters
/// carry `_`), 1 to 63 bytes each, 253 in all (RFC 1035 §2.3.4).
fn is_dns_name(host: &str) -> bool {
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    (1..=253).contains(&host.len()) && host.split('.').all(label_ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        let port = Err("must not have a port: the port a request names is ignored when matching");
        let bad = Err(
            r#"must be a host name or IP address such as "fitbit-proxy.internal", "10.0.0.5" or "[::1]""#,
        );
        let cases: [(&str, Result<&str, &str>); 16] = [
            ("proxy.internal", Ok("proxy.internal")),
            ("Proxy.Internal.", Ok("proxy.internal")),
            ("fitbit_proxy", Ok("fitbit_proxy")),
            ("10.0.0.5", Ok("10.0.0.5")),
            ("::1", Ok("[::1]")),
            ("[0:0::1]", Ok("[::1]")),
            ("localhost:8080", port),
            ("[::1]:8080", port),
            ("", bad),
            (".", bad),
            ("a..b", bad),
            ("*.example.com", bad),
            ("https://proxy.internal", bad),
            ("proxy internal", bad),
            ("[::1", bad),
            (&"a".repeat(64), bad),
        ];
        for (raw, want) in cases {
            assert_eq!(entry(raw).as_deref(), want.as_deref(), "{raw:?}");
        }
    }

    #[test]
    fn canonical_hosts() {
        for (host, want) in [
            ("EXAMPLE.com.", "example.com"),
            ("[0:0:0:0:0:0:0:1]", "[::1]"),
            ("[::1", "[::1"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert_eq!(canonical_host(host), want, "{host:?}");
        }
    }
}
