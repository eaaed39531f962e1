//! Readiness: whether the proxy should be sent traffic (a valid token is
//! held and it is not draining), and if not, a reason that names what an
//! operator should look at; and where the replica stands with Redis, which
//! never makes it unready (a Redis outage must not pull every replica at
//! once). Read by `/readyz` and the status page.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::shared::{BudgetMode, Shared, SharedState};
use crate::token::{FetchError, Status, TokenSource};

/// What readiness depends on: the token, and whether the proxy is draining.
pub(crate) struct Health {
    tokens: Arc<TokenSource>,
    shared: Shared,
    draining: AtomicBool,
}

impl Health {
    pub(crate) fn new(tokens: Arc<TokenSource>, shared: Shared) -> Arc<Health> {
        Arc::new(Health {
            tokens,
            shared,
            draining: AtomicBool::new(false),
        })
    }

    /// Where this replica stands with Redis (`[shared]`).
    pub(crate) fn shared(&self) -> SharedState {
        self.shared.state()
    }

    /// Whether pacing slots come from the shared budget now.
    pub(crate) fn shared_budget(&self) -> Option<BudgetMode> {
        self.shared.budget_mode()
    }

    /// `shutdown`, marking the proxy as draining the moment it resolves:
    /// that is the moment the accept loop stops.
    pub(crate) fn drain_on(
        self: &Arc<Self>,
        shutdown: impl Future<Output = ()>,
    ) -> impl Future<Output = ()> {
        let health = Arc::clone(self);
        async move {
            shutdown.await;
            health.draining.store(true, Ordering::SeqCst);
        }
    }

    pub(crate) fn tokens(&self) -> &Arc<TokenSource> {
        &self.tokens
    }

    /// `Err(reason)` when the proxy should not be sent traffic.
    pub(crate) fn readiness(&self) -> Result<(), String> {
        match not_ready_reason(
            self.draining.load(Ordering::SeqCst),
            self.tokens.valid().is_some(),
            &self.tokens.status(),
        ) {
            Some(reason) => Err(reason),
            None => Ok(()),
        }
    }
}

/// Readiness: a valid token held and not draining. The
/// reason names what an operator should look at.
pub(crate) fn not_ready_reason(draining: bool, has_token: bool, status: &Status) -> Option<String> {
    if draining {
        return Some("draining".to_owned());
    }
    if has_token {
        return None;
    }
    Some(match status.failure.as_ref().map(|f| &f.error) {
        Some(FetchError::Rejected { error, status }) => match error {
            Some(e) => format!("credentials rejected: {}", e.error_type),
            None => format!("credentials rejected: HTTP {status}"),
        },
        Some(other) => format!("token endpoint failing: {other}"),
        None => "no token yet".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::profile::fitbit::ApiError;
    use crate::token::Failure;

    fn failed(error: FetchError) -> Status {
        Status {
            fetching: false,
            failure: Some(Failure {
                error,
                retry_at: tokio::time::Instant::now(),
            }),
            last_fetch: None,
        }
    }

    #[test]
    fn readiness_reasons() {
        let fetching = Status {
            fetching: true,
            failure: None,
            last_fetch: None,
        };
        let rejected = failed(FetchError::Rejected {
            status: 401,
            error: Some(ApiError {
                error_type: "invalid_client".into(),
                message: "Invalid client credentials".into(),
            }),
        });
        let rejected_bare = failed(FetchError::Rejected {
            status: 400,
            error: None,
        });
        let down = failed(FetchError::Timeout(Duration::from_secs(5)));
        // (draining, token held, status, reason)
        let cases: Vec<(bool, bool, &Status, Option<&str>)> = vec![
            (false, true, &fetching, None),
            (false, true, &down, None),
            (true, true, &fetching, Some("draining")),
            (true, false, &rejected, Some("draining")),
            (false, false, &fetching, Some("no token yet")),
            (
                false,
                false,
                &rejected,
                Some("credentials rejected: invalid_client"),
            ),
            (
                false,
                false,
                &rejected_bare,
                Some("credentials rejected: HTTP 400"),
            ),
            (
                false,
                false,
                &down,
                Some("token endpoint failing: token endpoint did not answer within 5s"),
            ),
        ];
        for (draining, has_token, status, want) in cases {
            assert_eq!(
                not_ready_reason(draining, has_token, status).as_deref(),
                want,
                "{draining} {has_token} {status:?}"
            );
        }
    }
}
