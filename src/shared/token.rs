//! One token for every replica. Before fetching, a replica's refresher
//! asks Redis: a token other than the one it wants replaced is taken as it
//! is; otherwise one replica takes the lock and fetches while the others
//! wait for what it stores. Tokens are known by their generation, so that a
//! refresh or a revocation replaces a token once, and a late 401 for an old
//! token never throws away a newer one. Whenever Redis cannot answer, the
//! replica fetches its own token, as a lone proxy does.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;

use super::client::{CallError, Redis, CONNECT_TIMEOUT};
use super::scripts::Scripts;
use super::seal::Sealer;
use crate::config::CredentialsConfig;
use crate::token::obtained::Obtained;

/// How often a replica looks again while another one fetches.
const POLL: Duration = Duration::from_millis(50);
/// A stored token with less than this left is fetched again, not taken.
const LEAST_LEFT: Duration = Duration::from_secs(1);
/// A lock that may have been taken by a script that timed out is released
/// again this often until Redis answers.
const RELEASE_RETRY: Duration = Duration::from_millis(500);
/// A missing generation counter starts at a random number below this
/// (exact in Lua's doubles, and short in logs).
const FRESH_COUNTER_MAX: u64 = 1 << 40;
/// The lock outlives the fetch's own timeout by this much, so that the
/// holder can still store what it fetched.
const LOCK_MARGIN: Duration = Duration::from_secs(2);

/// The keys of one client id's token; the client id is a Redis Cluster
/// hash tag, so that every key of one client id is on one node.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    pub(crate) token: String,
    pub(crate) lock: String,
    pub(crate) generation: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, client_id: &str) -> Keys {
        let base = format!("{prefix}:{{{client_id}}}:token");
        Keys {
            lock: format!("{base}:lock"),
            generation: format!("{base}:generation"),
            token: base,
        }
    }

    /// The keys the obtain and store scripts take, in their order.
    fn all(&self) -> [&str; 3] {
        [&self.token, &self.lock, &self.generation]
    }
}

/// What the refresher does next.
pub(crate) enum Begin {
    /// Use this token, which another replica fetched.
    Adopt(Obtained),
    /// This replica holds the lock: fetch, then [`SharedTokens::store`]
    /// or [`SharedTokens::release`].
    Lead(Lease),
    /// Redis cannot be used now: fetch alone, share nothing.
    Alone,
}

/// The lock, held while this replica fetches.
pub(crate) struct Lease {
    value: String,
    generation: u64,
}

/// The shared token store of one client id.
pub(crate) struct SharedTokens {
    redis: Arc<Redis>,
    keys: Keys,
    sealer: Sealer,
    scripts: Scripts,
    lock_ttl: Duration,
}

impl std::fmt::Debug for SharedTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTokens")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// `obtain`'s answer.
enum Reply {
    Token {
        generation: u64,
        left: Duration,
        lifetime: Duration,
        sealed: Vec<u8>,
    },
    Locked {
        next: u64,
    },
    Wait,
}

impl SharedTokens {
    /// `fetch_timeout` bounds one token fetch; the lock lives a little longer.
    pub(crate) fn new(
        redis: Arc<Redis>,
        prefix: &str,
        creds: &CredentialsConfig,
        fetch_timeout: Duration,
    ) -> SharedTokens {
        SharedTokens {
            redis,
            keys: Keys::new(prefix, &creds.client_id),
            sealer: Sealer::new(&creds.client_id, creds.client_secret.expose()),
            scripts: Scripts::default(),
            lock_ttl: fetch_timeout + LOCK_MARGIN,
        }
    }

    /// Asks for a token to replace the shared generation `replacing` (the
    /// one this replica last held; `None` if it held none from Redis).
    /// Waits, polling, while another replica holds the lock, at most the
    /// lock's lifetime; the first Redis failure means [`Begin::Alone`].
    pub(crate) async fn begin(self: &Arc<Self>, replacing: Option<u64>) -> Begin {
        if !self.redis.settled(CONNECT_TIMEOUT * 2).await {
            return Begin::Alone;
        }
        let mut replacing = replacing.unwrap_or(0);
        let value = format!("{:032x}", rand::random::<u128>());
        let deadline = Instant::now() + self.lock_ttl + POLL;
        let polls = (self.lock_ttl + POLL).as_millis() / POLL.as_millis() + 2;
        for _ in 0..polls {
            let sent = Instant::now();
            let reply = match self.obtain(replacing, &value).await {
                Ok(reply) => reply,
                Err(error) => {
                    tracing::debug!(%error, "shared token unavailable; fetching alone");
                    // Redis may still run the script it did not answer in
                    // time, and take the lock for this replica.
                    self.release_later(value);
                    return Begin::Alone;
                }
            };
            match reply {
                Reply::Token {
                    generation,
                    left,
                    lifetime,
                    sealed,
                } => match self.open(generation, &sealed) {
                    Some(header) => {
                        return Begin::Adopt(Obtained {
                            header,
                            lifetime,
                            expires_at: sent + left,
                            shared: Some(generation),
                        })
                    }
                    None => {
                        tracing::warn!(
                            generation,
                            "the shared token does not open with this client secret; replacing it"
                        );
                        replacing = generation;
                    }
                },
                Reply::Locked { next } => {
                    return Begin::Lead(Lease {
                        value,
                        generation: next,
                    })
                }
                Reply::Wait if Instant::now() >= deadline => break,
                Reply::Wait => tokio::time::sleep(POLL).await,
            }
        }
        tracing::warn!("another replica held the token lock too long; fetching alone");
        Begin::Alone
    }

    /// Shares what the lease holder fetched and releases the lock; the
    /// token's shared generation, or `None` if it could not be stored.
    pub(crate) async fn store(self: &Arc<Self>, lease: Lease, got: &Obtained) -> Option<u64> {
        let left = got.expires_at.saturating_duration_since(Instant::now());
        let aad = self.aad(lease.generation);
        let Some(sealed) = self.sealer.seal(aad.as_bytes(), got.header.as_bytes()) else {
            self.release(lease).await;
            return None;
        };
        let stored = self
            .redis
            .eval::<i64>(
                "token_store",
                &self.scripts.store,
                &self.keys.all(),
                |inv| {
                    inv.arg(&lease.value)
                        .arg(lease.generation)
                        .arg(millis(left).max(1))
                        .arg(millis(got.lifetime))
                        .arg(sealed);
                },
            )
            .await;
        match stored {
            Ok(1) => Some(lease.generation),
            Ok(_) => {
                tracing::warn!("the token lock expired during the fetch; token not shared");
                None
            }
            Err(error) => {
                tracing::debug!(%error, "token not shared");
                self.release_later(lease.value);
                None
            }
        }
    }

    /// Gives the lock up after a failed fetch, so that another replica may
    /// try at once; only this replica's own lock is deleted.
    pub(crate) async fn release(self: &Arc<Self>, lease: Lease) {
        if let Err(error) = self.release_value(&lease.value).await {
            tracing::debug!(%error, "token lock not released yet");
            self.release_later(lease.value);
        }
    }

    async fn release_value(&self, value: &str) -> Result<i64, CallError> {
        let script = &self.scripts.release;
        self.redis
            .eval("token_release", script, &[&self.keys.lock], |inv| {
                inv.arg(value);
            })
            .await
    }

    /// Releases the lock `value` names, should a script that timed out
    /// have taken it: at once (on the same connection, Redis runs it after
    /// that script), else as soon as Redis answers again, for as long as a
    /// lock lives. Otherwise the other replicas would wait out the lock.
    fn release_later(self: &Arc<Self>, value: String) {
        let tokens = Arc::clone(self);
        tokio::spawn(async move {
            let deadline = Instant::now() + tokens.lock_ttl;
            while tokens.release_value(&value).await.is_err() && Instant::now() < deadline {
                tokio::time::sleep(RELEASE_RETRY).await;
            }
        });
    }

    async fn obtain(&self, replacing: u64, value: &str) -> Result<Reply, String> {
        let parts = self
            .redis
            .eval::<Vec<Vec<u8>>>(
                "token_obtain",
                &self.scripts.obtain,
                &self.keys.all(),
                |inv| {
                    inv.arg(replacing)
                        .arg(value)
                        .arg(millis(self.lock_ttl))
                        .arg(millis(LEAST_LEFT))
                        .arg(rand::random_range(1..FRESH_COUNTER_MAX));
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        parse_reply(parts).ok_or_else(|| "unexpected answer from the token script".to_owned())
    }

    fn open(&self, generation: u64, sealed: &[u8]) -> Option<HeaderValue> {
        let plain = self.sealer.open(self.aad(generation).as_bytes(), sealed)?;
        let mut header = HeaderValue::from_bytes(&plain).ok()?;
        header.set_sensitive(true);
        Some(header)
    }

    /// Binds a sealed token to its key and generation.
    fn aad(&self, generation: u64) -> String {
        format!("{}:{generation}", self.keys.token)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn parse_reply(parts: Vec<Vec<u8>>) -> Option<Reply> {
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<i64>().ok();
    let ms = |b: &[u8]| number(b).map(|n| Duration::from_millis(n.max(0).unsigned_abs()));
    let generation = |b: &[u8]| number(b).and_then(|n| u64::try_from(n).ok());
    match parts.as_slice() {
        [tag, g, left, life, sealed] if tag == b"token" => Some(Reply::Token {
            generation: generation(g)?,
            left: ms(left)?,
            lifetime: ms(life)?,
            sealed: sealed.clone(),
        }),
        [tag, next] if tag == b"locked" => Some(Reply::Locked {
            next: generation(next)?,
        }),
        [tag, _] if tag == b"wait" => Some(Reply::Wait),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_client_id_shares_its_hash_tag() {
        let k = Keys::new("fitbit-proxy", "23ABCD");
        assert_eq!(k.token, "fitbit-proxy:{23ABCD}:token");
        assert_eq!(k.lock, "fitbit-proxy:{23ABCD}:token:lock");
        assert_eq!(k.generation, "fitbit-proxy:{23ABCD}:token:generation");
    }

    #[test]
    fn replies_are_parsed_strictly() {
        let v = |parts: &[&[u8]]| parse_reply(parts.iter().map(|p| p.to_vec()).collect());
        match v(&[b"token", b"7", b"3599000", b"3600000", b"\x00sealed"]) {
            Some(Reply::Token {
                generation: 7,
                left,
                lifetime,
                sealed,
            }) => {
                assert_eq!(left, Duration::from_secs(3599));
                assert_eq!(lifetime, Duration::from_secs(3600));
                assert_eq!(sealed, b"\x00sealed");
            }
            _ => panic!("token"),
        }
        assert!(matches!(
            v(&[b"locked", b"8"]),
            Some(Reply::Locked { next: 8 })
        ));
        assert!(matches!(v(&[b"wait", b"1200"]), Some(Reply::Wait)));
        for bad in [
            &[b"token".as_slice(), b"x", b"1", b"1", b""][..],
            &[b"locked", b"-1"],
            &[b"locked"],
            &[b"what", b"1"],
            &[],
        ] {
            assert!(v(bad).is_none(), "{bad:?}");
        }
    }
}
