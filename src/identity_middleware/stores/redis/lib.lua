-- Shared by the scripts below (prepended to each): one identity's budgets, spend and live reservations.
-- KEYS of every per-identity script: 1 record, 2 budgets, 3-6 spend of the current daily/weekly/
-- monthly/yearly period, 7-10 reservations of those budgets, 11 today's metrics.
-- Money is integer nano-USD; comparisons use Lua doubles, exact while a period's spend + reservations
-- stay below 2^53 nano-USD (about $9,007,199). Spend itself is summed by INCRBY, exact to 2^63.
local PERIOD_INDEX = {daily = 1, weekly = 2, monthly = 3, yearly = 4}

-- Every budget as {period index, amount, spent (string, exact), reserved}, expired reservations pruned.
local function budget_states(now_ms, estimate)
  local budgets = redis.call('HGETALL', KEYS[2])
  local states, held, blocked = {}, {}, false
  for i = 1, #budgets, 2 do
    -- A field is a period (its value "<amount>" or "<amount>:<expiry ms>"), or a budget's
    -- definition ("def:<period>", JSON) that the scripts do not read.
    local p = PERIOD_INDEX[budgets[i]]
    local amount_text, until_ms = string.match(budgets[i + 1], '^(%d+):?(%d*)$')
    if p and amount_text and (until_ms == '' or tonumber(until_ms) > now_ms) then
    local amount = tonumber(amount_text)
    local spent_text = redis.call('GET', KEYS[2 + p]) or '0'
    local reservations = KEYS[6 + p]
    redis.call('ZREMRANGEBYSCORE', reservations, '-inf', now_ms)
    local reserved = 0
    for _, member in ipairs(redis.call('ZRANGE', reservations, 0, -1)) do
      reserved = reserved + tonumber(string.match(member, '^(%d+):'))
    end
    local used = tonumber(spent_text) + reserved
    if used >= amount or (estimate > 0 and used + estimate > amount) then blocked = true end
    states[#states + 1] = {p, amount_text, spent_text, reserved}
    held[#held + 1] = p
    end
  end
  return states, held, blocked
end
