//! State shared with the other replicas on one client id, through Redis
//! (`[shared]`): for now one token for all of them (`token.rs`). The
//! connection (`client.rs`) is made and remade in the background, every
//! call is bounded and passes a breaker (`breaker.rs`), and whenever Redis
//! cannot be used the replica runs alone, as a lone proxy does. The token
//! travels sealed (`seal.rs`) and is changed only by Lua scripts
//! (`scripts.rs`). Beside the stack: only the token refresher calls Redis.

mod breaker;
mod client;
pub mod metrics;
mod scripts;
mod seal;
pub(crate) mod token;

use std::sync::Arc;

pub use client::SharedState;

use client::Redis;
use token::SharedTokens;

use crate::config::Config;
use crate::ops::metrics::Metrics;
use crate::ops::supervise::AbortOnDrop;

/// This replica's link to the others; empty when it is alone by
/// configuration. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared {
    redis: Option<Arc<Redis>>,
    tokens: Option<Arc<SharedTokens>>,
}

impl Shared {
    /// Starts the connector when `shared.redis_url` is set; the proxy does
    /// not wait for it. The returned task stops with the proxy.
    pub(crate) fn start(config: &Config, metrics: Arc<Metrics>) -> (Shared, Option<AbortOnDrop>) {
        let Some(cfg) = &config.shared.redis else {
            return (Shared::default(), None);
        };
        let redis = match Redis::new(cfg, config.shared.timeout, metrics) {
            Ok(redis) => redis,
            Err(e) => {
                // Validation parsed the same URL; this is not expected.
                tracing::error!(error = %e.category(), "cannot use shared.redis_url; running alone");
                return (Shared::default(), None);
            }
        };
        tracing::info!(url = %cfg.url, "sharing the token through Redis");
        let tokens = SharedTokens::new(
            Arc::clone(&redis),
            &config.shared.key_prefix,
            &config.credentials,
            config.upstream.request_timeout,
        );
        let connector = AbortOnDrop(tokio::spawn(Arc::clone(&redis).connector()));
        let shared = Shared {
            redis: Some(redis),
            tokens: Some(Arc::new(tokens)),
        };
        (shared, Some(connector))
    }

    /// Where this replica stands with Redis, for readiness.
    pub(crate) fn state(&self) -> SharedState {
        self.redis
            .as_ref()
            .map_or(SharedState::Disabled, |r| r.state())
    }

    /// The shared token store, when Redis is configured.
    pub(crate) fn tokens(&self) -> Option<Arc<SharedTokens>> {
        self.tokens.clone()
    }
}
