//! The simulator's shared state: issued tokens, the quota, counters and the
//! request log, behind one mutex that is never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::time::Instant;

use super::quota::Quota;
use super::record::{Received, ReceivedToken};
use super::{SimConfig, TokenFailure};

/// How many requests of each kind the log keeps, so that a long-running
/// `fitbit-proxy simulate` does not grow without bound.
const RECORD_LIMIT: usize = 10_000;

/// Issued tokens kept before expired and revoked ones are forgotten.
const TOKEN_LIMIT: usize = 10_000;

/// The configuration and the mutable state every connection shares.
pub(crate) struct Shared {
    pub(crate) cfg: SimConfig,
    state: Mutex<State>,
}

impl Shared {
    pub(crate) fn new(cfg: SimConfig) -> Shared {
        let opened = cfg
            .window_offset
            .map(|d| Instant::now().checked_sub(d).unwrap_or_else(Instant::now));
        let mut quota = Quota::new(cfg.quota, cfg.window, opened);
        if let Some((limit, window)) = cfg.second_policy {
            quota = quota.with_policy("slow", limit, window, opened);
        }
        Shared {
            cfg,
            state: Mutex::new(State {
                tokens: HashMap::new(),
                newest: None,
                failure: None,
                token_delay: std::time::Duration::ZERO,
                quota,
                received: VecDeque::new(),
                token_requests: VecDeque::new(),
                token_fetches: 0,
                tokens_issued: 0,
                api_requests: 0,
                api_started: 0,
                rate_limited: 0,
            }),
        }
    }

    /// The state; a panic elsewhere while it was held leaves it usable, since
    /// every update below is a single step.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What a bearer token is worth right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenStatus {
    Valid,
    Unknown,
    Revoked,
    Expired,
}

struct IssuedToken {
    expires_at: Instant,
    revoked: bool,
}

pub(crate) struct State {
    tokens: HashMap<String, IssuedToken>,
    pub(crate) newest: Option<String>,
    pub(crate) failure: Option<TokenFailure>,
    /// How long the token endpoint takes to answer (scripted by tests).
    pub(crate) token_delay: std::time::Duration,
    pub(crate) quota: Quota,
    pub(crate) received: VecDeque<Received>,
    pub(crate) token_requests: VecDeque<ReceivedToken>,
    pub(crate) token_fetches: u64,
    pub(crate) tokens_issued: u64,
    pub(crate) api_requests: u64,
    /// API requests whose head has arrived (their body may still be coming).
    pub(crate) api_started: u64,
    pub(crate) rate_limited: u64,
}

impl State {
    pub(crate) fn issue(&mut self, token: String, expires_at: Instant) {
        if self.tokens.len() >= TOKEN_LIMIT {
            let now = Instant::now();
            self.tokens.retain(|_, t| !t.revoked && t.expires_at > now);
        }
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                expires_at,
                revoked: false,
            },
        );
        self.newest = Some(token);
        self.tokens_issued += 1;
    }

    pub(crate) fn token_status(&self, token: &str, now: Instant) -> TokenStatus {
        match self.tokens.get(token) {
            None => TokenStatus::Unknown,
            Some(t) if t.revoked => TokenStatus::Revoked,
            Some(t) if now >= t.expires_at => TokenStatus::Expired,
            Some(_) => TokenStatus::Valid,
        }
    }

    pub(crate) fn revoke(&mut self, token: &str) {
        if let Some(t) = self.tokens.get_mut(token) {
            t.revoked = true;
        }
    }

    pub(crate) fn revoke_all(&mut self) {
        self.tokens.values_mut().for_each(|t| t.revoked = true);
    }

    pub(crate) fn record_api(&mut self, received: Received) {
        self.api_requests += 1;
        push_bounded(&mut self.received, received);
    }

    pub(crate) fn record_token_request(&mut self, request: ReceivedToken) {
        self.token_fetches += 1;
        push_bounded(&mut self.token_requests, request);
    }
}

fn push_bounded<T>(log: &mut VecDeque<T>, item: T) {
    if log.len() >= RECORD_LIMIT {
        log.pop_front();
    }
    log.push_back(item);
}
