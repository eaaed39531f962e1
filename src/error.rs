//! The one error type of the request path. Every layer fails a request with
//! a [`ProxyError`] (boxed as a [`BoxError`] on its way out), and only the
//! respond layer (`layers/respond.rs`) turns it into an answer. Plain data:
//! this module depends on no other part of the crate.

use std::time::Duration;

use http::StatusCode;

/// Errors that cross layer boundaries inside the stack.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The causes a layer may fail a request with. Each maps to one row of the
/// table of the proxy's own answers (status and `x-fitbit-proxy-error`);
/// anything else that escapes the stack is a 502.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("{0}")]
    BadRequest(&'static str),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    MethodNotAllowed(&'static str),
    /// Refused by the HTTP/1 parser before the stack saw the request.
    #[error("the request target is too long")]
    UriTooLong,
    /// Refused by the HTTP/1 parser before the stack saw the request: over
    /// the head buffer or the number of header fields.
    #[error("the request head is too large")]
    HeadTooLarge,
    #[error("no request body data from the client within listen.header_read_timeout ({0:?})")]
    ClientTimeout(Duration),
    #[error("request body exceeds listen.max_request_body ({limit} bytes)")]
    PayloadTooLarge { limit: u64 },
    #[error("no access token can be had: {reason}")]
    TokenUnavailable {
        reason: String,
        retry_after: Duration,
    },
    #[error("no pacing slot within rate_limit.max_wait: {view}; retry after {} s", retry_after_secs(*.retry_after))]
    RateLimited {
        retry_after: Duration,
        view: QuotaView,
    },
    #[error("too many requests waiting for a pacing slot (rate_limit.max_queued)")]
    QueueFull { retry_after: Duration },
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("no response headers from the upstream within upstream.request_timeout ({0:?})")]
    UpstreamTimeout(Duration),
}

impl ProxyError {
    /// Status and `x-fitbit-proxy-error` code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ProxyError::MethodNotAllowed(_) => {
                (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
            }
            ProxyError::UriTooLong => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ProxyError::HeadTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
            ),
            ProxyError::ClientTimeout(_) => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ProxyError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            ProxyError::TokenUnavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "token_unavailable")
            }
            ProxyError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ProxyError::QueueFull { .. } => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            ProxyError::UpstreamUnreachable(_) => (StatusCode::BAD_GATEWAY, "upstream_unreachable"),
            ProxyError::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        }
    }

    /// How long the client should wait before trying again, for the
    /// refusals that say so.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProxyError::TokenUnavailable { retry_after, .. }
            | ProxyError::RateLimited { retry_after, .. }
            | ProxyError::QueueFull { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

/// The proxy's view of the quota, as a refusal reports it: the limit, what
/// is left of it, how many requests already wait for what is left, and
/// when the window resets, in whole seconds rounded up once (a client told
/// to come back then never comes back early), so that the body and the
/// headers say the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaView {
    pub limit: u32,
    pub remaining: u32,
    /// Requests admitted and waiting for their slot: they hold this much
    /// of `remaining`.
    pub waiting: u32,
    pub reset_secs: u64,
    /// The window's length, when it is known.
    pub window: Option<Duration>,
}

impl QuotaView {
    pub fn new(limit: u32, remaining: u32, reset: Duration) -> Self {
        QuotaView {
            limit,
            remaining,
            waiting: 0,
            reset_secs: ceil_secs(reset),
            window: None,
        }
    }
}

impl std::fmt::Display for QuotaView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} requests left in this window",
            self.remaining, self.limit
        )?;
        if self.waiting > 0 && self.remaining > 0 {
            let held = self.waiting.min(self.remaining);
            write!(f, " ({held} held by requests already waiting)")?;
        }
        write!(f, ", reset in {} s", self.reset_secs)
    }
}

/// `Retry-After` in whole seconds: rounded up so a client never comes back
/// early, and at least 1.
pub(crate) fn retry_after_secs(after: Duration) -> u64 {
    ceil_secs(after).max(1)
}

/// A duration in whole seconds, rounded up.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// `outer: inner: innermost`, so that "client error (Connect)" also says
/// what failed underneath (refused, certificate unknown, timed out…).
pub(crate) fn describe_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}
