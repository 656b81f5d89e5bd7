-- Settles an admission of ARGV[1] tokens, reserved in month ARGV[3], to ARGV[2] actual tokens:
-- src/window.rs's `settle`, step for step, in every scope (K, from the key layout prelude).
-- Requests are not refunded.
--
-- K[i]     the hash of scope i (see reserve.lua)
-- ARGV     estimate, actual, month, then per scope: tokens_per_minute, monthly_tokens (-1: unlimited)
-- Returns  1
local U = 60000
local TTL_MS = 35 * 24 * 3600 * 1000

local est = tonumber(ARGV[1])
local delta = tonumber(ARGV[2]) - est
if delta == 0 then return 1 end
local month = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

for i = 1, N do
  local tpm = tonumber(ARGV[2 * i + 2])
  local mon = tonumber(ARGV[2 * i + 3])
  local h = redis.call('HMGET', K[i], 'tl', 'tt', 'm', 'mu')
  local w = {}
  if tpm >= 0 and h[1] then
    local cap = tpm * U
    local dt = now - tonumber(h[2])
    if dt < 0 then dt = 0 end
    local level = tonumber(h[1]) + dt * tpm
    if level > cap then level = cap end
    level = level - delta * U
    if level > cap then level = cap end
    w[#w + 1] = 'tl'; w[#w + 1] = string.format('%d', level)
    w[#w + 1] = 'tt'; w[#w + 1] = string.format('%d', now)
  end
  if mon >= 0 and tonumber(h[3]) == month then
    local used = tonumber(h[4]) + delta
    if used < 0 then used = 0 end
    w[#w + 1] = 'mu'; w[#w + 1] = string.format('%d', used)
  end
  if #w > 0 then
    redis.call('HSET', K[i], unpack(w))
    redis.call('PEXPIRE', K[i], TTL_MS)
  end
end
return 1
