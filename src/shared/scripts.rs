//! The Lua scripts that change the shared token's keys, each one atomic on
//! the Redis server and timed by Redis's own clock (`TIME`), so that the
//! replicas' clocks never have to agree. Sent by `EVALSHA`; redis-rs loads a
//! script again when Redis answers `NOSCRIPT` (after a restart or a
//! `SCRIPT FLUSH`).
//!
//! The token is a hash: `gen` (its generation, from 1), `exp` (when it
//! expires, Redis milliseconds), `life` (the lifetime granted, ms) and
//! `seal` (the sealed `Bearer …` value, see `seal.rs`). Its key expires with
//! the token. The lock is a string holding its owner's random value.

use redis::Script;

/// KEYS: token, lock, generation counter. ARGV: the generation being
/// replaced (0: none), this replica's lock value, the lock's lifetime (ms),
/// the least lifetime (ms) a token must have left to be taken, and a random
/// number where a missing counter starts (a Redis that lost its data must
/// not hand out a generation that a replica still holds from before).
///
/// Returns `{"token", gen, ms left, lifetime ms, sealed}` when the stored
/// token is another than the one being replaced and has enough time left;
/// else `{"locked", next generation}` when the lock was free and is now
/// this replica's (it is to fetch); else `{"wait", ms the lock has left}`.
const OBTAIN: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tok = redis.call('HMGET', KEYS[1], 'gen', 'exp', 'life', 'seal')
if tok[1] and tok[1] ~= ARGV[1] then
  local left = tonumber(tok[2]) - now
  if left > tonumber(ARGV[4]) then
    return {'token', tok[1], tostring(left), tok[3], tok[4]}
  end
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then
  local counter = tonumber(redis.call('GET', KEYS[3])) or tonumber(ARGV[5])
  local stored = tonumber(tok[1]) or 0
  return {'locked', tostring(math.max(counter, stored) + 1)}
end
return {'wait', tostring(redis.call('PTTL', KEYS[2]))}
"#;

/// KEYS: token, lock, generation counter. ARGV: the lock value, the
/// generation, the ms the token has left, its lifetime in ms, the sealed
/// value. Stores the token and releases the lock only while the lock is
/// still this replica's (a fetch slower than the lock's lifetime must not
/// overwrite a newer token); returns 1 if stored, else 0.
const STORE: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local left = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'gen', ARGV[2], 'exp', tostring(now + left), 'life', ARGV[4], 'seal', ARGV[5])
redis.call('PEXPIRE', KEYS[1], left)
redis.call('SET', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
"#;

/// KEYS: lock. ARGV: the lock value. Deletes the lock only if it is still
/// this replica's (compare and delete); returns 1 if deleted.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// The scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) obtain: Script,
    pub(crate) store: Script,
    pub(crate) release: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            obtain: Script::new(OBTAIN),
            store: Script::new(STORE),
            release: Script::new(RELEASE),
        }
    }
}
