-- Stores one entry of a tenant within the tenant's byte bound, evicting its entries that
-- expire first (with one TTL: the oldest). Every key is the tenant's (one hash tag), so the
-- script runs on Redis Cluster; the entries it evicts are named from ARGV[6] and the
-- digests in the index, which carry the same hash tag and so live in the same slot.
-- KEYS[1] the entry
-- KEYS[2] the tenant's index: a sorted set, digest -> expiry (ms since the epoch)
-- KEYS[3] the tenant's sizes: a hash, digest -> bytes, and '#' -> their total
-- ARGV[1] the digest (hex), ARGV[2] the entry, ARGV[3] TTL (ms), ARGV[4] the tenant's bound
-- (bytes), ARGV[5] now (ms since the epoch), ARGV[6] the name of an entry without its digest
-- Returns {stored (0 or 1), entries evicted}.
local digest, value = ARGV[1], ARGV[2]
local ttl, bound, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local prefix = ARGV[6]
local size = string.len(value)
if size > bound or ttl <= 0 then return {0, 0} end

local total = tonumber(redis.call('HGET', KEYS[3], '#') or '0')
local function forget(d)
  total = total - tonumber(redis.call('HGET', KEYS[3], d) or '0')
  redis.call('HDEL', KEYS[3], d)
  redis.call('ZREM', KEYS[2], d)
end

-- Entries past their expiry: Redis has dropped them (or is about to); only the books remain.
for _, d in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do forget(d) end
-- The same entry written again replaces itself.
if redis.call('ZSCORE', KEYS[2], digest) then forget(digest) end
if total < 0 or redis.call('ZCARD', KEYS[2]) == 0 then total = 0 end

local evicted = 0
while total + size > bound do
  local first = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #first == 0 then break end
  forget(first[1])
  redis.call('DEL', prefix .. first[1])
  evicted = evicted + 1
end

redis.call('SET', KEYS[1], value, 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, digest)
redis.call('HSET', KEYS[3], digest, size, '#', total + size)
-- The books outlive the last entry they count by a minute, and no longer.
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local keep = math.max(tonumber(last[2]) - now, ttl) + 60000
redis.call('PEXPIRE', KEYS[2], keep)
redis.call('PEXPIRE', KEYS[3], keep)
return {1, evicted}
