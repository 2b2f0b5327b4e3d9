-- A top-up of an identity's one-time budget (a prepaid balance), once per idempotency key, in one call:
-- its limit raised where the admission script reads it (l:one_time) and where reads find it
-- (def:one_time), and the top-up kept in the ledger under its key.
-- KEYS: 1 the identity's budgets hash, 2 its top-up ledger (HASH: '#' the last sequence number,
--       'k:<idempotency key>' -> "<sequence> <amount nanos> <new limit nanos> <time ISO>").
-- ARGV: 1 idempotency key, 2 amount (nanos), 3 now (ISO), 4 '"updated_at":"<now as the JSON record writes it>"',
--       5 the largest limit allowed (nanos).
-- Returns {1, entry} (a new top-up, or the one this key made before: the caller compares amounts),
-- {0} when there is no one-time budget, {2} when it has no amount, {3} when the new limit would pass ARGV 5.
-- Money is added as decimal strings, digit by digit: exact to the nano-dollar at any size (Lua numbers
-- are doubles, exact only below 2^53 nano-USD).
local entry = redis.call('HGET', KEYS[2], 'k:' .. ARGV[1])
if entry then return {1, entry} end
local limits = redis.call('HGET', KEYS[1], 'l:one_time')
local record = redis.call('HGET', KEYS[1], 'def:one_time')
if not limits or not record then return {0} end
local live, expiry, amount, rest = string.match(limits, '^(%d):(%d*):(%d*):(.*)$')
if not amount then return {0} end
if amount == '' then return {2} end

local function add(a, b) -- two non-negative decimal integers as strings
  local digits, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local sum = carry + (i > 0 and tonumber(string.sub(a, i, i)) or 0) + (j > 0 and tonumber(string.sub(b, j, j)) or 0)
    digits[#digits + 1] = sum % 10
    carry = math.floor(sum / 10)
    i, j = i - 1, j - 1
  end
  local out = {}
  for k = #digits, 1, -1 do out[#out + 1] = digits[k] end
  local text = string.gsub(table.concat(out), '^0+', '')
  if text == '' then return '0' end
  return text
end

local function greater(a, b) -- a > b, decimal integers without leading zeros
  if #a ~= #b then return #a > #b end
  return a > b
end

local function usd(nanos) -- "10500000000" -> "10.50": the record's plain notation (format_usd)
  local padded = string.rep('0', math.max(0, 10 - #nanos)) .. nanos
  local whole, fraction = string.sub(padded, 1, #padded - 9), string.sub(padded, #padded - 8)
  fraction = string.gsub(fraction, '0+$', '')
  if #fraction < 2 then fraction = fraction .. string.rep('0', 2 - #fraction) end
  return whole .. '.' .. fraction
end

local function times(a, k) -- a decimal integer string times a small integer (a percent)
  local sum = '0'
  for _ = 1, k do sum = add(sum, a) end
  return sum
end

local function cost_thresholds(alerts, limit) -- lib.lua's alerts, each cost threshold ceil(percent * limit / 100) again
  local out = {}
  for percent, dim, threshold in string.gmatch(alerts, '(%d+)(%a)(%d+)') do -- 'f', the forecast alert, stays
    if dim == 'c' then
      local hundredfold = add(times(limit, tonumber(percent)), '99')
      threshold = #hundredfold > 2 and string.sub(hundredfold, 1, #hundredfold - 2) or '0'
    end
    out[#out + 1] = percent .. dim .. threshold
  end
  return table.concat(out, ',')
end

local limit = add(amount, ARGV[2])
if greater(limit, ARGV[5]) then return {3} end
local tokens, rpm, alerts = string.match(rest, '^(%d*):(%d*):(.*)$')
redis.call('HSET', KEYS[1], 'l:one_time',
  table.concat({live, expiry, limit, tokens, rpm, cost_thresholds(alerts, limit)}, ':'))
-- The record's top-level "amount" is its only unescaped '"amount":"': a string field's own quotes are escaped.
record = string.gsub(record, '"amount":"[0-9.]+"', '"amount":"' .. usd(limit) .. '"', 1)
record = string.gsub(record, '"updated_at":"[^"]*"', ARGV[4], 1)
redis.call('HSET', KEYS[1], 'def:one_time', record)
local sequence = redis.call('HINCRBY', KEYS[2], '#', 1)
entry = sequence .. ' ' .. ARGV[2] .. ' ' .. limit .. ' ' .. ARGV[3]
redis.call('HSET', KEYS[2], 'k:' .. ARGV[1], entry)
return {1, entry}
