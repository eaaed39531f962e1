//! Checks on an upstream answer before it is passed on: framing the proxy
//! must refuse and fields that echo the access token.
//! Pure functions over the status and header fields.

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// An answer whose framing the proxy must not pass on (RFC 9112 §6.3):
/// both framings at once (a smuggling attempt, or a broken upstream), a
/// transfer coding other than plain `chunked` (hyper would leave it applied
/// to a body the client could no longer decode once the hop-by-hop
/// `Transfer-Encoding` is stripped), or a `101` nobody asked for (the proxy
/// never forwards `Upgrade`, RFC 9110 §15.2.2).
pub(super) fn bad_framing(status: StatusCode, headers: &HeaderMap) -> Option<&'static str> {
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Some("the upstream switched protocols unasked");
    }
    let mut codings = headers.get_all(http::header::TRANSFER_ENCODING).iter();
    let first = codings.next()?;
    if headers.contains_key(http::header::CONTENT_LENGTH) {
        return Some("the upstream answered with both Transfer-Encoding and Content-Length");
    }
    let only_chunked = codings.next().is_none()
        && first
            .to_str()
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    (!only_chunked).then_some("the upstream answered with a transfer coding other than chunked")
}

/// An upstream that echoes the request (a debug endpoint, a
/// misconfigured error page) must not hand the proxy's bearer token to the
/// client. Removes every field with a value that contains the token sent
/// (`credential` is the `Authorization` value, `Bearer <token>`); returns
/// how many fields went. A token echoed in the body is not caught.
pub(super) fn drop_echoed_token(headers: &mut HeaderMap, credential: &HeaderValue) -> usize {
    let Some(token) = credential.as_bytes().strip_prefix(b"Bearer ") else {
        return 0;
    };
    // Short values would match too much by chance; real tokens are long.
    if token.len() < 16 {
        return 0;
    }
    let echoed: Vec<HeaderName> = headers
        .iter()
        .filter(|(_, v)| v.as_bytes().windows(token.len()).any(|w| w == token))
        .map(|(name, _)| name.clone())
        .collect();
    for name in &echoed {
        headers.remove(name);
    }
    echoed.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_the_proxy_will_not_pass_on() {
        let cases: &[(&[(&str, &str)], bool)] = &[
            (&[], false),
            (&[("content-length", "5")], false),
            (&[("transfer-encoding", "chunked")], false),
            (&[("transfer-encoding", "Chunked ")], false),
            (
                &[("transfer-encoding", "chunked"), ("content-length", "5")],
                true,
            ),
            (&[("transfer-encoding", "chunked, gzip")], true),
            (&[("transfer-encoding", "gzip, chunked")], true),
            (
                &[
                    ("transfer-encoding", "gzip"),
                    ("transfer-encoding", "chunked"),
                ],
                true,
            ),
            (&[("transfer-encoding", "identity")], true),
        ];
        for (fields, bad) in cases {
            let mut headers = HeaderMap::new();
            for (name, value) in *fields {
                headers.append(*name, value.parse().unwrap());
            }
            assert_eq!(
                bad_framing(StatusCode::OK, &headers).is_some(),
                *bad,
                "{fields:?}"
            );
        }
        let switching = StatusCode::SWITCHING_PROTOCOLS;
        assert!(bad_framing(switching, &HeaderMap::new()).is_some());
    }

    #[test]
    fn fields_echoing_the_token_are_dropped() {
        let token = "TOKEN_0123456789abcdef";
        let credential = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        let cases: &[(&str, bool)] = &[
            ("Bearer TOKEN_0123456789abcdef", true),
            ("TOKEN_0123456789abcdef", true),
            ("x=TOKEN_0123456789abcdef;y", true),
            ("TOKEN_0123456789abcde", false),
            ("Bearer something-else-entirely", false),
            ("", false),
        ];
        for (value, dropped) in cases {
            let mut headers = HeaderMap::new();
            headers.insert("x-echo", value.parse().unwrap());
            headers.insert("x-kept", "1".parse().unwrap());
            assert_eq!(
                drop_echoed_token(&mut headers, &credential),
                usize::from(*dropped),
                "{value}"
            );
            assert_eq!(headers.contains_key("x-echo"), !dropped, "{value}");
            assert!(headers.contains_key("x-kept"));
        }
        let mut headers = HeaderMap::new();
        headers.insert("x-echo", "abc".parse().unwrap());
        let short = HeaderValue::from_static("Bearer abc");
        assert_eq!(
            drop_echoed_token(&mut headers, &short),
            0,
            "short tokens are not matched"
        );
    }
}
