-- Key layout on a standalone Redis that may still hold the names of earlier releases
-- (prepended to each script; PER: keys per scope, 1, or 2 with the lease holders).
-- KEYS  the tagged names (hashes, then PER 2 holder sets), the legacy names in the same order,
--       then the layout marker. Until the marker says 'tagged' every replica, old or new,
--       counts under the legacy names. Once it does, a legacy key is folded into its tagged
--       name on first touch (a legacy key written later by a replica still on an old release
--       is folded the same way) and the script runs on the tagged names.
local N = (#KEYS - 1) / (2 * PER)
local K, H = {}, {}
local tagged = redis.call('GET', KEYS[#KEYS]) == 'tagged'

-- Buckets: the lower level (never admits more than either copy allows), the later time.
-- Months: usage in the same month adds up (a legacy key recreated after a fold counts from 0);
-- otherwise the later month wins.
local function fold_hash(old, new)
  if redis.call('EXISTS', old) == 0 then return end
  if redis.call('EXISTS', new) == 0 then
    redis.call('RENAME', old, new)
    return
  end
  local a = redis.call('HMGET', new, 'tl', 'tt', 'rl', 'rt', 'm', 'mu')
  local b = redis.call('HMGET', old, 'tl', 'tt', 'rl', 'rt', 'm', 'mu')
  local w = {}
  for _, f in ipairs({{1, 'tl', 'tt'}, {3, 'rl', 'rt'}}) do
    local j = f[1]
    if b[j] and (not a[j] or tonumber(b[j]) < tonumber(a[j])) then
      local at = b[j + 1]
      if a[j + 1] and tonumber(a[j + 1]) > tonumber(at) then at = a[j + 1] end
      w[#w + 1] = f[2]; w[#w + 1] = b[j]; w[#w + 1] = f[3]; w[#w + 1] = at
    end
  end
  if b[5] then
    if a[5] and tonumber(a[5]) == tonumber(b[5]) then
      w[#w + 1] = 'mu'
      w[#w + 1] = string.format('%d', tonumber(a[6]) + tonumber(b[6]))
    elseif not a[5] or tonumber(b[5]) > tonumber(a[5]) then
      w[#w + 1] = 'm'; w[#w + 1] = b[5]; w[#w + 1] = 'mu'; w[#w + 1] = b[6]
    end
  end
  if #w > 0 then redis.call('HSET', new, unpack(w)) end
  local ttl = redis.call('PTTL', old)
  if ttl > redis.call('PTTL', new) then redis.call('PEXPIRE', new, ttl) end
  redis.call('DEL', old)
end

-- Holder sets: the union, each holder's later expiry.
local function fold_holders(old, new)
  if redis.call('EXISTS', old) == 0 then return end
  local ttl = redis.call('PTTL', old)
  if ttl < redis.call('PTTL', new) then ttl = redis.call('PTTL', new) end
  redis.call('ZUNIONSTORE', new, 2, new, old, 'AGGREGATE', 'MAX')
  redis.call('DEL', old)
  if ttl > 0 then redis.call('PEXPIRE', new, ttl) end
end

for i = 1, N do
  local new, old = KEYS[i], KEYS[PER * N + i]
  local newh, oldh
  if PER == 2 then newh = KEYS[N + i]; oldh = KEYS[3 * N + i] end
  if tagged then
    fold_hash(old, new)
    if PER == 2 then fold_holders(oldh, newh) end
    K[i] = new; H[i] = newh
  else
    K[i] = old; H[i] = oldh
  end
end
