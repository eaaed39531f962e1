//! The `generic` profile: any OAuth 2.0 client-credentials API. No default
//! upstream or token endpoint (both must be configured), `expires_in` sent
//! only when configured, and the proxy's own errors as RFC 9457 problem
//! details (`application/problem+json`).

use http::StatusCode;

/// The media type of an RFC 9457 problem details body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The dialect assumed when `rate_limit.headers` is not set: the IETF
/// fields, the standard one; an API that sends none of them is paced by
/// `quota` per `window`.
pub const DEFAULT_HEADERS: &str = "ietf";

/// Where the `type` URIs of the proxy's problems point: a fragment per
/// kind, so clients can match on it as on `x-fitbit-proxy-error`.
const TYPE_BASE: &str = "https://github.com/fitbit-proxy/fitbit-proxy#error-";

/// `{"type":…,"title":…,"status":…,"detail":…}` for one of the proxy's own
/// answers; `code` is the kind (`rate_limited`…).
pub fn problem(status: StatusCode, code: &str, detail: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "type": format!("{TYPE_BASE}{code}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    serde_json::to_vec(&body).expect("a JSON value always serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_has_the_four_members_of_rfc_9457() {
        let body = problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "wait 3 s");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 429);
        assert_eq!(v["title"], "Too Many Requests");
        assert_eq!(v["detail"], "wait 3 s");
        assert!(v["type"].as_str().unwrap().ends_with("#error-rate_limited"));
    }
}
