//! A token about to be installed, wherever it came from: fetched here by
//! `exchange.rs`, or fetched by another replica and taken from the shared
//! store (`shared/token.rs`). Apart from the token source, so that the
//! shared store can build one without depending on the source itself.

use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use super::exchange::Grant;

/// A token to start using: fetched here, or fetched by another replica and
/// taken from the shared store.
pub(crate) struct Obtained {
    /// `Bearer …`, marked sensitive.
    pub(crate) header: HeaderValue,
    /// The lifetime the token endpoint granted, which sets when to refresh.
    pub(crate) lifetime: Duration,
    pub(crate) expires_at: Instant,
    /// Its generation in the shared store; `None` when not shared.
    pub(crate) shared: Option<u64>,
}

impl Obtained {
    /// A token fetched here with a request sent at `sent`; expiry counts
    /// from then, so that it errs early.
    pub(crate) fn fetched(grant: Grant, sent: Instant) -> Obtained {
        Obtained {
            expires_at: sent + grant.expires_in,
            lifetime: grant.expires_in,
            header: grant.header,
            shared: None,
        }
    }
}

impl std::fmt::Debug for Obtained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Obtained")
            .field("header", &"<redacted>")
            .field("lifetime", &self.lifetime)
            .field("expires_at", &self.expires_at)
            .field("shared", &self.shared)
            .finish()
    }
}
