//! State shared with the other replicas on one client id, through Redis
//! (`[shared]`): one token for all of them (`token.rs`) and one paced
//! budget (`budget/`). The
//! connection (`client.rs`) is made and remade in the background, every
//! call is bounded and passes a breaker (`breaker.rs`), and whenever Redis
//! cannot be used the replica runs alone, as a lone proxy does. The token
//! travels sealed (`seal.rs`) and is changed only by Lua scripts
//! (`scripts.rs`). Beside the stack, the token refresher calls Redis; in the
//! stack, the pacer does through the shared budget.

mod breaker;
mod budget;
mod client;
pub mod metrics;
mod scripts;
mod seal;
pub(crate) mod token;

use std::sync::Arc;

pub use budget::BudgetMode;
pub use client::SharedState;

use budget::SharedBudget;
use client::Redis;
use token::SharedTokens;

use crate::config::{Config, RateLimitConfig};
use crate::ops::metrics::Metrics;
use crate::ops::supervise::AbortOnDrop;
use crate::pacing::{Pacer, Remote};

/// This replica's link to the others; empty when it is alone by
/// configuration. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared {
    redis: Option<Arc<Redis>>,
    tokens: Option<Arc<SharedTokens>>,
    budget: Option<Arc<SharedBudget>>,
}

impl Shared {
    /// Starts the connector when `shared.redis_url` is set; the proxy does
    /// not wait for it. The returned task stops with the proxy.
    pub(crate) fn start(config: &Config, metrics: Arc<Metrics>) -> (Shared, Option<AbortOnDrop>) {
        let Some(cfg) = &config.shared.redis else {
            return (Shared::default(), None);
        };
        let redis = match Redis::new(cfg, config.shared.timeout, Arc::clone(&metrics)) {
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
        let budget = Arc::new(SharedBudget::new(
            Arc::clone(&redis),
            &config.shared.key_prefix,
            &config.credentials.client_id,
            &config.rate_limit,
            metrics,
        ));
        let connector = Arc::clone(&redis).connector();
        let heartbeat = Arc::clone(&budget).heartbeat();
        let connector = AbortOnDrop(tokio::spawn(async move {
            tokio::join!(connector, heartbeat);
        }));
        let shared = Shared {
            redis: Some(redis),
            tokens: Some(Arc::new(tokens)),
            budget: Some(budget),
        };
        (shared, Some(connector))
    }

    /// Where this replica stands with Redis, for readiness.
    pub(crate) fn state(&self) -> SharedState {
        self.redis
            .as_ref()
            .map_or(SharedState::Disabled, |r| r.state())
    }

    /// Whether pacing slots come from the shared budget now (`None`: no
    /// Redis configured).
    pub(crate) fn budget_mode(&self) -> Option<BudgetMode> {
        self.budget.as_ref().map(|b| b.mode())
    }

    /// The pacer: one that takes its slots from the shared budget when
    /// Redis is configured, else this process's own.
    pub(crate) fn pacer(&self, cfg: &RateLimitConfig) -> Arc<Pacer> {
        match &self.budget {
            Some(budget) => Pacer::with_remote(cfg, Arc::clone(budget) as Arc<dyn Remote>),
            None => Pacer::new(cfg),
        }
    }

    /// The shared token store, when Redis is configured.
    pub(crate) fn tokens(&self) -> Option<Arc<SharedTokens>> {
        self.tokens.clone()
    }
}
