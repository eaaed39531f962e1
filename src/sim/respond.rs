//! Response building shared by the token endpoint and the API: the one place
//! that writes Fitbit's error shape, the rate-limit headers in the configured
//! dialect, `Date` and `Retry-After` on the simulator's own clock, and a
//! streaming body that sends any number of bytes from one static buffer.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, DATE, RETRY_AFTER};
use http::{HeaderMap, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::quota::QuotaView;
use super::{Dialect, Reset, SimConfig};
use crate::pacing::wallclock;

/// Every simulator response body: a buffer or a [`ZeroStream`].
pub(crate) type SimBody = BoxBody<Bytes, Infallible>;

/// Chunk size of `/sim/stream/{bytes}`.
const CHUNK: usize = 16 * 1024;
static ZEROS: [u8; CHUNK] = [0; CHUNK];

/// Fitbit's pointer at the end of its authorization errors.
pub(crate) const DOCS_HINT: &str = "Visit https://dev.fitbit.com/docs/oauth2 for more information on the Fitbit Web API authorization process.";

/// Fitbit's error body: `{"errors":[{"errorType":…,"message":…}],"success":false}`.
pub(crate) fn fitbit_error(
    status: StatusCode,
    error_type: &str,
    message: &str,
) -> Response<SimBody> {
    let body = serde_json::json!({
        "errors": [{ "errorType": error_type, "message": message }],
        "success": false,
    });
    json(status, &body)
}

/// A Fitbit-shaped error not yet turned into a response, small enough to
/// pass around in a `Result`.
#[derive(Debug)]
pub(crate) struct FitbitError {
    pub(crate) status: StatusCode,
    pub(crate) error_type: &'static str,
    pub(crate) message: String,
}

impl FitbitError {
    pub(crate) fn new(
        status: StatusCode,
        error_type: &'static str,
        message: impl Into<String>,
    ) -> Self {
        FitbitError {
            status,
            error_type,
            message: message.into(),
        }
    }

    pub(crate) fn into_response(self) -> Response<SimBody> {
        fitbit_error(self.status, self.error_type, &self.message)
    }
}

pub(crate) fn json(status: StatusCode, body: &serde_json::Value) -> Response<SimBody> {
    with_body(status, "application/json", body.to_string())
}

pub(crate) fn with_body(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<SimBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub(crate) fn full(body: impl Into<Bytes>) -> SimBody {
    Full::new(body.into()).boxed()
}

/// Adds the quota headers of `views` in the configured dialect, and on a
/// 429 `Retry-After` (the first view is the policy that is spent).
pub(crate) fn add_rate_limit_headers(
    response: &mut Response<SimBody>,
    views: &[QuotaView],
    cfg: &SimConfig,
) {
    let rejected = response.status() == StatusCode::TOO_MANY_REQUESTS;
    let headers = response.headers_mut();
    let Some(first) = views.first() else { return };
    match cfg.headers {
        Dialect::None => {}
        Dialect::Ietf => ietf(headers, views),
        Dialect::Fitbit => triple(headers, "fitbit-rate-limit", first, Reset::Delta, cfg),
        Dialect::RateLimit(reset) => triple(headers, "ratelimit", first, reset, cfg),
        Dialect::XRateLimit(reset) => triple(headers, "x-ratelimit", first, reset, cfg),
        Dialect::XRateLimitDash(reset) => triple(headers, "x-rate-limit", first, reset, cfg),
    }
    if rejected {
        let value = if cfg.retry_after_date {
            let at = sim_clock(first.reset_at, cfg);
            HeaderValue::try_from(wallclock::http_date(at)).ok()
        } else {
            Some(first.reset_secs.into())
        };
        if let Some(value) = value {
            headers.insert(RETRY_AFTER, value);
        }
    }
}

/// `Date` on the simulator's clock (hyper's own is turned off).
pub(crate) fn add_date(response: &mut Response<SimBody>, cfg: &SimConfig) {
    if !cfg.send_date {
        return;
    }
    let now = sim_clock(Instant::now(), cfg);
    if let Ok(value) = HeaderValue::try_from(wallclock::http_date(now)) {
        response.headers_mut().insert(DATE, value);
    }
}

/// `instant` as Unix time on the simulator's (possibly skewed) clock.
fn sim_clock(instant: Instant, cfg: &SimConfig) -> Duration {
    let real = wallclock::at(instant);
    let skew = Duration::from_secs(cfg.clock_skew_secs.unsigned_abs());
    if cfg.clock_skew_secs >= 0 {
        real + skew
    } else {
        real.saturating_sub(skew)
    }
}

fn triple(headers: &mut HeaderMap, prefix: &str, view: &QuotaView, reset: Reset, cfg: &SimConfig) {
    // An epoch is the reset's whole second, rounded down, on its clock.
    let reset = match reset {
        Reset::Delta => view.reset_secs,
        Reset::Epoch => sim_clock(view.reset_at, cfg).as_secs(),
    };
    for (suffix, value) in [
        ("limit", u64::from(view.limit)),
        ("remaining", u64::from(view.remaining)),
        ("reset", reset),
    ] {
        if let Ok(name) = HeaderName::try_from(format!("{prefix}-{suffix}")) {
            headers.insert(name, value.into());
        }
    }
}

/// Draft-11's `RateLimit-Policy` and `RateLimit`, one item per policy.
fn ietf(headers: &mut HeaderMap, views: &[QuotaView]) {
    let policy: Vec<String> = views
        .iter()
        .map(|v| format!("\"{}\";q={};w={}", v.name, v.limit, v.window.as_secs()))
        .collect();
    let current: Vec<String> = views
        .iter()
        .map(|v| format!("\"{}\";r={};t={}", v.name, v.remaining, v.reset_secs))
        .collect();
    for (name, items) in [("ratelimit-policy", policy), ("ratelimit", current)] {
        if let Ok(value) = HeaderValue::try_from(items.join(", ")) {
            headers.insert(name, value);
        }
    }
}

/// A body of `len` zero bytes in 16 KiB frames, each a view of one static
/// buffer, so a huge download costs the simulator no memory.
pub(crate) struct ZeroStream {
    left: u64,
}

impl ZeroStream {
    pub(crate) fn new(len: u64) -> ZeroStream {
        ZeroStream { left: len }
    }
}

impl Body for ZeroStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.left).map_or(CHUNK, |left| left.min(CHUNK));
        self.left -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zero_stream_sends_exactly_len_in_chunks() {
        let body = ZeroStream::new(40_000);
        assert_eq!(body.size_hint().exact(), Some(40_000));
        let mut body = body.boxed();
        let mut sizes = Vec::new();
        while let Some(frame) = body.frame().await {
            sizes.push(frame.unwrap().into_data().unwrap().len());
        }
        assert_eq!(sizes, [16_384, 16_384, 7_232]);
    }

    #[tokio::test]
    async fn fitbit_error_has_fitbits_shape() {
        let response = fitbit_error(StatusCode::UNAUTHORIZED, "invalid_token", "no");
        assert_eq!(response.status(), 401);
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(body["errors"][0]["errorType"], "invalid_token");
        assert_eq!(body["success"], false);
    }
}
