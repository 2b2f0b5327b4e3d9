-- Shared by the scripts below (prepended to each): one identity's budgets, spend and live reservations.
-- KEYS of every per-identity script: 1 record, 2 budgets, 3-6 spend of the current daily/weekly/
-- monthly/yearly period, 7-10 reservations of those budgets, 11 today's metrics, 12 reservations of
-- the one-time budget, 13-17 usage hashes of the daily..yearly and one-time budgets (t tokens, c cost
-- of the one-time budget, a:<percent><c|t> alerts fired), 18 admissions per budget and 10 s bucket,
-- 19 this UTC hour's metrics.
-- Money is integer nano-USD; comparisons use Lua doubles, exact while a period's spend + reservations
-- stay below 2^53 nano-USD (about $9,007,199). Spend itself is summed by INCRBY, exact to 2^63.
local PERIOD_INDEX = {daily = 1, weekly = 2, monthly = 3, yearly = 4, one_time = 5}
local PERIOD_NAMES = {'daily', 'weekly', 'monthly', 'yearly', 'one_time'}
local BUCKET_MS = 10000 -- requests per minute count the current 10 s bucket and the five before it

local function reservations_key(p) if p == 5 then return KEYS[12] end return KEYS[6 + p] end

-- The identity's budgets by period index, each {live, until_ms, amount, tokens, rpm, alerts} (strings,
-- '' where not set). A field "l:<period>" ("<live 0/1>:<expiry ms>:<amount>:<token limit>:<requests
-- per minute>:<alerts>", alerts "<percent><c|t><threshold>,...") says it all; without one, a bare
-- "<period>" field ("<amount>" or "<amount>:<expiry ms>", a budget set by an older version or a
-- default budget) is a live amount budget. "def:<period>" (JSON) is not read here.
local function budgets_of()
  local fields = redis.call('HGETALL', KEYS[2])
  local found, described = {}, {}
  for i = 1, #fields, 2 do
    local name, value = fields[i], fields[i + 1]
    local p = PERIOD_INDEX[name]
    if p and not described[p] then
      local amount, until_ms = string.match(value, '^(%d+):?(%d*)$')
      if amount then found[p] = {'1', until_ms, amount, '', '', ''} end
    elseif string.sub(name, 1, 2) == 'l:' then
      p = PERIOD_INDEX[string.sub(name, 3)]
      local spec = {string.match(value, '^(%d):(%d*):(%d*):(%d*):(%d*):(.*)$')}
      if p and spec[1] then
        found[p] = spec
        described[p] = true
      end
    end
  end
  return found
end

local function is_live(budget, now_ms)
  return budget[1] == '1' and (budget[2] == '' or tonumber(budget[2]) > now_ms)
end

local function bucket_fields(p, now_ms)
  local bucket, fields = math.floor(now_ms / BUCKET_MS), {}
  for back = 0, 5 do fields[#fields + 1] = p .. ':' .. (bucket - back) end
  return fields
end

-- Every budget as {period index, amount, spent (string, exact), reserved, tokens, token limit,
-- requests in the last minute, requests per minute, live (0/1)}, expired reservations pruned; with
-- ``all`` (status reads) not-live budgets too, and tokens and requests of each. Also the periods
-- holding a reservation (live, with an amount), those counting this admission (live), and whether
-- any live budget blocks ``estimate``. ``unwritten`` is {cost, tokens} the caller has buffered and
-- not yet written (admit.lua), counted as spent and tokens of every period (exact below 2^53).
local function budget_states(now_ms, estimate, all, unwritten)
  local states, held, counted, blocked = {}, {}, {}, false
  local budgets = budgets_of()
  for p = 1, 5 do
    local budget = budgets[p]
    local live = budget and is_live(budget, now_ms)
    if budget and (live or all) then
      local amount, token_limit, rpm = budget[3], budget[4], budget[5]
      local spent = '0'
      if p == 5 then spent = redis.call('HGET', KEYS[17], 'c') or '0' else spent = redis.call('GET', KEYS[2 + p]) or '0' end
      local reserved = 0
      if amount ~= '' then
        local reservations = reservations_key(p)
        redis.call('ZREMRANGEBYSCORE', reservations, '-inf', now_ms)
        for _, member in ipairs(redis.call('ZRANGE', reservations, 0, -1)) do
          reserved = reserved + tonumber(string.match(member, '^(%d+):'))
        end
      end
      local tokens = '0'
      if token_limit ~= '' or all then tokens = redis.call('HGET', KEYS[12 + p], 't') or '0' end
      if unwritten then
        spent = string.format('%.0f', tonumber(spent) + unwritten[1])
        tokens = string.format('%.0f', tonumber(tokens) + unwritten[2])
      end
      local requests = 0
      if rpm ~= '' or all then
        for _, n in ipairs(redis.call('HMGET', KEYS[18], unpack(bucket_fields(p, now_ms)))) do
          if n then requests = requests + tonumber(n) end
        end
      end
      if live then
        -- Exact below 2^53: spend + reservations in nano-USD (see above), tokens (a token limit is
        -- at most 10^15) and requests are integers that small.
        if amount ~= '' then
          local used, limit = tonumber(spent) + reserved, tonumber(amount)
          if used >= limit or (estimate > 0 and used + estimate > limit) then blocked = true end
          held[#held + 1] = p
        end
        if token_limit ~= '' and tonumber(tokens) >= tonumber(token_limit) then blocked = true end
        if rpm ~= '' and requests >= tonumber(rpm) then blocked = true end
        counted[#counted + 1] = p
      end
      states[#states + 1] = {p, amount, spent, reserved, tokens, token_limit, requests, rpm, live and 1 or 0}
    end
  end
  return states, held, blocked, counted
end

-- Count (or, with -1, take back) one admission on each budget of ``counted``; a new bucket prunes
-- the ones that left the minute and sets the hash's expiry: 70 s from the start of its newest
-- bucket at least, as long as any of its buckets counts (admissions open a new bucket every 10 s,
-- so the hash outlives them by a minute and no more). Not on every admission: a command fewer each.
local function count_admission(counted, now_ms, by)
  if #counted == 0 then return end
  local bucket = math.floor(now_ms / BUCKET_MS)
  local fresh = false
  for _, p in ipairs(counted) do
    if redis.call('HINCRBY', KEYS[18], p .. ':' .. bucket, by) == by and by > 0 then fresh = true end
  end
  if fresh then
    for _, field in ipairs(redis.call('HKEYS', KEYS[18])) do
      if tonumber(string.match(field, ':(%-?%d+)$')) < bucket - 5 then redis.call('HDEL', KEYS[18], field) end
    end
  end
  if fresh or by < 0 then redis.call('PEXPIRE', KEYS[18], 70000) end -- a take-back may have made the hash
end

-- Leases (RedisStore's ``lease=``): a process holds budget headroom as the member
-- "<amount>:~<lease id>" in the reservations of every live budget with an amount, scored by its
-- expiry (ms) like any reservation, so every check above counts it and it expires by itself.

-- The lease's live members {period index -> member}, its amount and its expiry (expired ones removed).
local function lease_members(lid, now_ms)
  local suffix, found, amount, expires = ':~' .. lid, {}, nil, nil
  for p = 1, 5 do
    local key = reservations_key(p)
    local entries = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    for i = 1, #entries, 2 do
      local member = entries[i]
      if string.sub(member, -#suffix) == suffix then
        if tonumber(entries[i + 1]) > now_ms then
          found[p] = member
          amount, expires = tonumber(string.match(member, '^(%d+):')), tonumber(entries[i + 1])
        else
          redis.call('ZREM', key, member)
        end
      end
    end
  end
  return found, amount, expires
end

-- Replace the lease's members ``found`` by ``amount`` held on each period of ``periods`` until ``expires``.
local function lease_write(lid, found, periods, amount, expires, now_ms)
  for p, member in pairs(found) do redis.call('ZREM', reservations_key(p), member) end
  local member = string.format('%.0f', amount) .. ':~' .. lid
  local key_ttl = expires - now_ms + 60000
  for _, p in ipairs(periods) do
    local key = reservations_key(p)
    redis.call('ZADD', key, expires, member)
    if redis.call('PTTL', key) < key_ttl then redis.call('PEXPIRE', key, key_ttl) end
  end
end

-- Charge ``charge`` to the lease (its amount shrinks by what it covers, never below 0): the amount
-- it covered, or -1 when the lease is gone (expired, released, or its identity deleted).
local function lease_charge(lid, charge, now_ms)
  local found, amount, expires = lease_members(lid, now_ms)
  if not amount then return -1 end
  local covered = math.min(amount, charge)
  if covered > 0 then
    local periods = {}
    for p in pairs(found) do periods[#periods + 1] = p end
    lease_write(lid, found, periods, amount - covered, expires, now_ms)
  end
  return covered
end

-- Extend the lease to now + ``ttl_ms`` and add ``fraction`` of the headroom no one holds (the least
-- over the live budgets with an amount); with ``create``, take it (a new id). A lease is held only
-- while every live budget has an amount and no token or request limit (a process admitting locally
-- could not check those) and it sits on each of them; otherwise it is dropped. Returns
-- {1 (held) or 0 (not held), amount added}.
local function lease_renew(lid, fraction, ttl_ms, now_ms, create)
  local found, amount = lease_members(lid, now_ms)
  if not amount and not create then return {0, 0} end
  local states, held = budget_states(now_ms, 0, false)
  local fits, free = #held > 0, nil
  for _, state in ipairs(states) do
    if state[9] == 1 then
      if state[2] == '' or state[6] ~= '' or state[8] ~= '' then fits = false end
      if state[2] ~= '' then
        local left = tonumber(state[2]) - tonumber(state[3]) - state[4]
        if not free or left < free then free = left end
      end
    end
  end
  for _, p in ipairs(held) do
    if amount and not found[p] then fits = false end
  end
  if not fits then
    for p, member in pairs(found) do redis.call('ZREM', reservations_key(p), member) end
    return {0, 0}
  end
  local added = 0
  if free > 0 and fraction > 0 then added = math.min(math.floor(free * fraction), free) end
  local total = (amount or 0) + added
  if not amount and total == 0 then return {0, 0} end
  lease_write(lid, found, held, total, now_ms + ttl_ms, now_ms)
  return {1, added}
end
