//! The Lua scripts behind each [`crate::cluster::RedisOp`]: each runs atomically in Redis, so a claim, its fence
//! and its `claim` message happen together or not at all. Keys and formats: [`crate::cluster::wire`].
//! Every reply element is a string (integers come back as `tostring`), so the adapter parses one shape.
//!
//! # The free-orbit index (issue 20)
//! `CLAIM_ANY` must not probe orbit keys one by one from its start orbit (thousands of `EXISTS` in a nearly full
//! large lot). Each lot has two sorted sets of orbit indexes (0-based; member = the index as a string):
//! `<prefix>:{<lot>}:free` (score = the index) and `<prefix>:{<lot>}:held` (score = the time, Redis's `TIME` in
//! ms, by which the orbit's key will have expired unless renewed). Every script that creates, renews or deletes
//! an orbit key moves its index between the two in the same atomic step, so an index is in exactly one of them;
//! `CLAIM_ANY` then takes the lowest free index from `start` (wrapping) with one `ZRANGEBYSCORE … LIMIT 0 1`.
//! Keys are the truth, the sets only an index:
//! * **expiry**: a key that simply expires (its node died) tells no one. Its index stays in `held` with the
//!   deadline of its last claim or renewal; `CLAIM_ANY` first looks at up to 64 `held` entries whose deadline
//!   passed and moves those whose key is gone back to `free` (still there: renewed by a writer that did not
//!   move the score, the deadline is pushed to the key's TTL). Each expiry is handled once: O(1) amortised.
//! * **verification**: the candidate's key is checked before it is taken (a writer that does not keep the index
//!   — an older parkd during a rolling upgrade — may hold it); held ones go to `held` and the next is tried.
//! * **(re)building**: when `ZCARD free + ZCARD held` is not the lot's size (first use, Redis restarted empty,
//!   keys evicted, a lot resized, an older node's release), both sets are rebuilt from the keys: O(lot size)
//!   once (a few ms for 10,000 orbits), then O(log n) per claim again.
//!
//! `CLAIM_ANY` reads the lot's orbit keys by name (built from `stem` and the numbers) besides the declared keys:
//! fine on a standalone or Sentinel-managed Redis, and every such key shares the lot's hash tag.

/// The helpers every script that touches the free-orbit index starts with.
macro_rules! index_lib {
    () => {
        r#"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function to_held(free, held, idx, at)
  redis.call('ZREM', free, idx)
  redis.call('ZADD', held, at, idx)
end
local function to_free(free, held, idx)
  redis.call('ZREM', held, idx)
  redis.call('ZADD', free, idx, idx)
end
"#
    };
}

/// KEYS: orbit key, fence key, free set, held set. ARGV: node, lease_ms, info, channel, lot, number, orbit index.
/// → `{"granted", number, fence}` or `{"taken", current value}`.
pub const CLAIM: &str = concat!(
    index_lib!(),
    r#"
local cur = redis.call('GET', KEYS[1])
if cur then return {'taken', cur} end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], f .. ' ' .. ARGV[1] .. ' ' .. ARGV[3], 'NX', 'PX', ARGV[2])
to_held(KEYS[3], KEYS[4], ARGV[7], now_ms() + tonumber(ARGV[2]))
redis.call('PUBLISH', ARGV[4], 'claim ' .. ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. f .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return {'granted', ARGV[6], tostring(f)}
"#
);

/// KEYS: fence key, free set, held set. ARGV: node, lease_ms, info, channel, lot, orbit key stem, first number,
/// count, width, start. → `{"granted", number, fence}` for the lowest free orbit from `start` on (wrapping), or
/// `{"full"}`. O(log n) per claim (see the module doc), not a probe per orbit.
pub const CLAIM_ANY: &str = concat!(
    index_lib!(),
    r#"
local lo, n, w, s = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local fence, free, held = KEYS[1], KEYS[2], KEYS[3]
local function num(i) return string.format('%0' .. w .. 'd', lo + i) end
local now = now_ms()
if redis.call('ZCARD', free) + redis.call('ZCARD', held) ~= n then
  redis.call('DEL', free, held)
  for i = 0, n - 1 do
    local ttl = redis.call('PTTL', ARGV[6] .. num(i))
    if ttl == -2 then redis.call('ZADD', free, i, i) else redis.call('ZADD', held, now + math.max(ttl, 0), i) end
  end
end
local function reap(limit)
  local due = redis.call('ZRANGEBYSCORE', held, '-inf', now, 'LIMIT', 0, limit)
  for _, m in ipairs(due) do
    local ttl = redis.call('PTTL', ARGV[6] .. num(tonumber(m)))
    if ttl == -2 then to_free(free, held, m) else redis.call('ZADD', held, now + math.max(ttl, 1000), m) end
  end
  return #due
end
reap(64)
while true do
  local c = redis.call('ZRANGEBYSCORE', free, s, '+inf', 'LIMIT', 0, 1)[1]
  if not c then c = redis.call('ZRANGEBYSCORE', free, '-inf', '(' .. s, 'LIMIT', 0, 1)[1] end
  if not c then
    if reap(1000) == 0 then return {'full'} end
  else
    local number = num(tonumber(c))
    local k = ARGV[6] .. number
    local ttl = redis.call('PTTL', k)
    if ttl == -2 then
      local f = redis.call('INCR', fence)
      redis.call('SET', k, f .. ' ' .. ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
      to_held(free, held, c, now + tonumber(ARGV[2]))
      redis.call('PUBLISH', ARGV[4], 'claim ' .. ARGV[5] .. ' ' .. number .. ' ' .. f .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
      return {'granted', number, tostring(f)}
    end
    to_held(free, held, c, now + math.max(ttl, 1000))
  end
end
"#
);

/// KEYS: n orbit keys, then their n held sets. ARGV: node, lease_ms, channel, sip URI, then one fence per key,
/// then one orbit index per key. → per key `"held"` (lease extended, its deadline in the held set moved),
/// `"missing"`, or the current value (someone else's, or another fence). Publishes this node's heartbeat
/// (`alive`) either way.
pub const RENEW: &str = r#"
local n = #KEYS / 2
local out = {}
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[2])
for i = 1, n do
  local k = KEYS[i]
  local cur = redis.call('GET', k)
  if not cur then
    out[i] = 'missing'
  else
    local f, node = string.match(cur, '^(%d+) (%S+)')
    if node == ARGV[1] and f == ARGV[4 + i] then
      redis.call('PEXPIRE', k, ARGV[2])
      redis.call('ZADD', KEYS[n + i], 'XX', until_ms, ARGV[4 + n + i])
      out[i] = 'held'
    else
      out[i] = cur
    end
  end
end
redis.call('PUBLISH', ARGV[3], 'alive ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[4])
return out
"#;

/// KEYS: n orbit keys, then their n fence keys, their n free sets, their n held sets. ARGV: node, lease_ms,
/// channel, then per claim: fence, info, lot, number, orbit index. An absent key is set again with its fence (the
/// lot's counter raised to at least that fence, a `claim` published); one still ours is extended, and rewritten
/// (another `claim` published) when its info differs: this is also how a node updates the info of a claim it
/// holds (the parked dialog after an attended park). Either way its index moves to the held set with the new
/// deadline. → per key `"held"` or the current value.
pub const RESTORE: &str = concat!(
    index_lib!(),
    r#"
local n = #KEYS / 4
local out = {}
local until_ms = now_ms() + tonumber(ARGV[2])
for i = 1, n do
  local k, fk, free, held = KEYS[i], KEYS[n + i], KEYS[2 * n + i], KEYS[3 * n + i]
  local b = 3 + (i - 1) * 5
  local f, info, lot, num, idx = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local cur = redis.call('GET', k)
  if not cur then
    redis.call('SET', k, f .. ' ' .. ARGV[1] .. ' ' .. info, 'PX', ARGV[2])
    local c = tonumber(redis.call('GET', fk) or '0')
    if c < tonumber(f) then redis.call('SET', fk, f) end
    to_held(free, held, idx, until_ms)
    redis.call('PUBLISH', ARGV[3], 'claim ' .. lot .. ' ' .. num .. ' ' .. f .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. info)
    out[i] = 'held'
  else
    local cf, cn = string.match(cur, '^(%d+) (%S+)')
    if cn == ARGV[1] and cf == f then
      local v = f .. ' ' .. ARGV[1] .. ' ' .. info
      if cur == v then
        redis.call('PEXPIRE', k, ARGV[2])
      else
        redis.call('SET', k, v, 'PX', ARGV[2])
        redis.call('PUBLISH', ARGV[3], 'claim ' .. lot .. ' ' .. num .. ' ' .. f .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. info)
      end
      to_held(free, held, idx, until_ms)
      out[i] = 'held'
    else
      out[i] = cur
    end
  end
end
return out
"#
);

/// KEYS: orbit key, free set, held set. ARGV: node, fence, channel, lot, number, orbit index. Compare-and-delete;
/// the index goes back to the free set. → `"1"` deleted, `"0"` not ours.
pub const RELEASE: &str = concat!(
    index_lib!(),
    r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return '0' end
local f, n = string.match(cur, '^(%d+) (%S+)')
if n == ARGV[1] and f == ARGV[2] then
  redis.call('DEL', KEYS[1])
  to_free(KEYS[2], KEYS[3], ARGV[6])
  redis.call('PUBLISH', ARGV[3], 'release ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[2] .. ' ' .. ARGV[1])
  return '1'
end
return '0'
"#
);

/// KEYS: orbit keys. → for each, its value (`""` if gone meanwhile) and its PTTL, flattened.
pub const READ: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  out[2 * i - 1] = redis.call('GET', k) or ''
  out[2 * i] = tostring(redis.call('PTTL', k))
end
return out
"#;
