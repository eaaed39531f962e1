//! The Lua scripts that change the shared budget, each atomic on the Redis
//! server and timed by Redis's own clock (`TIME`, milliseconds), so that
//! the replicas' clocks never have to agree. Sent by `EVALSHA` (loaded
//! again on `NOSCRIPT`).
//!
//! The budget is one hash, `{prefix}:{client_id}:budget`: `lim` (the
//! window's limit), `reset` and `low` (when the window ends at the latest
//! and at the earliest), `len` (its length, 0 while not known), `set` (1
//! once an answer told where the window ends), `got` (slots granted in the
//! window, raised to `limit - remaining` by every answer), `tat` (the next
//! free slot), `pause` (nothing before this, after an upstream 429), `win`
//! (the window's number, counted up at every new window), `start`
//! (where the window began, to learn its length from the first answer),
//! `bnd` (1 when `reset` is a bound the answers gave, 0 while a guess) and
//! `exact` (1 when `len` is given, by the headers or the configuration;
//! 0 when learned off whole-second resets).
//! Every script takes the same first arguments: the configured quota, the
//! configured window (ms), `reset_margin` (ms), and 1 if the configured
//! window is the truth (no rate-limit headers).

use redis::Script;

/// Shared by every script: loading, rolling and saving the hash.
const PRELUDE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local quota, window, margin, assume = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local F = {'lim', 'reset', 'low', 'len', 'set', 'got', 'tat', 'pause', 'win', 'start', 'bnd', 'exact'}
local s = {}
local v = redis.call('HMGET', KEYS[1], unpack(F))
for i, f in ipairs(F) do s[f] = tonumber(v[i]) end
local fresh = s.lim == nil
if fresh then
  s = {lim = quota, reset = now + window, low = now + window - 1000, len = 0, set = 0,
       got = 0, tat = 0, pause = 0, win = 1, start = 0, bnd = 0, exact = 0}
  if assume == 1 then s.set = 1; s.len = window; s.exact = 1 end
end
-- A hash written before these two fields: its end is taken as a guess.
s.bnd = s.bnd or 0; s.exact = s.exact or 0
-- A window that ended (plus the margin) gives way to the next; windows
-- that passed unseen are skipped. Without a known length the next one's
-- end is not known until its first answer; with a learned one it is a
-- guess that answer replaces (taking the earlier of the two let the
-- learned length's error add up window after window, until a window's
-- first slot came before the upstream's reset).
local function roll()
  if now < s.reset + margin then return end
  local step = s.len > 0 and s.len or window
  local k = math.floor((now - margin - s.reset) / step) + 1
  s.start = s.reset + (k - 1) * step
  s.reset = s.reset + k * step
  s.low = s.low + k * step
  if s.len == 0 then s.set = 0; s.low = s.reset - 1000 end
  if s.exact == 0 then s.bnd = 0 end
  s.got = 0; s.tat = 0; s.win = s.win + 1
end
local function save()
  local a = {}
  for _, f in ipairs(F) do a[#a + 1] = f; a[#a + 1] = string.format('%d', s[f]) end
  redis.call('HSET', KEYS[1], unpack(a))
  local step = s.len > 0 and s.len or window
  redis.call('PEXPIRE', KEYS[1], math.max(s.reset - now, 0) + 2 * step)
end
local function reply(kind, a)
  return {kind, a, now, s.lim, s.got, s.reset, s.low, s.len, s.set, s.tat, s.win}
end
roll()
"#;

/// ARGV 5..7: `burst`, the longest wait (ms), `rate_limit.replicas`.
/// Takes the next paced slot: `{"ok", ms until it, …}`; or, without taking
/// one, `{"closed", ms until the budget opens again, …}`, `{"late", ms
/// until the slot, …}` when that is past the longest wait, `{"wait", ms,
/// …}` while the window's end is not known and its first sends are out
/// (look again then, or at an answer). Every reply ends with the state.
const RESERVE: &str = r#"
local burst, max_wait = tonumber(ARGV[5]), tonumber(ARGV[6])
local kind, a
if s.pause > now then
  kind, a = 'closed', s.pause - now
elseif s.set == 0 then
  if s.got < math.min(burst, s.lim) then
    s.got = s.got + 1
    kind, a = 'ok', 0
  else
    kind, a = 'wait', 250
  end
else
  local left = s.lim - s.got
  local slot = math.max(now, s.tat)
  if left <= 0 or slot >= s.low then
    kind, a = 'closed', s.reset + margin - now
  elseif slot - now > max_wait then
    kind, a = 'late', slot - now
  else
    -- What is left, spread evenly over the time left: a slot nobody took
    -- goes to whoever asks next, on any replica.
    s.tat = slot + math.floor((s.low - slot) / left)
    s.got = s.got + 1
    kind, a = 'ok', slot - now
  end
end
save()
return reply(kind, a)
"#;

/// ARGV 5..13: the answer's status, 1 if it carried a reading, the
/// reading's limit, remaining and reset (ms), the request's latency (ms),
/// the window's length if given (ms, else 0), `Retry-After` (ms, else -1),
/// how much later than read a reset may be (ms), and ARGV 14 the window
/// the request was reserved in. Reconciles the budget with the answer.
const OBSERVE: &str = r#"
local status, has, lim, rem, reset = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local lat, wlen, retry, rounding, win = tonumber(ARGV[10]), tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
if status == 429 then
  -- Nothing more until the upstream's reset, for every replica.
  local wait = retry >= 0 and retry or (has == 1 and reset or 60000)
  s.pause = math.max(s.pause, now + wait + margin)
  if has == 1 then
    s.lim = lim; s.reset = now + reset + rounding; s.low = now - lat + reset - 2000
    s.set = 1; s.bnd = 1; s.got = lim
  end
elseif win < s.win then
  -- Sent in an earlier window: says nothing of this one.
elseif has == 1 then
  if status == 503 and retry >= 0 then s.pause = math.max(s.pause, now + retry) end
  -- The upstream read its clock between the send and now, in whole seconds.
  local e = now + reset + rounding
  local l = now - lat + reset - 1000
  if s.set == 1 and math.abs(e - s.reset) < 3000 then
    if s.bnd == 1 then
      -- Every reading bounds the end; together they close in on it.
      s.reset = math.min(s.reset, e); s.low = math.max(s.low, l)
    else
      -- The end was a guess: the first reading replaces it.
      s.reset = e; s.low = math.min(l, e); s.bnd = 1
    end
    s.got = math.max(s.got, lim - rem); s.lim = lim
  elseif s.set == 0 or e > s.reset then
    if s.set == 0 then
      if s.start > 0 and s.len == 0 and e - s.start > 3000 then s.len = e - s.start end
      s.got = math.max(s.got, lim - rem)
    else
      -- The upstream is in a later window than the budget thought.
      if s.len == 0 and e - s.reset >= 5000 then s.len = e - s.reset end
      s.got = lim - rem; s.tat = 0; s.win = s.win + 1
    end
    s.reset = e; s.low = math.min(l, e); s.set = 1; s.bnd = 1; s.lim = lim; s.start = 0
  end
  if wlen > 0 then s.len = wlen; s.exact = 1 end
else
  if status == 503 and retry >= 0 then s.pause = math.max(s.pause, now + retry) end
  -- No reading: the configured window is all there is to go by.
  s.set = 1
end
save()
return reply('ok', 0)
"#;

/// ARGV 5..9: what this replica knows of the window (limit, reset, low,
/// length; reset 0 when nothing) and how much of it the upstream's last
/// reading showed used (-1: no reading), then the Redis times (ms) of the
/// sends it made alone. Counts those that fall in the current window and
/// takes the reading (a budget Redis lost is started from what the
/// replica knows), so that the window's slots left are right again.
const REJOIN: &str = r#"
local lim, reset, low, len, used = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
if (fresh or s.set == 0) and reset > now then
  s.lim = lim; s.reset = reset; s.low = low; s.set = 1
  if len > 0 then s.len = len end
end
local step = s.len > 0 and s.len or window
local from = s.reset - step
local n = 0
for i = 10, #ARGV do
  if tonumber(ARGV[i]) >= from then n = n + 1 end
end
s.got = s.got + n
if used >= 0 and math.abs(s.reset - reset) < 3000 then s.got = math.max(s.got, used) end
save()
return reply('ok', n)
"#;

/// KEYS[2]: the replicas' heartbeat set. ARGV 5..6: this replica's id,
/// how long (ms) a replica counts as live after its last beat. Returns
/// `{"live", live replicas, …}` and the budget as it stands (unchanged).
const BEAT: &str = r#"
redis.call('ZADD', KEYS[2], now, ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[2], 3 * tonumber(ARGV[6]))
local live = redis.call('ZCARD', KEYS[2])
if not fresh then save() end
return reply('live', live)
"#;

/// The scripts, hashed once.
pub(crate) struct Scripts {
    pub(crate) reserve: Script,
    pub(crate) observe: Script,
    pub(crate) rejoin: Script,
    pub(crate) beat: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            reserve: with_prelude(RESERVE),
            observe: with_prelude(OBSERVE),
            rejoin: with_prelude(REJOIN),
            beat: with_prelude(BEAT),
        }
    }
}
