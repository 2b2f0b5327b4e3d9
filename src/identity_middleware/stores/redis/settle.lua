-- Finished requests of one identity in one call (a flush merges every settlement of an identity in
-- its batch): spend on all four periods, the day's and the hour's metrics, their reservations
-- released, tokens (and a one-time budget's cost) on each of the identity's budgets, and the alert
-- thresholds this crossed.
-- KEYS: the 19 of lib.lua, then 20 this call's marker (P:{T}:c:<charge id>, the same hash tag), 21 the
--       previous UTC day's metrics (forecasts rate the identity's spend of that day and today's).
-- ARGV: 1 ULID, 2 cost (nanos), 3 input tokens, 4 output tokens, 5 requests, 6 errors,
--       7 expiry instants "<daily> <weekly> <monthly> <yearly> <day's metrics> <hour's>" (Unix s),
--       then "<now ms> <the previous UTC day's start ms>",
--       8 reservation members separated by spaces, or '', 9 the marker's TTL (s), 10 leases charged
--       "<now ms> <lease id>:<cost> ..." or '', 11 a lease to renew "<lease id> <fraction> <ttl ms>"
--       or '' (lib.lua), then field/increment pairs for the day's and the hour's metrics hashes
--       (per-model and unpriced counters; keys.py).
-- Returns 0 when the identity was deleted (or re-created) meanwhile: nothing is charged; 2 when
-- this charge was applied before (a retry after a timeout): nothing is charged again; else 1, or,
-- when alerts fired, {1, external id, then per alert: period index, percent, 'c'|'t', cost and
-- tokens consumed after this charge, the budget's definition (JSON)}. An alert fires once per
-- budget, threshold and period: its marker in the budget's usage hash is set with HSETNX. The
-- forecast alert (core/forecast.py) is percent 0, 'f', with the identity's recent spend (nanos) in
-- the tokens' place: a budget with an amount that asks for it (alert '0f0') and that this charge
-- leaves forecast to run out before its period ends (a one-time budget: within 366 days), marker a:f.
-- With leases (ARGV 10 or 11 not ''), the reply is a list whose last element is {renewed (lease_renew's
-- reply, or {-1, 0} when none was asked), then the amount each lease covered, -1 when it is gone}.
if redis.call('HGET', KEYS[1], 'u') ~= ARGV[1] then return 0 end
if not redis.call('SET', KEYS[20], '1', 'NX', 'EX', ARGV[9]) then return 2 end
if ARGV[8] ~= '' then
  local members = {}
  for member in string.gmatch(ARGV[8], '%S+') do members[#members + 1] = member end
  for i = 7, 10 do redis.call('ZREM', KEYS[i], unpack(members)) end
  redis.call('ZREM', KEYS[12], unpack(members))
end
local at = {}
for instant in string.gmatch(ARGV[7], '%d+') do at[#at + 1] = instant end
local now_ms, since_ms = tonumber(at[7]), tonumber(at[8])
-- A key gets its expiry from the call that creates it (the counter then equals the increment; the
-- day's and hour's hashes are created only here and by a refused admission, which sets it too): an
-- existing key has had its expiry since, and setting it again on every charge cost Redis a command each.
local day, hour = KEYS[11], KEYS[19]
local function count(field, by) -- into the day's metrics and the hour's alike
  redis.call('HINCRBY', day, field, by)
  redis.call('HINCRBY', hour, field, by)
end
local requests = tonumber(ARGV[5])
if redis.call('HINCRBY', day, 'n', requests) == requests then redis.call('EXPIREAT', day, at[5]) end
if redis.call('HINCRBY', hour, 'n', requests) == requests then redis.call('EXPIREAT', hour, at[6]) end
if ARGV[6] ~= '0' then count('e', ARGV[6]) end
if ARGV[3] ~= '0' then count('i', ARGV[3]) end
if ARGV[4] ~= '0' then count('o', ARGV[4]) end
for i = 12, #ARGV, 2 do count(ARGV[i], ARGV[i + 1]) end
local spent = {}
if ARGV[2] ~= '0' then
  count('c', ARGV[2])
  local cost = tonumber(ARGV[2])
  for i = 3, 6 do
    spent[i - 2] = redis.call('INCRBY', KEYS[i], ARGV[2])
    if spent[i - 2] == cost then redis.call('EXPIREAT', KEYS[i], at[i - 2]) end
  end
end

local leased = nil
if ARGV[10] ~= '' or ARGV[11] ~= '' then
  local now_ms = tonumber(string.match(ARGV[10], '^(%d+)'))
  local covered = {}
  for lid, charge in string.gmatch(ARGV[10], '(%w+):(%d+)') do
    covered[#covered + 1] = lease_charge(lid, tonumber(charge), now_ms)
  end
  local renewed = {-1, 0}
  local lid, fraction, ttl_ms = string.match(ARGV[11], '^(%w+) (%S+) (%d+)$')
  if lid then renewed = lease_renew(lid, tonumber(fraction), tonumber(ttl_ms), now_ms, false) end
  leased = {renewed, unpack(covered)}
end
local function reply_with(reply)
  if not leased then
    if #reply == 1 then return reply[1] end
    return reply
  end
  reply[#reply + 1] = leased
  return reply
end

local cost, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]) + tonumber(ARGV[4])
if cost == 0 and tokens == 0 then return reply_with({1}) end
local fired = {}
for p, budget in pairs(budgets_of()) do
  local usage = KEYS[12 + p]
  local after, created = {}, false -- created: this call made a field of the hash (so maybe the hash)
  if tokens ~= 0 then
    after.t = redis.call('HINCRBY', usage, 't', tokens)
    created = after.t == tokens
  end
  if cost ~= 0 then
    if p == 5 then after.c = redis.call('HINCRBY', usage, 'c', ARGV[2]) else after.c = spent[p] end
  end
  for percent, dim, line in string.gmatch(budget[6], '(%d+)([ct])(%d+)') do
    local share, threshold = cost, tonumber(line)
    if dim == 't' then share = tokens end
    -- Crossed by this charge: before < threshold <= after. Exact below 2^53: the threshold is
    -- ceil(percent * limit / 100), computed exactly by the caller, and the sums are integers.
    if after[dim] and after[dim] >= threshold and after[dim] - share < threshold
        and redis.call('HSETNX', usage, 'a:' .. percent .. dim, '1') == 1 then
      created = true
      local consumed_c = after.c
      if not consumed_c then
        if p == 5 then consumed_c = redis.call('HGET', usage, 'c') else consumed_c = redis.call('GET', KEYS[2 + p]) end
      end
      -- Numbers, not tostring(): Lua prints 15 digits and more in exponent form; Redis sends an
      -- integer reply (exact below 2^53).
      fired[#fired + 1] = {p, percent, dim, tonumber(consumed_c or 0),
                           tonumber(after.t or redis.call('HGET', usage, 't') or 0),
                           redis.call('HGET', KEYS[2], 'def:' .. PERIOD_NAMES[p]) or ''}
    end
  end
  if after.c and budget[3] ~= '' and string.find(budget[6], '0f0', 1, true) and is_live(budget, now_ms) then
    local consumed, limit = tonumber(after.c), tonumber(budget[3])
    local recent = tonumber(redis.call('HGET', day, 'c') or '0') + tonumber(redis.call('HGET', KEYS[21], 'c') or '0')
    local runs_out = consumed >= limit
    if not runs_out and recent > 0 then
      -- Doubles: the exact forecast (Python's) may differ by a millisecond at the very boundary.
      local exhausts_ms = now_ms + (limit - consumed) * (now_ms - since_ms) / recent
      local ends_ms = now_ms + 366 * 86400000
      if p < 5 then ends_ms = (tonumber(at[p]) - 86400) * 1000 end -- the spend's expiry is a day past the end
      runs_out = exhausts_ms < ends_ms
    end
    if runs_out and redis.call('HSETNX', usage, 'a:f', '1') == 1 then
      created = true
      fired[#fired + 1] = {p, 0, 'f', consumed, recent, redis.call('HGET', KEYS[2], 'def:' .. PERIOD_NAMES[p]) or ''}
    end
  end
  -- As the counters above: the expiry is set by the call that creates a field, not on every charge.
  if p < 5 and created then redis.call('EXPIREAT', usage, at[p]) end
end
if #fired == 0 then return reply_with({1}) end
local reply = {1, redis.call('HGET', KEYS[1], 'x')}
for _, alert in ipairs(fired) do
  for _, value in ipairs(alert) do reply[#reply + 1] = value end
end
return reply_with(reply)
