//! The simulated Fitbit Web API (or any client-credentials API): a token
//! endpoint (`POST /oauth2/token`, client-credentials grant) and an API that
//! reports its quota in any of the proxy's rate-limit dialects (Fitbit's by
//! default; `SimConfig::headers`), served in-process for the integration
//! tests, `fitbit-proxy demo` and `simulate`.
//!
//! [`Sim`] is the shared state and the scripting handle; [`Sim::serve_plain`]
//! and [`Sim::serve_tls`] put it on a listener (several at once if wanted). All
//! time is tokio time, so `start_paused` tests control token expiry and quota
//! windows with `tokio::time::advance`.
//!
//! Every path but the token endpoint is "the API": it needs a valid
//! `Authorization: Bearer` token (missing or malformed → 401 `invalid_client`,
//! unknown or revoked → 401 `invalid_token`, expired → 401 `expired_token`),
//! spends one unit of quota (spent → 429 with `Retry-After`), and answers a
//! JSON echo of the method, path, query, `Accept-Language` and `Accept-Locale`.
//! A few paths behave specially; like any API call they need a token, spend
//! quota and are recorded:
//!
//! | path | answer |
//! |---|---|
//! | `/1/user/-/profile.json` | a Fitbit-shaped `{"user":{…}}` |
//! | `/1/user/-/activities/date/{date}.json` | a Fitbit-shaped day summary |
//! | `/1/user/-/devices.json` | a Fitbit-shaped list of devices |
//! | `/sim/status/{code}[?errorType=X]` | status `code` (200–599) with a Fitbit-shaped body (`errorType` default `sim_status`) |
//! | `/sim/slow/{ms}` | waits `ms` milliseconds of tokio time, then the usual echo |
//! | `/sim/stream/{bytes}` | a body of `bytes` zero bytes sent in 16 KiB chunks, never buffered |
//! | `/sim/hop` | the echo plus hop-by-hop headers (`Connection: x-hop`, `x-hop`, `Keep-Alive`, `Proxy-Connection`, `Trailer`, `Upgrade`), HTTP/1.x only |
//!
//! The quota window opens at the first request that spends quota (or at the
//! first [`Sim::spend_quota`]), or at a chosen offset
//! (`SimConfig::window_offset`), and later windows follow back to back, the
//! way Fitbit's hourly windows sit on the clock. In the IETF dialect a second
//! policy may be enforced beside the first (`SimConfig::second_policy`).
//! With `headers = Dialect::None` the answers carry no quota headers and a
//! 429 only `Retry-After` (the Retry-After-only mode), in seconds or as an
//! HTTP-date (`retry_after_date`).

mod api;
pub mod demo;
mod fitbit;
mod quota;
mod record;
mod respond;
mod server;
mod state;
mod tls;
mod token;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use record::{Received, ReceivedToken};
pub use server::ServerHandle;
pub use tls::TestCa;

use state::Shared;

pub use crate::config::{Dialect, Reset};

/// How the simulator is set up. Every field has a default.
#[derive(Clone)]
pub struct SimConfig {
    /// The client id the token endpoint accepts.
    pub client_id: String,
    /// The client secret the token endpoint accepts; never printed.
    pub client_secret: String,
    /// Lifetime of issued tokens; `None` grants what the request asked
    /// (`expires_in`, default 28800). `expires_in` in the answer is its whole
    /// seconds, while the token really lapses after the exact duration.
    pub token_lifetime: Option<Duration>,
    /// Requests per quota window.
    pub quota: u32,
    /// Length of a quota window; zero is treated as one second.
    pub window: Duration,
    /// Issued tokens are this prefix plus 32 random hex digits.
    pub token_prefix: String,
    /// Delay before every API response (not token responses).
    pub response_delay: Duration,
    /// The rate-limit headers its answers carry.
    pub headers: Dialect,
    /// `Retry-After` on a 429 as an HTTP-date rather than seconds.
    pub retry_after_date: bool,
    /// Its clock is this many seconds ahead of ours (behind when
    /// negative): in `Date` and in epoch resets.
    pub clock_skew_secs: i64,
    /// Whether its answers carry `Date`.
    pub send_date: bool,
    /// `Some(d)`: when the simulator is created, its first window has been
    /// open for `d` already (else it opens at the first spend).
    pub window_offset: Option<Duration>,
    /// A second policy (quota, window) enforced beside the first and, in
    /// the IETF dialect, reported as `"slow"`.
    pub second_policy: Option<(u32, Duration)>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            client_id: "sim-client".to_owned(),
            client_secret: "sim-secret".to_owned(),
            token_lifetime: None,
            quota: 150,
            window: Duration::from_secs(3600),
            token_prefix: "sim-token-".to_owned(),
            response_delay: Duration::ZERO,
            headers: Dialect::Fitbit,
            retry_after_date: false,
            clock_skew_secs: 0,
            send_date: true,
            window_offset: None,
            second_policy: None,
        }
    }
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("token_lifetime", &self.token_lifetime)
            .field("quota", &self.quota)
            .field("window", &self.window)
            .field("token_prefix", &self.token_prefix)
            .field("response_delay", &self.response_delay)
            .field("headers", &self.headers)
            .field("retry_after_date", &self.retry_after_date)
            .field("clock_skew_secs", &self.clock_skew_secs)
            .field("send_date", &self.send_date)
            .field("window_offset", &self.window_offset)
            .field("second_policy", &self.second_policy)
            .finish()
    }
}

/// How the token endpoint fails while [`Sim::fail_token_requests`] is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenFailure {
    /// That status with a small `text/plain` body.
    Status(u16),
    /// 401 in RFC 6749's shape: `{"error":"invalid_client",...}`.
    InvalidClient,
    /// That status in Fitbit's shape with that `errorType`.
    FitbitError(u16, &'static str),
    /// 200 with an HTML page, as a captive portal or a misrouted request gives.
    Html,
    /// 200 JSON without `access_token`.
    MissingField,
    /// Never answers; [`ServerHandle::shutdown`] cuts it off after its grace.
    Hang,
}

/// The simulator: shared state behind an `Arc`, cheap to clone.
#[derive(Clone)]
pub struct Sim {
    shared: Arc<Shared>,
}

impl Sim {
    pub fn new(cfg: SimConfig) -> Sim {
        Sim {
            shared: Arc::new(Shared::new(cfg)),
        }
    }

    /// Token requests received, successful or not.
    pub fn token_fetches(&self) -> u64 {
        self.shared.lock().token_fetches
    }

    /// Tokens handed out.
    pub fn tokens_issued(&self) -> u64 {
        self.shared.lock().tokens_issued
    }

    /// The newest issued token.
    pub fn current_token(&self) -> Option<String> {
        self.shared.lock().newest.clone()
    }

    /// Later API calls with `token` get 401 `invalid_token`.
    pub fn revoke(&self, token: &str) {
        self.shared.lock().revoke(token);
    }

    /// Revokes every token issued so far.
    pub fn revoke_all(&self) {
        self.shared.lock().revoke_all();
    }

    /// `Some` makes every token request fail that way until `None` is set.
    pub fn fail_token_requests(&self, failure: Option<TokenFailure>) {
        self.shared.lock().failure = failure;
    }

    /// Makes the token endpoint take `delay` before answering.
    pub fn set_token_delay(&self, delay: Duration) {
        self.shared.lock().token_delay = delay;
    }

    /// API requests in arrival order (the newest 10 000; counters go on).
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.iter().cloned().collect()
    }

    /// Token requests in arrival order (the newest 10 000).
    pub fn token_requests(&self) -> Vec<ReceivedToken> {
        self.shared.lock().token_requests.iter().cloned().collect()
    }

    /// API requests received, whatever the answer.
    /// API requests whose head has arrived, finished or not.
    pub fn api_started(&self) -> u64 {
        self.shared.lock().api_started
    }

    pub fn api_requests(&self) -> u64 {
        self.shared.lock().api_requests
    }

    /// 429s the API sent.
    pub fn rate_limited(&self) -> u64 {
        self.shared.lock().rate_limited
    }

    /// Makes `fitbit-rate-limit-remaining` report `n` more than the truth
    /// (capped at the limit), as Fitbit's "approximate and asynchronously
    /// updated" headers can; 429s still come from the true count.
    pub fn set_reported_lag(&self, n: u32) {
        self.shared.lock().quota.set_lag(n);
    }

    /// Another consumer of the same application spends `n` units of the
    /// current window.
    pub fn spend_quota(&self, n: u32) {
        let now = tokio::time::Instant::now();
        self.shared.lock().quota.spend_other(now, n);
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        f.debug_struct("Sim")
            .field("config", &self.shared.cfg)
            .field("token_fetches", &state.token_fetches)
            .field("tokens_issued", &state.tokens_issued)
            .field("api_requests", &state.api_requests)
            .field("rate_limited", &state.rate_limited)
            .finish_non_exhaustive()
    }
}
