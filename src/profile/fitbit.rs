//! The `fitbit` profile, the default: everything Fitbit-specific lives here
//! (its URLs, the rate-limit header names, the token endpoint's accepted
//! lifetimes, and the `{"errors":[…]}` error shape, read from the token
//! endpoint and the API and written by the proxy).

use serde::Deserialize;

/// The Fitbit Web API, where requests go when `upstream.url` is not set.
pub const UPSTREAM_URL: &str = "https://api.fitbit.com";

/// Fitbit's token endpoint, the default `credentials.token_url`.
pub const TOKEN_URL: &str = "https://api.fitbit.com/oauth2/token";

pub const RATE_LIMIT_LIMIT: &str = "fitbit-rate-limit-limit";
pub const RATE_LIMIT_REMAINING: &str = "fitbit-rate-limit-remaining";
pub const RATE_LIMIT_RESET: &str = "fitbit-rate-limit-reset";

/// The proxy's own marker on every response it generates itself.
pub use super::PROXY_ERROR_HEADER;

/// Token lifetimes the token endpoint accepts for `expires_in` (seconds).
pub const TOKEN_LIFETIMES: [u32; 6] = [3600, 28_800, 86_400, 604_800, 2_592_000, 31_536_000];

/// The lifetime asked for when `credentials.expires_in` is not set.
pub const DEFAULT_TOKEN_LIFETIME: u32 = 28_800;

/// Upstream 401 error types that mean "this token is no good any more",
/// as opposed to a request the token may not make.
pub fn is_token_rejection(error_type: &str) -> bool {
    matches!(error_type, "invalid_token" | "expired_token")
}

/// Builds a body in Fitbit's error shape:
/// `{"errors":[{"errorType":…,"fieldName":"","message":…}],"success":false}`.
pub fn error_body(error_type: &str, message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "errors": [{ "errorType": error_type, "fieldName": "", "message": message }],
        "success": false,
    });
    serde_json::to_vec(&body).expect("a JSON value always serialises")
}

/// The first error in a body of either shape a Fitbit endpoint may answer:
/// Fitbit's `{"errors":[{"errorType","message"}]}` or RFC 6749's
/// `{"error","error_description"}`. `None` when the body is neither.
pub fn parse_error(body: &[u8]) -> Option<ApiError> {
    #[derive(Deserialize)]
    struct Fitbit {
        errors: Vec<FitbitEntry>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct FitbitEntry {
        error_type: String,
        #[serde(default)]
        message: String,
    }
    #[derive(Deserialize)]
    struct Rfc6749 {
        error: String,
        #[serde(default)]
        error_description: String,
    }
    if let Ok(f) = serde_json::from_slice::<Fitbit>(body) {
        let first = f.errors.into_iter().next()?;
        return Some(ApiError::new(&first.error_type, &first.message));
    }
    let r = serde_json::from_slice::<Rfc6749>(body).ok()?;
    Some(ApiError::new(&r.error, &r.error_description))
}

/// An error type and message as a Fitbit endpoint reported them, cleaned for
/// logs: control characters dropped and lengths capped, since the text comes
/// from the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub error_type: String,
    pub message: String,
}

impl ApiError {
    fn new(error_type: &str, message: &str) -> Self {
        ApiError {
            error_type: clean(error_type, 64),
            message: clean(message, 256),
        }
    }
}

fn clean(text: &str, max_chars: usize) -> String {
    text.chars()
        .filter(|c| !c.is_control())
        .take(max_chars)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_error_shapes() {
        let cases: &[(&str, Option<(&str, &str)>)] = &[
            (
                r#"{"errors":[{"errorType":"invalid_client","message":"bad"}],"success":false}"#,
                Some(("invalid_client", "bad")),
            ),
            (
                r#"{"errors":[{"errorType":"expired_token"}]}"#,
                Some(("expired_token", "")),
            ),
            (
                r#"{"error":"invalid_client","error_description":"nope"}"#,
                Some(("invalid_client", "nope")),
            ),
            (
                r#"{"error":"unauthorized_client"}"#,
                Some(("unauthorized_client", "")),
            ),
            (r#"{"errors":[]}"#, None),
            (r#"<html>oops</html>"#, None),
            (r#"{"access_token":"x"}"#, None),
            ("", None),
        ];
        for (body, want) in cases {
            let got = parse_error(body.as_bytes());
            let got = got
                .as_ref()
                .map(|e| (e.error_type.as_str(), e.message.as_str()));
            assert_eq!(got, *want, "body: {body}");
        }
    }

    #[test]
    fn cleans_network_text() {
        let long = "x".repeat(1000);
        let body = format!(r#"{{"error":"a\u001b[31mb","error_description":"{long}"}}"#);
        let e = parse_error(body.as_bytes()).unwrap();
        assert_eq!(e.error_type, "a[31mb");
        assert_eq!(e.message.len(), 256);
    }

    #[test]
    fn error_body_is_fitbit_shaped() {
        let v: serde_json::Value =
            serde_json::from_slice(&error_body("rate_limited", "wait \"17\" s")).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(v["errors"][0]["errorType"], "rate_limited");
        assert_eq!(v["errors"][0]["fieldName"], "");
        assert_eq!(v["errors"][0]["message"], "wait \"17\" s");
    }
}
