-- One model, provider or workspace budget (its own hash tag, so its own Cluster slot): check and
-- reserve, settle with alert decisions, read, reset. ARGV[1] is the mode.
-- KEYS: 1 usage HASH of this period (c cost nanos, t tokens), 2 reservations ZSET ("<nanos>:<id>" scored
-- by expiry ms), 3 alert markers SET of this period, 4 the settle call's marker (settle only) or the
-- current 10 s request bucket, 5.. the five earlier buckets (admit, state).
local mode = ARGV[1]

local function reserved_now(now_ms)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
  local sum = 0
  for _, member in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    sum = sum + tonumber(string.match(member, '^(%d+):'))
  end
  return sum
end

local function requests()
  local n = 0
  for i = 4, #KEYS do n = n + tonumber(redis.call('GET', KEYS[i]) or '0') end
  return n
end

local function usage()
  local u = redis.call('HMGET', KEYS[1], 'c', 't')
  return u[1] or '0', u[2] or '0'
end

if mode == 'state' then
  local spent, tokens = usage()
  return {spent, reserved_now(tonumber(ARGV[2])), tokens, requests()}
end

if mode == 'reset' then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  return 1
end

if mode == 'release' then
  if ARGV[2] ~= '' then redis.call('ZREM', KEYS[2], ARGV[2]) end
  return 1
end

if mode == 'admit' then
  -- ARGV: 2 now ms, 3 amount limit ('' none), 4 token limit, 5 requests per minute, 6 estimate,
  -- 7 reservation member ('' none), 8 its expiry ms, 9 the bucket's TTL (s)
  local now_ms = tonumber(ARGV[2])
  local spent, tokens = usage()
  local reserved = reserved_now(now_ms)
  local seen = requests()
  local estimate = tonumber(ARGV[6])
  local blocked = 0
  if ARGV[3] ~= '' then
    local used = tonumber(spent) + reserved
    local limit = tonumber(ARGV[3])
    if used >= limit or (estimate > 0 and used + estimate > limit) then blocked = 1 end
  end
  if ARGV[4] ~= '' and tonumber(tokens) >= tonumber(ARGV[4]) then blocked = 1 end
  if ARGV[5] ~= '' and seen >= tonumber(ARGV[5]) then blocked = 1 end
  if blocked == 0 then
    if ARGV[7] ~= '' then
      redis.call('ZADD', KEYS[2], ARGV[8], ARGV[7])
      local ttl = tonumber(ARGV[8]) - now_ms + 60000
      if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
    end
    redis.call('INCR', KEYS[4])
    redis.call('EXPIRE', KEYS[4], ARGV[9])
  end
  return {blocked, spent, reserved, tokens, seen}
end

-- settle. ARGV: 2 cost nanos, 3 tokens, 4 reservation members to release (space separated), 5 usage
-- expiry (Unix s, 0 never), 6 the marker's TTL (s), 7 amount limit, 8 token limit (not read here),
-- 9 alert thresholds "<percent>:<c|t>:<threshold> ...", 10 the alert markers' expiry (Unix s, 0 never),
-- 11 the forecast alert's "<now ms> <rate's start ms> <period end ms>" (core/forecast.py: the budget's
-- consumption this period over the time since its start; a one-time budget's end is 366 days on), or ''.
-- Returns {applied (0 when this call was applied before), cost, tokens, fired thresholds...}; the
-- forecast alert is the threshold "0:f", marked once per period as the others are.
if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[6]) then return {0} end
if ARGV[4] ~= '' then
  for member in string.gmatch(ARGV[4], '%S+') do redis.call('ZREM', KEYS[2], member) end
end
local after_c = redis.call('HINCRBY', KEYS[1], 'c', ARGV[2])
local after_t = redis.call('HINCRBY', KEYS[1], 't', ARGV[3])
if ARGV[5] ~= '0' then redis.call('EXPIREAT', KEYS[1], ARGV[5]) end
-- Integers, not tostring() (which prints 15 digits and more in exponent form).
local reply = {1, after_c, after_t}
for percent, dim, threshold in string.gmatch(ARGV[9], '(%d+):(%a):(%d+)') do
  local after = after_c
  if dim == 't' then after = after_t end
  -- Exact below 2^53: the threshold is ceil(percent * limit / 100), computed in integers by the
  -- caller, and the usage an integer. Once per budget, threshold and period: the marker set
  -- decides, across every process.
  if after >= tonumber(threshold) and redis.call('SADD', KEYS[3], percent .. ':' .. dim) == 1 then
    reply[#reply + 1] = percent .. ':' .. dim
  end
end
local now_ms, since_ms, ends_ms = string.match(ARGV[11] or '', '^(%d+) (%d+) (%d+)$')
if now_ms and tonumber(ARGV[2]) > 0 and ARGV[7] ~= '' then
  local limit, span = tonumber(ARGV[7]), tonumber(now_ms) - tonumber(since_ms)
  -- Doubles: the exact forecast (Python's) may differ by a millisecond at the very boundary.
  local runs_out = after_c >= limit or (after_c > 0 and span > 0
    and tonumber(now_ms) + (limit - after_c) * span / after_c < tonumber(ends_ms))
  if runs_out and redis.call('SADD', KEYS[3], '0:f') == 1 then reply[#reply + 1] = '0:f' end
end
if ARGV[10] ~= '0' then redis.call('EXPIREAT', KEYS[3], ARGV[10]) end
return reply
