//! The Lua scripts behind each [`crate::cluster::RedisOp`]: each runs atomically in Redis, so a claim, its fence
//! and its `claim` message happen together or not at all. Keys and formats: [`crate::cluster::wire`].
//! Every reply element is a string (integers come back as `tostring`), so the adapter parses one shape.
//!
//! `CLAIM_ANY` reads the lot's orbit keys by name (built from `stem` and the numbers) besides the declared
//! `KEYS[1]`: fine on a standalone or Sentinel-managed Redis, and every such key shares the lot's hash tag.

/// KEYS: orbit key, fence key. ARGV: node, lease_ms, info, channel, lot, number.
/// → `{"granted", number, fence}` or `{"taken", current value}`.
pub const CLAIM: &str = r#"
local cur = redis.call('GET', KEYS[1])
if cur then return {'taken', cur} end
local f = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], f .. ' ' .. ARGV[1] .. ' ' .. ARGV[3], 'NX', 'PX', ARGV[2])
redis.call('PUBLISH', ARGV[4], 'claim ' .. ARGV[5] .. ' ' .. ARGV[6] .. ' ' .. f .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return {'granted', ARGV[6], tostring(f)}
"#;

/// KEYS: fence key. ARGV: node, lease_ms, info, channel, lot, orbit key stem, first number, count, width, start.
/// → `{"granted", number, fence}` for the first free orbit from `start` on (wrapping), or `{"full"}`.
pub const CLAIM_ANY: &str = r#"
local lo, n, w, s = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
for i = 0, n - 1 do
  local num = string.format('%0' .. w .. 'd', lo + (s + i) % n)
  local k = ARGV[6] .. num
  if redis.call('EXISTS', k) == 0 then
    local f = redis.call('INCR', KEYS[1])
    redis.call('SET', k, f .. ' ' .. ARGV[1] .. ' ' .. ARGV[3], 'PX', ARGV[2])
    redis.call('PUBLISH', ARGV[4], 'claim ' .. ARGV[5] .. ' ' .. num .. ' ' .. f .. ' ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
    return {'granted', num, tostring(f)}
  end
end
return {'full'}
"#;

/// KEYS: orbit keys. ARGV: node, lease_ms, channel, sip URI, then one fence per key.
/// → per key `"held"` (lease extended), `"missing"`, or the current value (someone else's, or another fence).
/// Publishes this node's heartbeat (`alive`) either way.
pub const RENEW: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  local cur = redis.call('GET', k)
  if not cur then
    out[i] = 'missing'
  else
    local f, n = string.match(cur, '^(%d+) (%S+)')
    if n == ARGV[1] and f == ARGV[4 + i] then
      redis.call('PEXPIRE', k, ARGV[2])
      out[i] = 'held'
    else
      out[i] = cur
    end
  end
end
redis.call('PUBLISH', ARGV[3], 'alive ' .. ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[4])
return out
"#;

/// KEYS: n orbit keys, then their n fence keys. ARGV: node, lease_ms, channel, then per claim: fence, info, lot,
/// number. An absent key is set again with its fence (the lot's counter raised to at least that fence, a `claim`
/// published); one still ours is extended, and rewritten (another `claim` published) when its info differs: this
/// is also how a node updates the info of a claim it holds (the parked dialog after an attended park). → per key
/// `"held"` or the current value.
pub const RESTORE: &str = r#"
local n = #KEYS / 2
local out = {}
for i = 1, n do
  local k, fk = KEYS[i], KEYS[n + i]
  local b = 3 + (i - 1) * 4
  local f, info, lot, num = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local cur = redis.call('GET', k)
  if not cur then
    redis.call('SET', k, f .. ' ' .. ARGV[1] .. ' ' .. info, 'PX', ARGV[2])
    local c = tonumber(redis.call('GET', fk) or '0')
    if c < tonumber(f) then redis.call('SET', fk, f) end
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
      out[i] = 'held'
    else
      out[i] = cur
    end
  end
end
return out
"#;

/// KEYS: orbit key. ARGV: node, fence, channel, lot, number. Compare-and-delete. → `"1"` deleted, `"0"` not ours.
pub const RELEASE: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur then return '0' end
local f, n = string.match(cur, '^(%d+) (%S+)')
if n == ARGV[1] and f == ARGV[2] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[3], 'release ' .. ARGV[4] .. ' ' .. ARGV[5] .. ' ' .. ARGV[2] .. ' ' .. ARGV[1])
  return '1'
end
return '0'
"#;

/// KEYS: orbit keys. → for each, its value (`""` if gone meanwhile) and its PTTL, flattened.
pub const READ: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  out[2 * i - 1] = redis.call('GET', k) or ''
  out[2 * i] = tostring(redis.call('PTTL', k))
end
return out
"#;
