//! The client-credentials exchange: one `POST token_url`, the client
//! authenticated by a Basic header or in the form body (never both), with
//! the configured scope, extra fields and lifetime, and strict validation
//! of the answer. Errors name what was wrong without ever echoing a token
//! or the secret.

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use serde::Deserialize;

use crate::body::Body;
use crate::config::{ClientAuth, CredentialsConfig};
use crate::error::describe_chain;
use crate::profile::fitbit::{self, ApiError};
use crate::upstream::HttpClient;

/// A token endpoint's answer is small; anything larger is not one.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A granted access token, ready to attach.
pub struct Grant {
    /// `Bearer <token>`, marked sensitive.
    pub header: HeaderValue,
    /// The lifetime the endpoint granted (it rules, whatever was asked).
    pub expires_in: Duration,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("header", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    #[error("token endpoint unreachable: {0}")]
    Transport(String),
    #[error("token endpoint did not answer within {0:?}")]
    Timeout(Duration),
    /// 400/401: the endpoint refused these credentials; retrying soon won't help.
    #[error("credentials rejected by the token endpoint (HTTP {status}): {}", describe(.error))]
    Rejected {
        status: u16,
        error: Option<ApiError>,
    },
    #[error("token endpoint answered HTTP {status}: {}", describe(.error))]
    Status {
        status: u16,
        error: Option<ApiError>,
        /// The endpoint's `Retry-After` (delay-seconds), honoured by the
        /// refresher's backoff.
        retry_after: Option<Duration>,
    },
    #[error("token endpoint sent an unusable answer: {0}")]
    Malformed(&'static str),
}

fn describe(error: &Option<ApiError>) -> String {
    match error {
        Some(e) if e.message.is_empty() => e.error_type.clone(),
        Some(e) => format!("{}: {}", e.error_type, e.message),
        None => "no error details in the body".to_owned(),
    }
}

/// The token endpoint and the fixed parts of every request to it.
pub struct Exchange {
    client: HttpClient,
    url: Uri,
    /// `None` when the client authenticates in the form body.
    basic: Option<HeaderValue>,
    form: Bytes,
    timeout: Duration,
}

impl Exchange {
    pub fn new(client: HttpClient, creds: &CredentialsConfig, timeout: Duration) -> Self {
        let basic = match creds.client_auth {
            ClientAuth::Basic => Some(basic_auth(&creds.client_id, creds.client_secret.expose())),
            ClientAuth::Post => None,
        };
        Exchange {
            client,
            url: creds.token_url.clone(),
            basic,
            form: form_body(creds),
            timeout,
        }
    }

    /// The token endpoint (keys the refresher's failpoint).
    #[cfg(feature = "failpoints")]
    pub(crate) fn url(&self) -> &Uri {
        &self.url
    }

    /// One token request, bounded by the fetch timeout.
    pub async fn fetch(&self) -> Result<Grant, FetchError> {
        match tokio::time::timeout(self.timeout, self.round_trip()).await {
            Ok(result) => result,
            Err(_) => Err(FetchError::Timeout(self.timeout)),
        }
    }

    async fn round_trip(&self) -> Result<Grant, FetchError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone());
        if let Some(basic) = &self.basic {
            req = req.header(AUTHORIZATION, basic.clone());
        }
        let req = req
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ACCEPT, "application/json")
            .body(Body::full(self.form.clone()))
            .expect("static parts are valid");
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| FetchError::Transport(describe_chain(&e)))?;
        let status = res.status();
        // A success that says it is not JSON (a captive portal's page, a
        // misrouted request) is not a grant, whatever its body holds.
        if status.is_success() && !is_json(res.headers()) {
            return Err(FetchError::Malformed(
                "the answer's Content-Type is not JSON",
            ));
        }
        let retry_after = crate::pacing::dialect::retry_after(res.headers());
        let bytes = Limited::new(res.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| FetchError::Transport(format!("reading the answer: {e}")))?
            .to_bytes();
        parse_response(status, &bytes).map_err(|e| match e {
            FetchError::Status { status, error, .. } => FetchError::Status {
                status,
                error,
                retry_after,
            },
            other => other,
        })
    }
}

/// Whether the answer's `Content-Type`, if it has one, is JSON
/// (`application/json` or a `+json` type, any parameters). An answer
/// without one is judged by its body alone.
fn is_json(headers: &http::HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return true;
    };
    let media = value.to_str().unwrap_or_default();
    let media = media.split(';').next().unwrap_or_default().trim();
    media.eq_ignore_ascii_case("application/json") || media.to_ascii_lowercase().ends_with("+json")
}

/// RFC 6749 §2.3.1: each part is form-urlencoded before joining with `:`.
pub fn basic_auth(client_id: &str, secret: &str) -> HeaderValue {
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let joined = format!("{}:{}", encode(client_id), encode(secret));
    let b64 = base64::engine::general_purpose::STANDARD.encode(joined);
    let mut value =
        HeaderValue::try_from(format!("Basic {b64}")).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// `grant_type=client_credentials`, then the client's id and secret when
/// they go in the body, `scope` when set, `expires_in` when asked for, and
/// the extra fields.
fn form_body(creds: &CredentialsConfig) -> Bytes {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if creds.client_auth == ClientAuth::Post {
        form.append_pair("client_id", &creds.client_id);
        form.append_pair("client_secret", creds.client_secret.expose());
    }
    if !creds.scope.is_empty() {
        form.append_pair("scope", &creds.scope);
    }
    if let Some(secs) = creds.expires_in {
        form.append_pair("expires_in", &secs.to_string());
    }
    for (name, value) in &creds.params {
        form.append_pair(name, value);
    }
    form.finish().into()
}

/// Validates a token endpoint answer. Never puts the token in an error.
pub fn parse_response(status: StatusCode, body: &[u8]) -> Result<Grant, FetchError> {
    if !status.is_success() {
        let error = fitbit::parse_error(body);
        let status = status.as_u16();
        return Err(if status == 400 || status == 401 {
            FetchError::Rejected { status, error }
        } else {
            FetchError::Status {
                status,
                error,
                retry_after: None,
            }
        });
    }
    #[derive(Deserialize)]
    struct Answer {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        token_type: Option<String>,
    }
    let answer: Answer =
        serde_json::from_slice(body).map_err(|_| FetchError::Malformed("not a JSON object"))?;
    let token = answer
        .access_token
        .ok_or(FetchError::Malformed("no access_token"))?;
    let token_type = answer
        .token_type
        .ok_or(FetchError::Malformed("no token_type"))?;
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(FetchError::Malformed("token_type is not Bearer"));
    }
    let expires_in = parse_expires_in(answer.expires_in)?;
    if !is_b64token(&token) {
        return Err(FetchError::Malformed(
            "access_token is empty or not an RFC 6750 b64token",
        ));
    }
    let mut header = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| FetchError::Malformed("access_token cannot be a header value"))?;
    header.set_sensitive(true);
    Ok(Grant { header, expires_in })
}

/// RFC 6750 §2.1: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" )
/// *"="`. Nothing else can be sent as a Bearer credential, so nothing else
/// is taken (a CR LF or space could split or bend the header).
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

/// A positive whole number of seconds, as a JSON number or numeric string.
fn parse_expires_in(value: Option<serde_json::Value>) -> Result<Duration, FetchError> {
    let secs = match value.ok_or(FetchError::Malformed("no expires_in"))? {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s > 0 => Ok(Duration::from_secs(s.min(u64::from(u32::MAX)))),
        _ => Err(FetchError::Malformed(
            "expires_in is not a positive number of seconds",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_encodes_each_part_first() {
        // Fitbit's page: "client_id:client secret" — the space becomes '+'.
        let v = basic_auth("client_id", "client secret");
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, b"client_id:client+secret");
        assert!(v.is_sensitive());
        let v = basic_auth("a:b", "p%&=");
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        assert_eq!(decoded, b"a%3Ab:p%25%26%3D");
    }

    fn creds(client_auth: ClientAuth, scope: &str, expires_in: Option<u32>) -> CredentialsConfig {
        CredentialsConfig {
            token_url: "https://x/token".parse().unwrap(),
            client_id: "id 1".into(),
            client_secret: crate::config::Secret::new("s&x"),
            secret_source: crate::config::SecretSource::Literal,
            client_auth,
            scope: scope.into(),
            params: vec![("audience".into(), "https://api.example/".into())],
            expires_in,
            refresh_before_expiry: Duration::ZERO,
        }
    }

    #[test]
    fn form_body_carries_what_the_profile_and_config_ask() {
        let mut fitbit = creds(ClientAuth::Basic, "", Some(28800));
        fitbit.params.clear();
        assert_eq!(
            form_body(&fitbit),
            "grant_type=client_credentials&expires_in=28800"
        );
        assert_eq!(
            form_body(&creds(ClientAuth::Post, "a b", None)),
            "grant_type=client_credentials&client_id=id+1&client_secret=s%26x&scope=a+b&audience=https%3A%2F%2Fapi.example%2F"
        );
        assert_eq!(
            form_body(&creds(ClientAuth::Basic, "", Some(60))),
            "grant_type=client_credentials&expires_in=60&audience=https%3A%2F%2Fapi.example%2F"
        );
    }

    #[test]
    fn response_validation_table() {
        let ok = |body: &str| parse_response(StatusCode::OK, body.as_bytes());
        let g = ok(r#"{"access_token":"TOKEN_CANARY_1","expires_in":28800,"scope":"","token_type":"Bearer"}"#).unwrap();
        assert_eq!(g.expires_in, Duration::from_secs(28800));
        assert!(g.header.is_sensitive());
        assert_eq!(g.header, "Bearer TOKEN_CANARY_1");
        assert!(ok(r#"{"access_token":"t","expires_in":"3600","token_type":"bearer"}"#).is_ok());
        // A JWT, and base64 with its padding.
        assert!(ok(
            r#"{"access_token":"eyJh.eyJz-_~+/.c2ln==","expires_in":1,"token_type":"Bearer"}"#
        )
        .is_ok());
        let bad: &[(&str, &str)] = &[
            ("<html>hi</html>", "not a JSON object"),
            (
                r#"{"expires_in":1,"token_type":"Bearer"}"#,
                "no access_token",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY_2","token_type":"Bearer"}"#,
                "no expires_in",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY_2","expires_in":0,"token_type":"Bearer"}"#,
                "positive",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY_2","expires_in":-5,"token_type":"Bearer"}"#,
                "positive",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY_2","expires_in":1.5,"token_type":"Bearer"}"#,
                "positive",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY_2","expires_in":60,"token_type":"mac"}"#,
                "not Bearer",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY_2","expires_in":60}"#,
                "no token_type",
            ),
            (
                r#"{"access_token":"TOKEN CANARY","expires_in":60,"token_type":"Bearer"}"#,
                "b64token",
            ),
            (
                r#"{"access_token":"","expires_in":60,"token_type":"Bearer"}"#,
                "empty",
            ),
            (
                r#"{"access_token":"TOKEN=CANARY","expires_in":60,"token_type":"Bearer"}"#,
                "b64token",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY\r\nX-Injected: 1","expires_in":60,"token_type":"Bearer"}"#,
                "b64token",
            ),
            (
                r#"{"access_token":"TOKEN_CANARY_tök","expires_in":60,"token_type":"Bearer"}"#,
                "b64token",
            ),
        ];
        for (body, want) in bad {
            let err = ok(body).unwrap_err().to_string();
            assert!(err.contains(want), "{body}: {err}");
            assert!(
                !err.contains("CANARY"),
                "{body}: error echoes the token: {err}"
            );
        }
    }

    #[test]
    fn json_content_types() {
        let with = |value: Option<&str>| {
            let mut h = http::HeaderMap::new();
            if let Some(v) = value {
                h.insert(CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            }
            is_json(&h)
        };
        assert!(with(None));
        assert!(with(Some("application/json")));
        assert!(with(Some("Application/JSON;charset=UTF-8")));
        assert!(with(Some("application/problem+json")));
        assert!(!with(Some("text/html; charset=utf-8")));
        assert!(!with(Some("text/plain")));
        assert!(!with(Some("application/jsonx")));
        assert!(!with(Some("")));
    }

    #[test]
    fn error_statuses_are_classified() {
        let rejected = parse_response(
            StatusCode::UNAUTHORIZED,
            br#"{"errors":[{"errorType":"invalid_client","message":"Invalid authorization header"}]}"#,
        )
        .unwrap_err();
        assert!(matches!(rejected, FetchError::Rejected { status: 401, .. }));
        assert!(rejected
            .to_string()
            .contains("invalid_client: Invalid authorization header"));
        let rfc = parse_response(
            StatusCode::BAD_REQUEST,
            br#"{"error":"unauthorized_client"}"#,
        )
        .unwrap_err();
        assert!(rfc.to_string().contains("unauthorized_client"), "{rfc}");
        let outage =
            parse_response(StatusCode::SERVICE_UNAVAILABLE, b"<html>down</html>").unwrap_err();
        assert!(matches!(
            outage,
            FetchError::Status {
                status: 503,
                error: None,
                retry_after: None,
            }
        ));
    }
}
