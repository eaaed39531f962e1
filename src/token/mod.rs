//! The access token: fetched with the client-credentials grant
//! ([`exchange`]), cached until it expires, fetched by at most one request at
//! a time however many wait (SPEC T1–T3), and attached by the [`layer`].

pub mod exchange;
pub mod layer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use http::HeaderValue;
use tokio::time::Instant;

pub use exchange::{Exchange, FetchError};
pub use layer::AuthLayer;

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

    fn is_valid_at(&self, now: Instant) -> bool {
        now < self.expires_at
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

/// One token fetch, awaited by every request that needs it.
pub type Fetch = Shared<BoxFuture<'static, Result<Arc<Token>, FetchError>>>;

/// The cache: requests read the current token without a lock; when there is
/// none, they all await the same single fetch.
pub struct TokenSource {
    exchange: Exchange,
    current: ArcSwapOption<Token>,
    in_flight: Mutex<Option<Fetch>>,
    generations: AtomicU64,
}

impl TokenSource {
    pub fn new(exchange: Exchange) -> Arc<Self> {
        Arc::new(TokenSource {
            exchange,
            current: ArcSwapOption::empty(),
            in_flight: Mutex::new(None),
            generations: AtomicU64::new(0),
        })
    }

    /// The current token if it is still valid; never waits.
    pub fn valid(&self) -> Option<Arc<Token>> {
        let token = self.current.load_full()?;
        token.is_valid_at(Instant::now()).then_some(token)
    }

    /// A valid token, fetching one if needed. Concurrent callers share one
    /// fetch, which runs in its own task so that a caller giving up does not
    /// cancel it for the others.
    pub async fn get(self: &Arc<Self>) -> Result<Arc<Token>, FetchError> {
        if let Some(token) = self.valid() {
            return Ok(token);
        }
        self.fetch().await
    }

    /// The fetch in flight, or a new one. Starting it never waits.
    pub fn fetch(self: &Arc<Self>) -> Fetch {
        let mut slot = self.in_flight.lock().expect("token fetch slot poisoned");
        if let Some(fetch) = slot.as_ref() {
            return fetch.clone();
        }
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let result = this.fetch_and_store().await;
            *this.in_flight.lock().expect("token fetch slot poisoned") = None;
            result
        });
        let fetch = async move {
            task.await
                .unwrap_or_else(|_| Err(FetchError::Transport("token fetch task failed".into())))
        }
        .boxed()
        .shared();
        *slot = Some(fetch.clone());
        fetch
    }

    async fn fetch_and_store(&self) -> Result<Arc<Token>, FetchError> {
        // Expiry counts from when the request left, so it errs early.
        let sent = Instant::now();
        let grant = self.exchange.fetch().await?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        let token = Arc::new(Token {
            header: grant.header,
            expires_at: sent + grant.expires_in,
            generation,
        });
        tracing::info!(
            generation,
            expires_in = grant.expires_in.as_secs(),
            "access token fetched"
        );
        self.current.store(Some(Arc::clone(&token)));
        Ok(token)
    }
}
