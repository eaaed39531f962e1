//! The access token. A background `refresh.rs` task owns every fetch through
//! the client-credentials `exchange.rs`; requests read the current token
//! without a lock and wait only while a fetch they need is under way
//! (start-up, a revoked token); the `layer.rs` attaches it and replays a
//! request once when the upstream says the token was revoked.

pub mod exchange;
pub(crate) mod layer;
pub(crate) mod obtained;
pub(crate) mod refresh;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::HeaderValue;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use exchange::{Exchange, FetchError, Grant};
pub use layer::AuthLayer;
pub(crate) use obtained::Obtained;

use crate::ops::supervise::spawn_supervised;
use crate::shared::token::SharedTokens;

/// The refresher's `task` label in `fitbit_proxy_task_restarts_total`.
pub const REFRESHER_TASK: &str = "token_refresher";

/// A token in use: the ready-made header and when it stops being valid.
pub struct Token {
    header: HeaderValue,
    expires_at: Instant,
    generation: u64,
}

impl Token {
    /// `Bearer …`, marked sensitive so that no log or HPACK table keeps it.
    pub fn header(&self) -> &HeaderValue {
        &self.header
    }

    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// 1 for the first token fetched, 2 for the next…
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("header", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("generation", &self.generation)
            .finish()
    }
}

/// What the refresher is doing, for waiting requests and `/readyz`.
#[derive(Debug, Clone)]
pub struct Status {
    /// A fetch is under way.
    pub fetching: bool,
    /// The last attempt failed (cleared by the next success).
    pub failure: Option<Failure>,
    /// When the last attempt ended, successful or not.
    pub last_fetch: Option<Instant>,
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub error: FetchError,
    /// When the refresher tries again.
    pub retry_at: Instant,
}

/// Why a request cannot have a token now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error("{error}")]
    Failed {
        error: FetchError,
        retry_after: Duration,
    },
    #[error("no token within {0:?} (the token endpoint is slow to answer)")]
    TimedOut(Duration),
}

impl Unavailable {
    pub fn retry_after(&self) -> Duration {
        match self {
            Unavailable::Failed { retry_after, .. } => *retry_after,
            Unavailable::TimedOut(_) => Duration::from_secs(1),
        }
    }
}

/// The shared token state. Cheap to read on every request.
pub struct TokenSource {
    current: ArcSwapOption<Token>,
    status: watch::Sender<Status>,
    /// Wakes the refresher early: a token was invalidated or none is held.
    wake: Notify,
    /// Makes the refresher fetch at once, whatever it holds and however
    /// long its backoff: the credentials changed.
    renew: Notify,
    /// The longest a request waits for a fetch under way, in milliseconds.
    wait_limit_ms: AtomicU64,
    generations: AtomicU64,
    /// How the refresher fetches; set when it is spawned, replaced by a
    /// reload ([`TokenSource::reconfigure`]).
    settings: ArcSwapOption<Settings>,
}

/// What each round of the refresher fetches with.
pub(crate) struct Settings {
    pub(crate) exchange: Exchange,
    /// `credentials.refresh_before_expiry`.
    pub(crate) margin: Duration,
}

impl TokenSource {
    /// A source whose first fetch is about to start: until it ends,
    /// requests wait for it.
    pub fn new(wait_limit: Duration) -> Arc<Self> {
        let (status, _) = watch::channel(Status {
            fetching: true,
            failure: None,
            last_fetch: None,
        });
        Arc::new(TokenSource {
            current: ArcSwapOption::empty(),
            status,
            wake: Notify::new(),
            renew: Notify::new(),
            wait_limit_ms: AtomicU64::new(millis(wait_limit)),
            generations: AtomicU64::new(0),
            settings: ArcSwapOption::empty(),
        })
    }

    /// Starts the refresher; the first fetch begins at once. Should it
    /// panic, it is restarted (after 1 s, doubling to 60 s) and counted in
    /// `fitbit_proxy_task_restarts_total{task="token_refresher"}`; a restart
    /// fetches a new token at once. Abort the handle to stop it.
    pub fn spawn_refresher(
        self: &Arc<Self>,
        exchange: Exchange,
        margin: Duration,
        metrics: Arc<crate::ops::metrics::Metrics>,
    ) -> JoinHandle<()> {
        self.spawn_shared_refresher(exchange, margin, metrics, None)
    }

    /// [`TokenSource::spawn_refresher`] that asks the replicas' shared
    /// store (when there is one) before fetching.
    pub(crate) fn spawn_shared_refresher(
        self: &Arc<Self>,
        exchange: Exchange,
        margin: Duration,
        metrics: Arc<crate::ops::metrics::Metrics>,
        shared: Option<Arc<SharedTokens>>,
    ) -> JoinHandle<()> {
        let source = Arc::clone(self);
        self.settings
            .store(Some(Arc::new(Settings { exchange, margin })));
        let restarts = metrics.task_restarts(REFRESHER_TASK);
        spawn_supervised(REFRESHER_TASK, restarts, move || {
            refresh::run(Arc::clone(&source), Arc::clone(&metrics), shared.clone())
        })
    }

    /// A reload: the refresher's next round fetches with `exchange` and
    /// plans with `margin`. With `renew` (the credentials changed), it
    /// fetches at once, cutting short any backoff; the token held serves
    /// until the new one is in.
    pub fn reconfigure(&self, exchange: Exchange, margin: Duration, renew: bool) {
        self.settings
            .store(Some(Arc::new(Settings { exchange, margin })));
        if renew {
            self.renew.notify_one();
        }
    }

    /// A reload of `upstream.request_timeout`: the longest a request waits
    /// for a fetch under way.
    pub fn set_wait_limit(&self, limit: Duration) {
        self.wait_limit_ms.store(millis(limit), Ordering::Relaxed);
    }

    fn wait_limit(&self) -> Duration {
        Duration::from_millis(self.wait_limit_ms.load(Ordering::Relaxed))
    }

    /// What the refresher fetches with now.
    pub(crate) fn settings(&self) -> Option<Arc<Settings>> {
        self.settings.load_full()
    }

    /// The current token if it is still valid; never waits, never locks.
    pub fn valid(&self) -> Option<Arc<Token>> {
        let token = self.current.load_full()?;
        (Instant::now() < token.expires_at).then_some(token)
    }

    /// The refresher's state, for readiness and diagnostics.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// A valid token: at once if one is held; after the fetch under way if
    /// the last attempt did not fail (bounded by the wait limit); otherwise
    /// an immediate refusal that says when to come back.
    pub async fn acquire(&self) -> Result<Arc<Token>, Unavailable> {
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        let wait_limit = self.wait_limit();
        let deadline = Instant::now() + wait_limit;
        let mut status = self.status.subscribe();
        loop {
            if let Some(token) = self.valid() {
                return Ok(token);
            }
            let (fetching, failure) = {
                let s = status.borrow_and_update();
                (s.fetching, s.failure.clone())
            };
            if let Some(f) = failure {
                let retry_after = f.retry_at.saturating_duration_since(Instant::now());
                return Err(Unavailable::Failed {
                    error: f.error,
                    retry_after,
                });
            }
            if !fetching {
                self.wake.notify_one();
            }
            match tokio::time::timeout_at(deadline, status.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) | Err(_) => return Err(Unavailable::TimedOut(wait_limit)),
            }
        }
    }

    /// The upstream refused `used` as revoked or expired: drop it if it
    /// is still the current token and wake the refresher. However many
    /// requests report the same token, only the first has any effect.
    pub fn invalidate(&self, used: &Arc<Token>) {
        let previous = self.current.compare_and_swap(used, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, used)) {
            tracing::info!(
                generation = used.generation,
                "upstream rejected the access token; fetching a new one"
            );
            self.wake.notify_one();
        }
    }

    fn begin_fetch(&self) {
        self.status.send_modify(|s| s.fetching = true);
    }

    /// Publishes a new token; the token first, then the status, so that a
    /// request woken by the status always finds the token.
    fn install(&self, got: Obtained) {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let expires_in = got
            .expires_at
            .saturating_duration_since(Instant::now())
            .as_secs();
        self.current.store(Some(Arc::new(Token {
            header: got.header,
            expires_at: got.expires_at,
            generation,
        })));
        self.status.send_replace(Status {
            fetching: false,
            failure: None,
            last_fetch: Some(Instant::now()),
        });
        match got.shared {
            Some(shared_generation) => tracing::info!(
                generation,
                shared_generation,
                expires_in,
                "access token in use (shared with the other replicas)"
            ),
            None => tracing::info!(generation, expires_in, "access token fetched"),
        }
    }

    fn fail(&self, error: FetchError, retry_at: Instant) {
        self.status.send_replace(Status {
            fetching: false,
            failure: Some(Failure { error, retry_at }),
            last_fetch: Some(Instant::now()),
        });
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
