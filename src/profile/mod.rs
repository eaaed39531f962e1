//! What one upstream API's conventions decide: default URLs, the token
//! request's parameters, the rate-limit header dialect it speaks, and the
//! shape of the proxy's own error bodies. One module per profile:
//! `fitbit.rs` (the default, today's behaviour) and `generic.rs` (any
//! OAuth 2.0 client-credentials API, RFC 9457 problem details).

pub mod fitbit;
pub mod generic;

use http::StatusCode;

/// The proxy's own marker on every response it generates itself, whatever
/// the profile.
pub const PROXY_ERROR_HEADER: &str = "x-fitbit-proxy-error";

/// The top-level `profile` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Fitbit,
    Generic,
}

/// What `expires_in` may be under a profile, and what is sent by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetimes {
    /// Only these values; this one when the key is not set.
    OneOf(&'static [u32], u32),
    /// Any positive number of seconds, sent only when set.
    AnyWhenSet,
}

impl Profile {
    pub const NAMES: &'static str = r#""fitbit" or "generic""#;

    pub fn parse(name: &str) -> Option<Profile> {
        match name {
            "fitbit" => Some(Profile::Fitbit),
            "generic" => Some(Profile::Generic),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Fitbit => "fitbit",
            Profile::Generic => "generic",
        }
    }

    /// `upstream.url` when the key is not set; `None`: it is required.
    pub fn default_upstream_url(self) -> Option<&'static str> {
        match self {
            Profile::Fitbit => Some(fitbit::UPSTREAM_URL),
            Profile::Generic => None,
        }
    }

    /// `credentials.token_url` when the key is not set; `None`: required.
    pub fn default_token_url(self) -> Option<&'static str> {
        match self {
            Profile::Fitbit => Some(fitbit::TOKEN_URL),
            Profile::Generic => None,
        }
    }

    pub fn lifetimes(self) -> Lifetimes {
        match self {
            Profile::Fitbit => {
                Lifetimes::OneOf(&fitbit::TOKEN_LIFETIMES, fitbit::DEFAULT_TOKEN_LIFETIME)
            }
            Profile::Generic => Lifetimes::AnyWhenSet,
        }
    }

    /// `rate_limit.headers` when the key is not set.
    pub fn default_headers(self) -> &'static str {
        match self {
            Profile::Fitbit => "fitbit",
            Profile::Generic => generic::DEFAULT_HEADERS,
        }
    }

    /// The body and its content type for one of the proxy's own answers:
    /// `code` is the `x-fitbit-proxy-error` kind, `detail` the sentence.
    pub fn error_body(
        self,
        status: StatusCode,
        code: &str,
        detail: &str,
    ) -> (&'static str, Vec<u8>) {
        match self {
            Profile::Fitbit => ("application/json", fitbit::error_body(code, detail)),
            Profile::Generic => (
                generic::PROBLEM_JSON,
                generic::problem(status, code, detail),
            ),
        }
    }
}
