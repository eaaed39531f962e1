//! What the simulator saw: every API and token request, with the headers and
//! HTTP version exactly as they arrived. `Debug` prints `<redacted>` for
//! credentials, so a failing test's output never leaks a token or the secret.

use std::fmt;

use http::{HeaderMap, Method, StatusCode, Version};

use crate::config::Secret;

/// One API request (any path but the token endpoint).
#[derive(Clone)]
pub struct Received {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub version: Version,
    /// As received, `Authorization` and hop-by-hop headers included.
    pub headers: HeaderMap,
    /// Bytes of request body read.
    pub body_len: u64,
    /// Trailer fields that came after the body (empty when none).
    pub trailers: HeaderMap,
    /// The whole `Authorization` value (`"Bearer …"`), if any.
    pub authorization: Option<String>,
    /// The status the simulator answered.
    pub status: StatusCode,
    /// When its head arrived and the quota decision was made (tokio's clock).
    pub at: tokio::time::Instant,
}

/// One request to the token endpoint.
#[derive(Clone)]
pub struct ReceivedToken {
    pub method: Method,
    pub version: Version,
    /// As received, the Basic `Authorization` included.
    pub headers: HeaderMap,
    /// The form body's fields in order, decoded.
    pub form: Vec<(String, String)>,
    /// The client id from Basic auth, decoded (base64, then form-urldecoded).
    pub client_id: Option<String>,
    /// The secret from Basic auth, decoded; prints as `<redacted>`.
    pub client_secret: Option<Secret>,
    /// When it arrived (tokio's clock, so paused-time tests can read gaps).
    pub at: tokio::time::Instant,
}

impl ReceivedToken {
    /// The first value of form field `name`.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.query)
            .field("version", &self.version)
            .field("headers", &Redacted(&self.headers))
            .field("body_len", &self.body_len)
            .field("trailers", &Redacted(&self.trailers))
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("status", &self.status)
            .finish()
    }
}

impl fmt::Debug for ReceivedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedToken")
            .field("method", &self.method)
            .field("version", &self.version)
            .field("headers", &Redacted(&self.headers))
            .field("form", &self.form)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret)
            .finish()
    }
}

/// A header map whose credential-bearing values print as `<redacted>`.
struct Redacted<'a>(&'a HeaderMap);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            if is_credential(name) {
                map.entry(name, &"<redacted>");
            } else {
                map.entry(name, value);
            }
        }
        map.finish()
    }
}

fn is_credential(name: &http::HeaderName) -> bool {
    name == http::header::AUTHORIZATION
        || name == http::header::PROXY_AUTHORIZATION
        || name == http::header::COOKIE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_credentials() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer TOKEN_CANARY_1".parse().unwrap());
        headers.insert(
            "proxy-authorization",
            "Basic U0VDUkVUX0NBTkFSWQ==".parse().unwrap(),
        );
        headers.insert("accept-language", "en_US".parse().unwrap());
        let received = Received {
            method: Method::GET,
            path: "/1/user/-/profile.json".into(),
            query: None,
            version: Version::HTTP_11,
            headers: headers.clone(),
            body_len: 0,
            trailers: headers.clone(),
            authorization: Some("Bearer TOKEN_CANARY_1".into()),
            status: StatusCode::OK,
            at: tokio::time::Instant::now(),
        };
        let token = ReceivedToken {
            method: Method::POST,
            version: Version::HTTP_11,
            headers,
            form: vec![("grant_type".into(), "client_credentials".into())],
            client_id: Some("id".into()),
            client_secret: Some(Secret::new("SECRET_CANARY")),
            at: tokio::time::Instant::now(),
        };
        let printed = format!("{received:?} {token:?} {received:#?}");
        assert!(!printed.contains("CANARY"), "{printed}");
        assert!(!printed.contains("U0VDUkVU"), "{printed}");
        assert!(printed.contains("en_US"), "{printed}");
        assert_eq!(token.form_value("grant_type"), Some("client_credentials"));
    }
}
