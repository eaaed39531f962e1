//! The refresher: one background task owns every token fetch (model:
//! linkerd2-proxy's certificate refresher). It fetches at start-up, again
//! ahead of expiry, backs off on failure, and wakes early when a
//! token is invalidated or none is held. Timing lives in pure functions.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::exchange::{Exchange, FetchError};
use super::{Obtained, TokenSource};
use crate::ops::metrics::Metrics;
use crate::shared::token::{Begin, SharedTokens};

/// Backoff after a failed fetch: 1 s doubling up to 60 s.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Rejected credentials are not retried faster than this.
const REJECTED_RETRY: Duration = Duration::from_secs(60);
/// Jitter takes up to this share off a refresh's margin (so replicas that
/// started together spread out), and up to this share off a backoff delay.
const REFRESH_JITTER: f64 = 0.1;
const BACKOFF_JITTER: f64 = 0.2;
const REJECTED_JITTER: f64 = 0.1;

/// When to refresh a token granted for `lifetime`: `margin` before it
/// expires, or at half-life when the lifetime is shorter than twice the
/// margin; `jitter` in [0, 1) moves it earlier by up to a tenth of that
/// margin. The granted lifetime rules, whatever was asked.
pub(crate) fn refresh_delay(lifetime: Duration, margin: Duration, jitter: f64) -> Duration {
    let window = if lifetime >= margin * 2 {
        margin
    } else {
        lifetime / 2
    };
    lifetime - window - window.mul_f64(REFRESH_JITTER * jitter.clamp(0.0, 1.0))
}

/// How long to wait after the `failures`-th failure in a row.
pub(crate) fn backoff_delay(failures: u32, rejected: bool, jitter: f64) -> Duration {
    let jitter = jitter.clamp(0.0, 1.0);
    if rejected {
        return REJECTED_RETRY.mul_f64(1.0 + REJECTED_JITTER * jitter);
    }
    let doublings = failures.saturating_sub(1).min(16);
    let nominal = BACKOFF_FIRST
        .saturating_mul(1 << doublings)
        .min(BACKOFF_MAX);
    nominal.mul_f64(1.0 - BACKOFF_JITTER * jitter)
}

/// A token endpoint's `Retry-After` lengthens the backoff,
/// never shortens it, and is capped at the longest backoff.
pub(crate) fn honour_retry_after(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    backoff.max(retry_after.unwrap_or_default().min(BACKOFF_MAX))
}

/// Runs until the proxy stops (the task is aborted with it). With a shared
/// store, each round first asks it for a token to replace the one held.
pub(super) async fn run(
    source: Arc<TokenSource>,
    metrics: Arc<Metrics>,
    shared: Option<Arc<SharedTokens>>,
) {
    let mut failures: u32 = 0;
    // The newest shared generation this replica has held: the one the next
    // round replaces. A token fetched alone (Redis out of reach) leaves it
    // as it was, so that once Redis is back a token that was revoked or
    // due meanwhile is replaced there, not taken.
    let mut held: Option<u64> = None;
    loop {
        // Read each round: a reload may have changed the credentials.
        let Some(settings) = source.settings() else {
            return;
        };
        let (exchange, margin) = (&settings.exchange, settings.margin);
        #[cfg(feature = "failpoints")]
        crate::ops::failpoints::hit("token_refresher", &exchange.url().to_string());
        source.begin_fetch();
        let result = obtain(exchange, shared.as_ref(), held, &metrics).await;
        let (next, hold) = match result {
            Ok(got) => {
                failures = 0;
                held = got.shared.or(held);
                // Refresh as far ahead of expiry as a fresh token of that
                // lifetime would be, however long ago it was fetched.
                let ahead = got.lifetime - refresh_delay(got.lifetime, margin, rand::random());
                let next = (got.expires_at - ahead).saturating_duration_since(Instant::now());
                source.install(got);
                (next, false)
            }
            Err(error) => {
                failures += 1;
                let rejected = matches!(error, FetchError::Rejected { .. });
                let delay = backoff_delay(failures, rejected, rand::random());
                let delay = match &error {
                    FetchError::Status { retry_after, .. } => {
                        honour_retry_after(delay, *retry_after)
                    }
                    _ => delay,
                };
                log_failure(&error, failures, delay, source.valid().is_some());
                source.fail(error, Instant::now() + delay);
                (delay, rejected)
            }
        };
        drop(settings);
        wait(&source, Instant::now() + next, hold).await;
    }
}

/// A token to replace the shared generation `held`: taken from the shared
/// store when another replica fetched it; otherwise fetched here (and
/// shared when this replica holds the store's lock).
async fn obtain(
    exchange: &Exchange,
    shared: Option<&Arc<SharedTokens>>,
    held: Option<u64>,
    metrics: &Metrics,
) -> Result<Obtained, FetchError> {
    let lease = match shared {
        Some(store) => match store.begin(held).await {
            Begin::Adopt(got) => {
                metrics.shared.token("adopted");
                return Ok(got);
            }
            Begin::Lead(lease) => Some((store, lease)),
            Begin::Alone => None,
        },
        None => None,
    };
    let sent = Instant::now();
    let result = exchange.fetch().await;
    metrics.token_fetch(match &result {
        Ok(_) => "ok",
        Err(FetchError::Rejected { .. }) => "rejected",
        Err(_) => "failed",
    });
    match (result, lease) {
        (Ok(grant), Some((store, lease))) => {
            let mut got = Obtained::fetched(grant, sent);
            got.shared = store.store(lease, &got).await;
            metrics.shared.token(if got.shared.is_some() {
                "fetched"
            } else {
                "alone"
            });
            Ok(got)
        }
        (Ok(grant), None) => {
            if shared.is_some() {
                metrics.shared.token("alone");
            }
            Ok(Obtained::fetched(grant, sent))
        }
        (Err(error), Some((store, lease))) => {
            store.release(lease).await;
            Err(error)
        }
        (Err(error), None) => Err(error),
    }
}

/// Sleeps until `due`, or until woken because no valid token is held
/// (invalidated, or a request found none). A rejection of the credentials
/// holds for its full minute whatever wakes it, but for new credentials
/// (a reload), which end any wait at once.
async fn wait(source: &TokenSource, due: Instant, hold: bool) {
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(due) => return,
            () = source.renew.notified() => return,
            () = source.wake.notified() => {
                if !hold && source.valid().is_none() {
                    return;
                }
            }
        }
    }
}

fn log_failure(error: &FetchError, failures: u32, retry_in: Duration, still_valid: bool) {
    let retry_in_secs = retry_in.as_secs_f64().ceil() as u64;
    match error {
        FetchError::Rejected { .. } => tracing::error!(
            failures,
            retry_in_secs,
            still_valid,
            "{error}; check credentials.client_id and the client secret"
        ),
        _ => tracing::warn!(
            failures,
            retry_in_secs,
            still_valid,
            "token fetch failed: {error}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn refresh_ahead_by_the_margin_or_at_half_life() {
        // (lifetime, margin, earliest, latest)
        let cases = [
            (s(28800), 5 * MIN, s(28800 - 300 - 30), s(28800 - 300)),
            (s(3600), 5 * MIN, s(3600 - 300 - 30), s(3600 - 300)),
            (s(600), 5 * MIN, s(300 - 30), s(300)),
            (
                s(599),
                5 * MIN,
                Duration::from_millis(299_500 - 29_950),
                Duration::from_millis(299_500),
            ),
            (s(10), 5 * MIN, s(5) - Duration::from_millis(500), s(5)),
            (s(4), s(0), s(4), s(4)),
            (s(31536000), 5 * MIN, s(31536000 - 330), s(31536000 - 300)),
        ];
        for (lifetime, margin, earliest, latest) in cases {
            for jitter in [0.0, 0.25, 0.5, 0.999, 1.0] {
                let d = refresh_delay(lifetime, margin, jitter);
                assert!(
                    d >= earliest && d <= latest,
                    "{lifetime:?}/{margin:?} jitter {jitter}: {d:?}"
                );
            }
            assert_eq!(refresh_delay(lifetime, margin, 0.0), latest);
        }
    }

    #[test]
    fn backoff_doubles_from_one_second_to_a_minute() {
        let nominal = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for (i, want) in nominal.iter().enumerate() {
            let failures = i as u32 + 1;
            assert_eq!(
                backoff_delay(failures, false, 0.0),
                s(*want),
                "failure {failures}"
            );
            let jittered = backoff_delay(failures, false, 1.0);
            assert!(
                jittered >= s(*want).mul_f64(0.8) && jittered <= s(*want),
                "{jittered:?}"
            );
        }
        assert_eq!(backoff_delay(u32::MAX, false, 0.0), s(60));
    }

    #[test]
    fn retry_after_lengthens_the_backoff_up_to_a_minute() {
        // (backoff, retry-after, wait)
        let cases = [
            (s(1), None, s(1)),
            (s(1), Some(s(30)), s(30)),
            (s(8), Some(s(2)), s(8)),
            (s(1), Some(s(3600)), s(60)),
            (s(60), Some(s(0)), s(60)),
        ];
        for (backoff, after, want) in cases {
            assert_eq!(
                honour_retry_after(backoff, after),
                want,
                "{backoff:?} {after:?}"
            );
        }
    }

    #[test]
    fn rejected_credentials_wait_at_least_a_minute() {
        for failures in [1, 2, 10] {
            for jitter in [0.0, 0.5, 1.0] {
                let d = backoff_delay(failures, true, jitter);
                assert!(d >= MIN && d <= MIN.mul_f64(1.1), "{d:?}");
            }
        }
    }
}
