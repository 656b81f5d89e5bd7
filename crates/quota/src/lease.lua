-- Leases: src/window.rs's `grant`, step for step (read that file for the semantics and the
-- invariant). Gives back what the holder returns, decides the call like reserve.lua, and if it
-- is admitted leases the holder a slice of each scope beyond it. One clock: Redis TIME.
--
-- K[i]     the hash of scope i (see reserve.lua); H[i] its holders, a sorted set (member: holder
--          id, score: when its lease record expires, ms). Both from the key layout prelude.
-- ARGV     holder, need (tokens of the call; -1: only give back), calls (slice size in calls),
--          lease_ttl_ms,
--          then per scope: tokens_per_minute, requests_per_minute, monthly_tokens (-1:
--          unlimited), returned_tokens, returned_requests, returned_month, keep (1: the holder
--          still holds, or is being granted, something of the scope besides this call)
-- Returns  {0, others}                                                      given back only
--          {1, month, remaining_tokens, remaining_requests, others,
--             then per scope: slice_tokens, slice_requests, left_tokens, left_requests}
--          {2, scope, dimension, limit, others}
--          {3, scope, remaining_budget, remaining_t, remaining_r, others}
--          {4, scope, dimension, retry_after_ms, remaining_t, remaining_r, others}
-- (-1: unlimited; `others`: how many other holders have a live lease on these scopes, so
--  a refused caller knows whether recalling them can help)
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

local holder = ARGV[1]
local est = tonumber(ARGV[2])
local calls = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local month = month_of(secs)
local cost = est * U

-- Step 0: the other holders of each scope (expired records dropped).
local holders = {}
local others = 0
for i = 1, N do
  local hk = H[i]
  redis.call('ZREMRANGEBYSCORE', hk, '-inf', now)
  local n = redis.call('ZCARD', hk)
  if redis.call('ZSCORE', hk, holder) then n = n - 1 end
  holders[i] = n + 1
  if n > others then others = n end
end

-- The holder's own record: kept while it holds a slice of the scope, dropped otherwise.
local function register(i, holding)
  local hk = H[i]
  if holding then
    redis.call('ZADD', hk, now + ttl, holder)
    redis.call('PEXPIRE', hk, ttl)
  else
    redis.call('ZREM', hk, holder)
  end
end

-- Step 1: what the holder gives back, into each scope (give_back: a settlement to 0 of the
-- returned tokens, the returned requests into the request bucket; both capped).
local state = {}
local keep = {}
for i = 1, N do
  local o = 7 * i - 2
  local tpm = tonumber(ARGV[o])
  local rpm = tonumber(ARGV[o + 1])
  local mon = tonumber(ARGV[o + 2])
  local rt = tonumber(ARGV[o + 3])
  local rr = tonumber(ARGV[o + 4])
  local rm = tonumber(ARGV[o + 5])
  keep[i] = tonumber(ARGV[o + 6]) == 1
  local h = redis.call('HMGET', K[i], 'tl', 'tt', 'rl', 'rt', 'm', 'mu')
  local s = {tl = h[1], tt = h[2], rl = h[3], rt = h[4], m = h[5], mu = h[6],
             tpm = tpm, rpm = rpm, mon = mon, dirty = false}
  if rt > 0 then
    if tpm >= 0 and s.tl then
      local cap = tpm * U
      local level = refilled(s.tl, s.tt, tpm) + rt * U
      if level > cap then level = cap end
      s.tl = level; s.tt = now; s.dirty = true
    end
    if mon >= 0 and tonumber(s.m) == rm then
      local used = tonumber(s.mu) - rt
      if used < 0 then used = 0 end
      s.mu = used; s.dirty = true
    end
  end
  if rr > 0 and rpm >= 0 and s.rl then
    local cap = rpm * U
    local level = refilled(s.rl, s.rt, rpm) + rr * U
    if level > cap then level = cap end
    s.rl = level; s.rt = now; s.dirty = true
  end
  state[i] = s
end

local function save(i, s)
  local w = {}
  if s.tl then w[#w + 1] = 'tl'; w[#w + 1] = int(s.tl); w[#w + 1] = 'tt'; w[#w + 1] = int(s.tt) end
  if s.rl then w[#w + 1] = 'rl'; w[#w + 1] = int(s.rl); w[#w + 1] = 'rt'; w[#w + 1] = int(s.rt) end
  if s.m then w[#w + 1] = 'm'; w[#w + 1] = int(s.m); w[#w + 1] = 'mu'; w[#w + 1] = int(s.mu) end
  if #w > 0 then
    redis.call('HSET', K[i], unpack(w))
    redis.call('PEXPIRE', K[i], TTL_MS)
  end
end

if est < 0 then
  for i = 1, N do
    if state[i].dirty then save(i, state[i]) end
    register(i, keep[i])
  end
  return {0, others}
end

-- Step 2: the call itself, as reserve.lua decides it.
local before_t, before_r, after_t, after_r = -1, -1, -1, -1
local exceeds, budget, rate
for i = 1, N do
  local s = state[i]
  if s.tpm >= 0 then
    local level = refilled(s.tl, s.tt, s.tpm)
    if est > s.tpm then
      if not exceeds then exceeds = {i, 1, s.tpm} end
    elseif level < cost then
      local wait = math.ceil((cost - level) / s.tpm)
      if not rate or wait > rate[3] then rate = {i, 1, wait} end
    end
    before_t = lower(before_t, whole(level))
    after_t = lower(after_t, whole(level - cost))
    s.ntl = level - cost
  end
  if s.rpm >= 0 then
    local level = refilled(s.rl, s.rt, s.rpm)
    if s.rpm == 0 then
      if not exceeds then exceeds = {i, 2, s.rpm} end
    elseif level < U then
      local wait = math.ceil((U - level) / s.rpm)
      if not rate or wait > rate[3] then rate = {i, 2, wait} end
    end
    before_r = lower(before_r, whole(level))
    after_r = lower(after_r, whole(level - U))
    s.nrl = level - U
  end
  if s.mon >= 0 then
    local used = 0
    if tonumber(s.m) == month then used = tonumber(s.mu) end
    local left = s.mon - used
    if left < 0 then left = 0 end
    if est > s.mon then
      if not exceeds then exceeds = {i, 3, s.mon} end
    elseif est > left then
      if not budget then budget = {i, left} end
    end
    before_t = lower(before_t, left)
    local left_after = left - est
    if left_after < 0 then left_after = 0 end
    after_t = lower(after_t, left_after)
    s.nmu = used + est
  end
end

local refused
if exceeds then refused = {2, exceeds[1], exceeds[2], exceeds[3], others}
elseif budget then refused = {3, budget[1], budget[2], before_t, before_r, others}
elseif rate then refused = {4, rate[1], rate[2], rate[3], before_t, before_r, others}
end
if refused then
  for i = 1, N do
    if state[i].dirty then save(i, state[i]) end
    register(i, keep[i])
  end
  return refused
end

-- Step 3: admitted; each scope leases a slice beyond the call.
local reply = {1, month, after_t, after_r, others}
for i = 1, N do
  local s = state[i]
  local share = 2 * holders[i]
  if s.tpm >= 0 then s.tl = s.ntl; s.tt = now end
  if s.rpm >= 0 then s.rl = s.nrl; s.rt = now end
  if s.mon >= 0 then s.m = month; s.mu = s.nmu end
  local slice_t, slice_r, left_t, left_r = 0, 0, -1, -1
  if s.tpm >= 0 then left_t = whole(s.tl) end
  if s.mon >= 0 then left_t = lower(left_t, s.mon - s.mu) end
  if left_t < 0 and (s.tpm >= 0 or s.mon >= 0) then left_t = 0 end
  if s.tpm >= 0 or s.mon >= 0 then
    slice_t = math.min(calls * est, math.floor(left_t / share))
    if est > 0 then slice_t = slice_t - slice_t % est else slice_t = 0 end
    left_t = left_t - slice_t
    if s.tpm >= 0 then s.tl = s.tl - slice_t * U end
    if s.mon >= 0 then s.mu = s.mu + slice_t end
  end
  if s.rpm >= 0 then
    local left = whole(s.rl)
    slice_r = math.min(calls, math.floor(left / share))
    left_r = left - slice_r
    s.rl = s.rl - slice_r * U
  end
  save(i, s)
  register(i, keep[i] or slice_t > 0 or slice_r > 0)
  reply[#reply + 1] = slice_t
  reply[#reply + 1] = slice_r
  reply[#reply + 1] = left_t
  reply[#reply + 1] = left_r
end
return reply
