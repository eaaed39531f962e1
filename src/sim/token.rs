//! The simulated token endpoint, `POST /oauth2/token`: the client-credentials
//! grant as Fitbit documents it (Basic client authentication per RFC 6749
//! §2.3.1, `grant_type`, optional `expires_in`), or as other APIs take it
//! (`client_id` and `client_secret` in the form instead, never both; any
//! positive `expires_in` unless it speaks Fitbit's headers), plus scripted
//! failures.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::time::Instant;

use super::record::ReceivedToken;
use super::respond::{fitbit_error, json, with_body, FitbitError, SimBody, DOCS_HINT};
use super::state::Shared;
use super::TokenFailure;
use crate::config::Secret;
use crate::profile::fitbit::{DEFAULT_TOKEN_LIFETIME, TOKEN_LIFETIMES};

/// A token request's form is a few dozen bytes; anything near this is abuse.
const MAX_FORM: usize = 64 * 1024;

pub(crate) async fn handle(shared: &Shared, req: Request<Incoming>) -> Response<SimBody> {
    let (parts, body) = req.into_parts();
    let form = Limited::new(body, MAX_FORM)
        .collect()
        .await
        .map(|b| b.to_bytes());
    let fields = form.as_ref().map(parse_form).unwrap_or_default();
    let (basic, in_form) = (basic_credentials(&parts.headers), form_credentials(&fields));
    let both = basic.is_some() && in_form.is_some();
    let credentials = basic.or(in_form);
    let failure = record(shared, &parts, &fields, credentials.as_ref());
    let delay = shared.lock().token_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(failure) = failure {
        return scripted_failure(failure, shared).await;
    }
    if form.is_err() {
        return invalid_request("The request body could not be read or is too large.")
            .into_response();
    }
    if both {
        let msg = "Client credentials were sent both in the header and in the body.";
        return invalid_request(msg).into_response();
    }
    match validate(shared, &parts, credentials, &fields) {
        Ok(asked) => issue(shared, asked),
        Err(error) => error.into_response(),
    }
}

/// Logs the request and counts the fetch; returns the scripted failure, if any.
fn record(
    shared: &Shared,
    parts: &Parts,
    form: &[(String, String)],
    credentials: Option<&(String, String)>,
) -> Option<TokenFailure> {
    let mut state = shared.lock();
    state.record_token_request(ReceivedToken {
        method: parts.method.clone(),
        version: parts.version,
        headers: parts.headers.clone(),
        form: form.to_vec(),
        client_id: credentials.map(|(id, _)| id.clone()),
        client_secret: credentials.map(|(_, secret)| Secret::new(secret.as_str())),
        at: tokio::time::Instant::now(),
    });
    state.failure.clone()
}

/// Checks the request as Fitbit would; `Ok` is the lifetime asked for.
fn validate(
    shared: &Shared,
    parts: &Parts,
    credentials: Option<(String, String)>,
    form: &[(String, String)],
) -> Result<u64, FitbitError> {
    if parts.method != Method::POST {
        let msg = "The token endpoint only accepts POST.";
        return Err(FitbitError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            msg,
        ));
    }
    let Some((id, secret)) = credentials else {
        return Err(invalid_client(format!(
            "Authorization header required. {DOCS_HINT}"
        )));
    };
    if id != shared.cfg.client_id || secret != shared.cfg.client_secret {
        let msg = format!("Invalid authorization header. Client id invalid. {DOCS_HINT}");
        return Err(invalid_client(msg));
    }
    if !is_form_content_type(&parts.headers) {
        let msg = "Content-Type must be application/x-www-form-urlencoded.";
        return Err(invalid_request(msg));
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    match field("grant_type") {
        None => return Err(invalid_request("Missing 'grant_type' parameter value.")),
        Some("client_credentials") => {}
        Some(other) => {
            let msg = format!("The grant type '{other}' is not supported.");
            return Err(FitbitError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                msg,
            ));
        }
    }
    // Fitbit takes six lifetimes; the other APIs it stands in for, any.
    let fitbit = shared.cfg.headers == super::Dialect::Fitbit;
    match field("expires_in") {
        None => Ok(DEFAULT_TOKEN_LIFETIME.into()),
        Some(v) => match v.parse::<u64>() {
            Ok(n) if u32::try_from(n).is_ok_and(|n| TOKEN_LIFETIMES.contains(&n)) => Ok(n),
            Ok(n) if n > 0 && !fitbit => Ok(n),
            _ => Err(invalid_request(format!(
                "Invalid 'expires_in' parameter value: {v}."
            ))),
        },
    }
}

/// `client_id` and `client_secret` in the form (RFC 6749 §2.3.1's
/// alternative to Basic).
fn form_credentials(form: &[(String, String)]) -> Option<(String, String)> {
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    Some((field("client_id")?, field("client_secret")?))
}

fn issue(shared: &Shared, asked: u64) -> Response<SimBody> {
    let lifetime = shared
        .cfg
        .token_lifetime
        .unwrap_or(Duration::from_secs(asked));
    let token = format!("{}{:032x}", shared.cfg.token_prefix, rand::random::<u128>());
    let body = serde_json::json!({
        "access_token": token,
        "expires_in": lifetime.as_secs(),
        "scope": "",
        "token_type": "Bearer",
    });
    shared.lock().issue(token, Instant::now() + lifetime);
    no_store(json(StatusCode::OK, &body))
}

async fn scripted_failure(failure: TokenFailure, shared: &Shared) -> Response<SimBody> {
    let expires_in = shared
        .cfg
        .token_lifetime
        .map_or(DEFAULT_TOKEN_LIFETIME.into(), |d| d.as_secs());
    match failure {
        TokenFailure::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            with_body(
                status,
                "text/plain",
                "sim: scripted token endpoint failure\n",
            )
        }
        TokenFailure::InvalidClient => {
            let body = serde_json::json!({
                "error": "invalid_client",
                "error_description": "Client authentication failed.",
            });
            json(StatusCode::UNAUTHORIZED, &body)
        }
        TokenFailure::FitbitError(code, error_type) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
            fitbit_error(status, error_type, "Scripted token endpoint error.")
        }
        TokenFailure::Html => with_body(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<!doctype html><html><body><h1>Sign in</h1></body></html>\n",
        ),
        TokenFailure::MissingField => {
            let body = serde_json::json!({ "expires_in": expires_in, "scope": "", "token_type": "Bearer" });
            no_store(json(StatusCode::OK, &body))
        }
        TokenFailure::Hang => std::future::pending().await,
    }
}

fn invalid_client(message: String) -> FitbitError {
    FitbitError::new(StatusCode::UNAUTHORIZED, "invalid_client", message)
}

fn invalid_request(message: impl Into<String>) -> FitbitError {
    FitbitError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
}

/// RFC 6749 §5.1: token responses must not be cached.
fn no_store(mut response: Response<SimBody>) -> Response<SimBody> {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

fn is_form_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media_type = value.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

fn parse_form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// `Basic base64(urlencode(id) ":" urlencode(secret))` → (id, secret).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((form_decode(id)?, form_decode(secret)?))
}

/// `application/x-www-form-urlencoded` decoding of one component.
fn form_decode(s: &str) -> Option<String> {
    let plus_as_space = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(raw: &str) -> HeaderMap {
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, format!("Basic {encoded}").parse().unwrap());
        headers
    }

    #[test]
    fn basic_credentials_decode_each_part() {
        let cases = [
            ("id:secret", Some(("id", "secret"))),
            ("a%3Ab:c%2Bd+e", Some(("a:b", "c+d e"))),
            ("id%25:s%3A%26", Some(("id%", "s:&"))),
            ("no-colon", None),
            ("id:%FF", None),
        ];
        for (raw, want) in cases {
            let got = basic_credentials(&basic(raw));
            let got = got.as_ref().map(|(i, s)| (i.as_str(), s.as_str()));
            assert_eq!(got, want, "{raw}");
        }
    }

    #[test]
    fn only_basic_scheme_counts() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer aWQ6c2VjcmV0".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "basic aWQ6c2VjcmV0".parse().unwrap());
        assert!(basic_credentials(&headers).is_some());
    }

    #[test]
    fn form_content_type_ignores_parameters_and_case() {
        for (value, want) in [
            ("application/x-www-form-urlencoded", true),
            ("Application/X-WWW-Form-Urlencoded; charset=UTF-8", true),
            ("application/json", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_form_content_type(&headers), want, "{value}");
        }
    }
}
