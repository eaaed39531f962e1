//! The rules for `upstream.url` and `credentials.token_url`, as pure functions
//! from the configured string to a `Uri` or an operator-facing message.

use std::net::IpAddr;

use http::uri::{Authority, Uri};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// The upstream base: `http(s)://authority/`, nothing else, because every
/// request's own path and query are appended to it.
pub(super) fn upstream(raw: &str) -> Result<(Uri, Scheme), String> {
    let uri = parse(raw)?;
    let scheme = scheme(&uri).ok_or("must be http or https")?;
    let authority = authority(&uri)?;
    if uri.query().is_some() {
        return Err("must not have a query".into());
    }
    if !matches!(uri.path(), "" | "/") {
        return Err("must not have a path (each request's path is appended to the host)".into());
    }
    let base = Uri::builder()
        .scheme(scheme.as_str())
        .authority(authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| format!("not a valid URL ({e})"))?;
    Ok((base, scheme))
}

/// The token endpoint: https, or plain http only to a loopback address
/// (a test server or a sidecar), since the client secret travels in it.
pub(super) fn token(raw: &str) -> Result<(Uri, Scheme), String> {
    let uri = parse(raw)?;
    let scheme = scheme(&uri).ok_or("must be https")?;
    authority(&uri)?;
    if scheme == Scheme::Http && !is_loopback(&uri) {
        return Err("must be https (http:// is allowed only to a loopback address)".into());
    }
    Ok((uri, scheme))
}

/// `localhost` or a loopback IP literal; names are not resolved.
pub(super) fn is_loopback(uri: &Uri) -> bool {
    let host = uri.host().unwrap_or_default();
    let ip = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || ip.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse(raw: &str) -> Result<Uri, String> {
    // http::Uri drops a fragment silently; a fragment here is a typo.
    if raw.contains('#') {
        return Err("must not have a fragment (#...)".into());
    }
    raw.parse().map_err(|e| format!("not a valid URL ({e})"))
}

fn scheme(uri: &Uri) -> Option<Scheme> {
    match uri.scheme_str() {
        Some(s) if s.eq_ignore_ascii_case("https") => Some(Scheme::Https),
        Some(s) if s.eq_ignore_ascii_case("http") => Some(Scheme::Http),
        _ => None,
    }
}

fn authority(uri: &Uri) -> Result<&Authority, String> {
    let authority = uri.authority().filter(|a| !a.host().is_empty());
    let authority = authority.ok_or("must name a host")?;
    if authority.as_str().contains('@') {
        return Err("must not contain a user name or password".into());
    }
    Ok(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let cases: [(&str, Result<&str, &str>); 12] = [
            ("https://api.fitbit.com", Ok("https://api.fitbit.com/")),
            ("https://api.fitbit.com/", Ok("https://api.fitbit.com/")),
            ("http://127.0.0.1:8081", Ok("http://127.0.0.1:8081/")),
            ("HTTPS://Example.com:8443", Ok("https://Example.com:8443/")),
            ("ftp://x", Err("must be http or https")),
            ("api.fitbit.com", Err("must be http or https")),
            (
                "https://u:p@x",
                Err("must not contain a user name or password"),
            ),
            ("https://x/?a=1", Err("must not have a query")),
            ("https://x/1/", Err("must not have a path")),
            ("https://x/#a", Err("must not have a fragment")),
            ("https://", Err("not a valid URL")),
            ("", Err("not a valid URL")),
        ];
        for (raw, want) in cases {
            let got = upstream(raw).map(|(u, _)| u.to_string());
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw}: {got}"),
                (got, want) => panic!("{raw}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn token_urls() {
        let cases = [
            ("https://api.fitbit.com/oauth2/token", true),
            ("http://127.0.0.1:9/oauth2/token", true),
            ("http://[::1]:9/t", true),
            ("http://localhost/t", true),
            ("http://api.fitbit.com/oauth2/token", false),
            ("ftp://localhost/t", false),
            ("https://user@host/t", false),
        ];
        for (raw, ok) in cases {
            assert_eq!(token(raw).is_ok(), ok, "{raw}");
        }
    }
}
