//! The Redis connection: a redis-rs `ConnectionManager` (one multiplexed
//! connection that reconnects by itself), created and re-created in the
//! background by the connector, so that the proxy starts and runs whether
//! Redis is up or not. Every call is bounded by `shared.timeout` and passes
//! the breaker; the state (connected, unreachable and why) is published for
//! readiness, logs and metrics.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ErrorKind, FromRedisValue, IntoConnectionInfo, RedisError, RedisResult, Script,
    ScriptInvocation,
};
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

use super::breaker::{retry_delay, Breaker, BreakerState, FAILURES_TO_OPEN, OPEN_FOR};
use crate::config::{RedisConfig, Secret};
use crate::ops::metrics::Metrics;

/// One connection attempt (TCP, TLS, AUTH, PING) may take this long.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// While connected and idle, Redis is pinged this often, so that an outage
/// shows in readiness and metrics before a request needs Redis.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Where this replica stands with Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedState {
    /// `shared.redis_url` is empty: the proxy is alone by configuration.
    Disabled,
    /// The first connection attempt is under way.
    Connecting,
    Connected,
    /// Redis cannot be used now; the proxy runs alone meanwhile.
    Unreachable {
        reason: String,
    },
}

impl SharedState {
    /// `connected`, `unreachable` or `disabled` (still connecting counts
    /// as unreachable: nothing is shared yet).
    pub fn as_str(&self) -> &'static str {
        match self {
            SharedState::Disabled => "disabled",
            SharedState::Connected => "connected",
            SharedState::Connecting | SharedState::Unreachable { .. } => "unreachable",
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match self {
            SharedState::Connecting => Some("connecting"),
            SharedState::Unreachable { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Why a call did not get an answer from Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum CallError {
    #[error("Redis is not in use now (breaker open or not connected)")]
    Unavailable,
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Redis(String),
}

/// The connection, its breaker and its state.
pub(crate) struct Redis {
    client: redis::Client,
    /// Removed from error messages, whatever a server or library echoes.
    password: Option<Secret>,
    conn: ArcSwapOption<ConnectionManager>,
    breaker: Mutex<Breaker>,
    state: watch::Sender<SharedState>,
    /// Wakes the connector when the breaker opens.
    lost: Notify,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A client for `cfg`; nothing connects until [`Redis::connector`] runs.
    pub(crate) fn new(
        cfg: &RedisConfig,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> RedisResult<Arc<Redis>> {
        let mut info = cfg.url.as_str().into_connection_info()?;
        if let Some(password) = &cfg.password {
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        let (state, _) = watch::channel(SharedState::Connecting);
        metrics.shared.set_breaker(BreakerState::Open);
        Ok(Arc::new(Redis {
            client: redis::Client::open(info)?,
            password: cfg.password.clone(),
            conn: ArcSwapOption::empty(),
            breaker: Mutex::new(Breaker::default()),
            state,
            lost: Notify::new(),
            timeout,
            metrics,
        }))
    }

    pub(crate) fn state(&self) -> SharedState {
        self.state.borrow().clone()
    }

    /// Waits (at most `limit`) while the first connection attempt is under
    /// way; `true` if Redis can be called now.
    pub(crate) async fn settled(&self, limit: Duration) -> bool {
        let mut state = self.state.subscribe();
        let waited =
            tokio::time::timeout(limit, state.wait_for(|s| *s != SharedState::Connecting)).await;
        waited.is_ok() && self.conn.load().is_some()
    }

    /// Runs `f` on the connection, bounded by `shared.timeout`, timed and
    /// counted under `op`; fails at once while the breaker is open.
    pub(crate) async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, CallError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let Some(conn) = self.conn.load_full() else {
            return Err(CallError::Unavailable);
        };
        let started = Instant::now();
        let result = tokio::time::timeout(self.timeout, f(ConnectionManager::clone(&conn))).await;
        let m = &self.metrics.shared;
        m.call_duration
            .get_or_create(&[("op", op)])
            .observe(started.elapsed().as_secs_f64());
        let (error, kind) = match result {
            Ok(Ok(value)) => {
                self.lock_breaker().success();
                return Ok(value);
            }
            // The connection's own response timeout is the same bound.
            Ok(Err(e)) if !e.is_timeout() => (CallError::Redis(self.describe(&e)), error_kind(&e)),
            Ok(Err(_)) | Err(_) => (CallError::Timeout(self.timeout), "timeout"),
        };
        m.call_errors
            .get_or_create(&[("op", op), ("kind", kind)])
            .inc();
        tracing::debug!(op, error = %error, "Redis call failed");
        if self.lock_breaker().failure() {
            self.open(
                &conn,
                format!("{FAILURES_TO_OPEN} calls in a row failed, the last: {error}"),
            );
        }
        Err(error)
    }

    /// Runs a Lua `script` on `keys` with the arguments `args` adds, as
    /// [`Redis::call`] does: `EVALSHA`, and the script loaded again when
    /// Redis answers `NOSCRIPT` (a restarted or flushed server), within the
    /// one timeout.
    pub(crate) async fn eval<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &Script,
        keys: &[&str],
        args: impl FnOnce(&mut ScriptInvocation<'_>),
    ) -> Result<T, CallError> {
        let mut inv = script.prepare_invoke();
        for key in keys {
            inv.key(*key);
        }
        args(&mut inv);
        self.call(op, |mut c: ConnectionManager| async move {
            inv.invoke_async(&mut c).await
        })
        .await
    }

    /// Stops using `conn` (if still current) and wakes the connector.
    fn open(&self, conn: &Arc<ConnectionManager>, reason: String) {
        let previous = self.conn.compare_and_swap(conn, None);
        if previous.as_ref().is_some_and(|p| Arc::ptr_eq(p, conn)) {
            self.metrics.shared.breaker_opened.inc();
            self.metrics.shared.set_breaker(BreakerState::Open);
            self.set_state(SharedState::Unreachable { reason });
            self.lost.notify_one();
        }
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // A panic while holding this lock cannot leave the counts broken.
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects, keeps the connection checked while it works, and connects
    /// again after the breaker opens; runs until aborted.
    pub(crate) async fn connector(self: Arc<Self>) {
        let mut attempts: u32 = 0;
        loop {
            match self.connect().await {
                Ok(conn) => {
                    attempts = 0;
                    self.lock_breaker().close();
                    self.metrics.shared.set_breaker(BreakerState::Closed);
                    self.conn.store(Some(Arc::new(conn)));
                    self.set_state(SharedState::Connected);
                    self.heartbeat().await;
                    tokio::time::sleep(OPEN_FOR).await;
                }
                Err(e) => {
                    attempts = attempts.saturating_add(1);
                    let auth = e.kind() == ErrorKind::AuthenticationFailed;
                    let reason = self.connect_failure(&e);
                    self.set_state(SharedState::Unreachable { reason });
                    tokio::time::sleep(retry_delay(attempts, auth)).await;
                }
            }
        }
    }

    /// One connection attempt, ending with a PING that must answer.
    async fn connect(&self) -> RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(1));
        let started = Instant::now();
        let attempt = async {
            let mut conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
            redis::cmd("PING").query_async::<()>(&mut conn).await?;
            Ok(conn)
        };
        let result = match tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await {
            Ok(result) => result,
            Err(_) => Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connection attempt timed out",
            ))),
        };
        let m = &self.metrics.shared;
        m.call_duration
            .get_or_create(&[("op", "connect")])
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &result {
            let kind = error_kind(e);
            m.call_errors
                .get_or_create(&[("op", "connect"), ("kind", kind)])
                .inc();
        }
        result
    }

    /// Pings while the connection is in use; returns when the breaker opens.
    async fn heartbeat(&self) {
        while self.conn.load().is_some() {
            tokio::select! {
                () = tokio::time::sleep(HEARTBEAT) => {
                    let ping = |mut c: ConnectionManager| async move {
                        redis::cmd("PING").query_async::<()>(&mut c).await
                    };
                    let _ = self.call("ping", ping).await;
                }
                () = self.lost.notified() => {}
            }
        }
    }

    /// The operator-facing reason for a failed connection attempt.
    fn connect_failure(&self, e: &RedisError) -> String {
        if e.kind() == ErrorKind::AuthenticationFailed
            || e.code().is_some_and(|c| c == "WRONGPASS" || c == "NOAUTH")
        {
            return "Redis refused the password (check shared.redis_password_env or \
                    shared.redis_password_file)"
                .to_owned();
        }
        format!("cannot connect to Redis: {}", self.describe(e))
    }

    /// An error's text, with the password taken out should it be echoed.
    fn describe(&self, e: &RedisError) -> String {
        let text = e.to_string();
        match &self.password {
            Some(p) if !p.expose().is_empty() => text.replace(p.expose(), "<redacted>"),
            _ => text,
        }
    }

    /// Publishes a new state; logs and counts changes only.
    fn set_state(&self, new: SharedState) {
        let changed = self.state.send_if_modified(|s| {
            let changed = *s != new;
            *s = new.clone();
            changed
        });
        self.metrics
            .shared
            .state_up
            .set(i64::from(new == SharedState::Connected));
        if !changed {
            return;
        }
        match &new {
            SharedState::Connected => {
                tracing::info!("Redis connected: sharing state with the other replicas")
            }
            SharedState::Unreachable { reason } => tracing::warn!(
                %reason,
                "Redis unreachable: running alone (own token) until it is back"
            ),
            _ => {}
        }
    }
}

/// The `kind` label of a failed call.
fn error_kind(e: &RedisError) -> &'static str {
    match e.kind() {
        ErrorKind::AuthenticationFailed => "auth",
        _ if e.is_timeout() => "timeout",
        ErrorKind::Io => "io",
        ErrorKind::Server(_) | ErrorKind::Extension => "server",
        _ => "other",
    }
}
