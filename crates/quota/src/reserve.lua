-- Reserves ARGV[1] tokens and one request in every scope, all or nothing (the scopes' keys K[1..N]
-- come from the key layout prelude, keys_*.lua).
-- The arithmetic is src/window.rs's `reserve`, step for step: read that file for the semantics.
-- One clock for every replica: Redis TIME.
--
-- K[i]     the hash of scope i: tl tt (token bucket level in 1/60000 token, its time in ms),
--          rl rt (request bucket), m mu (month YYYYMM and tokens used in it)
-- ARGV     estimate, then per scope: tokens_per_minute, requests_per_minute, monthly_tokens
--          (-1: unlimited)
-- Returns  {1, month, remaining_tokens, remaining_requests}           admitted (-1: unlimited)
--          {2, scope, dimension, limit}                               the estimate exceeds a limit
--          {3, scope, remaining_budget, remaining_t, remaining_r}     monthly budget exhausted
--          {4, scope, dimension, retry_after_ms, remaining_t, remaining_r}  rate limited
-- (scope is 1-based; dimension 1 tokens per minute, 2 requests per minute, 3 monthly tokens)
local U = 60000
local TTL_MS = 35 * 24 * 3600 * 1000

local t = redis.call('TIME')
local secs = tonumber(t[1])
local now = secs * 1000 + math.floor(tonumber(t[2]) / 1000)

local function month_of(s)
  local z = math.floor(s / 86400) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m
  if mp < 10 then m = mp + 3 else m = mp - 9 end
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return y * 100 + m
end

local function refilled(level, at, rate)
  local cap = rate * U
  if not level then return cap end
  local dt = now - tonumber(at)
  if dt < 0 then dt = 0 end
  local l = tonumber(level) + dt * rate
  if l > cap then l = cap end
  return l
end

local function whole(level)
  if level < 0 then return 0 end
  return math.floor(level / U)
end

local function lower(cur, v)
  if cur < 0 or v < cur then return v end
  return cur
end

local function int(v)
  return string.format('%d', v)
end

local month = month_of(secs)
local est = tonumber(ARGV[1])
local cost = est * U
local before_t, before_r, after_t, after_r = -1, -1, -1, -1
local exceeds, budget, rate
local writes = {}

for i = 1, N do
  local tpm = tonumber(ARGV[3 * i - 1])
  local rpm = tonumber(ARGV[3 * i])
  local mon = tonumber(ARGV[3 * i + 1])
  local h = redis.call('HMGET', K[i], 'tl', 'tt', 'rl', 'rt', 'm', 'mu')
  local w = {}
  if tpm >= 0 then
    local level = refilled(h[1], h[2], tpm)
    if est > tpm then
      if not exceeds then exceeds = {i, 1, tpm} end
    elseif level < cost then
      local wait = math.ceil((cost - level) / tpm)
      if not rate or wait > rate[3] then rate = {i, 1, wait} end
    end
    before_t = lower(before_t, whole(level))
    after_t = lower(after_t, whole(level - cost))
    w[#w + 1] = 'tl'; w[#w + 1] = int(level - cost)
    w[#w + 1] = 'tt'; w[#w + 1] = int(now)
  end
  if rpm >= 0 then
    local level = refilled(h[3], h[4], rpm)
    if rpm == 0 then
      if not exceeds then exceeds = {i, 2, rpm} end
    elseif level < U then
      local wait = math.ceil((U - level) / rpm)
      if not rate or wait > rate[3] then rate = {i, 2, wait} end
    end
    before_r = lower(before_r, whole(level))
    after_r = lower(after_r, whole(level - U))
    w[#w + 1] = 'rl'; w[#w + 1] = int(level - U)
    w[#w + 1] = 'rt'; w[#w + 1] = int(now)
  end
  if mon >= 0 then
    local used = 0
    if tonumber(h[5]) == month then used = tonumber(h[6]) end
    local left = mon - used
    if left < 0 then left = 0 end
    if est > mon then
      if not exceeds then exceeds = {i, 3, mon} end
    elseif est > left then
      if not budget then budget = {i, left} end
    end
    before_t = lower(before_t, left)
    local left_after = left - est
    if left_after < 0 then left_after = 0 end
    after_t = lower(after_t, left_after)
    w[#w + 1] = 'm'; w[#w + 1] = int(month)
    w[#w + 1] = 'mu'; w[#w + 1] = int(used + est)
  end
  writes[i] = w
end

if exceeds then return {2, exceeds[1], exceeds[2], exceeds[3]} end
if budget then return {3, budget[1], budget[2], before_t, before_r} end
if rate then return {4, rate[1], rate[2], rate[3], before_t, before_r} end
for i = 1, N do
  if #writes[i] > 0 then
    redis.call('HSET', K[i], unpack(writes[i]))
    redis.call('PEXPIRE', K[i], TTL_MS)
  end
end
return {1, month, after_t, after_r}
