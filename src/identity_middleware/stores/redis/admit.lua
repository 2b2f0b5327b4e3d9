-- One admission in one call: upsert or create the record, check every budget, take the reservation,
-- count a blocked or refused request. Also serves create (mode 'create') and update (mode 'update').
-- ARGV: 1 mode, 2 external id, 3 ULID for a new record ('' when the caller believes it exists: then
--       {3} asks for one), 4 now (ISO), 5 now (ms), 6 may create (0/1), 7 refused (0/1; 2: this
--       script admitted it and a model, provider or workspace budget then refused it, so its
--       admission is taken back from the budgets' request counts), 8 estimate (nanos),
--       9 reservation id, 10 reservation TTL (ms), 11 metrics expiry "<day's> <hour's>" (Unix s),
--       12 the caller's cached "<ULID> <updated>" or '', 13 n, then n field/value pairs,
--       then m, then m default-budget period/amount pairs, then the request's identity source
--       ('body', 'header', 'auth' or '' when not given; admit mode keeps it in the record as 'ls'),
--       then a lease to take or renew once admitted, "<create 0/1> <lease id> <fraction> <ttl ms>
--       <amount given back first>", or '' (lib.lua's lease_renew). The amount given back (what the
--       caller's lease held beyond its requests in flight) leaves the lease before the budgets are
--       checked, so this process's own lease never blocks its request.
--       Then the caller's usage of the identity not yet known to be written, one "<cost nanos>
--       <tokens>" pair per charge, space-separated: each counted as spent unless its charge's marker
--       (KEYS[20], KEYS[21], ... in the same order) says Redis has applied it meanwhile; or
--       "~<cost nanos> <tokens>", their total with no markers (see below: {4} asks for them); or '' / absent.
--       Then (steering, degrade=) smaller estimates "<nanos> <nanos> ...", in tier order, or '' /
--       absent: when the estimate does not fit, the first of them that the budgets admit is held.
-- Returns {found (0/1, 2 = exists on create, 3 = a ULID is needed, 4 = send the buffered charges with
-- their markers: their total blocks the request and the recorded spend alone does not), created, record, states (lib.lua),
-- blocked, reserved[, lease_renew's reply when a lease was asked for, or 0][, the fallback estimate
-- admitted (1..n; 0: the estimate), when fallbacks were given]}; record is 0 when it equals
-- the caller's cached one (ARGV 12).
local record_key, mode = KEYS[1], ARGV[1]
local nfields = tonumber(ARGV[13])
local created, changed = 0, false
local head = redis.call('HMGET', record_key, 'x', 'u', 't', 'ls')
local external_id = head[1]
if external_id and external_id ~= ARGV[2] then
  return redis.error_reply('IDM external id hash collision')
end
if not external_id then
  if mode == 'update' or (mode == 'admit' and ARGV[6] ~= '1') then return {0} end
  if ARGV[3] == '' then return {3} end
  redis.call('HSET', record_key, 'u', ARGV[3], 'x', ARGV[2], 'c', ARGV[4], 't', ARGV[4],
    'display_name', 'null', 'email', 'null', 'avatar_url', 'null', 'tags', '[]', 'metadata', '{}')
  for i = 0, nfields - 1 do redis.call('HSET', record_key, ARGV[14 + 2 * i], ARGV[15 + 2 * i]) end
  local first = 14 + 2 * nfields
  for i = 0, tonumber(ARGV[first]) - 1 do
    redis.call('HSET', KEYS[2], ARGV[first + 1 + 2 * i], ARGV[first + 2 + 2 * i])
  end
  created = 1
elseif mode == 'create' then
  return {2}
else
  for i = 0, nfields - 1 do
    local name, value = ARGV[14 + 2 * i], ARGV[15 + 2 * i]
    if redis.call('HGET', record_key, name) ~= value then
      redis.call('HSET', record_key, name, value)
      changed = true
    end
  end
  if changed then redis.call('HSET', record_key, 't', ARGV[4]) end
end
-- The last source is written only when it changes, and is not a profile change: 't' stays.
local source_at = 15 + 2 * nfields + 2 * tonumber(ARGV[14 + 2 * nfields])
local source = ARGV[source_at]
if mode == 'admit' and source and source ~= '' and source ~= head[4] then
  redis.call('HSET', record_key, 'ls', source)
end
local record = 0
if created == 1 or changed or ARGV[12] == '' or head[2] .. ' ' .. head[3] ~= ARGV[12] then
  record = redis.call('HGETALL', record_key)
end
if mode ~= 'admit' then return {1, created, record} end

local function count_refused() -- a request and an error in the day's metrics and the hour's
  local day_at, hour_at = string.match(ARGV[11], '^(%d+) (%d+)$')
  for _, metrics in ipairs({{KEYS[11], day_at}, {KEYS[19], hour_at}}) do
    redis.call('HINCRBY', metrics[1], 'n', 1)
    redis.call('HINCRBY', metrics[1], 'e', 1)
    redis.call('EXPIREAT', metrics[1], metrics[2])
  end
end
local now_ms = tonumber(ARGV[5])
if ARGV[7] ~= '0' then
  count_refused()
  if ARGV[7] == '2' then -- refused by a global budget after this script admitted it: not an admission
    local _, _, _, counted = budget_states(now_ms, 0, false)
    count_admission(counted, now_ms, -1)
  end
  return {1, created, record, {}, 0, 0}
end
local lease = ARGV[source_at + 1]
local create, lid, fraction, ttl_ms, give
if lease and lease ~= '' then
  create, lid, fraction, ttl_ms, give = string.match(lease, '^(%d) (%w+) (%S+) (%d+) (%d+)$')
  if give ~= '0' then lease_charge(lid, tonumber(give), now_ms) end
end
local estimate = tonumber(ARGV[8])
local unwritten = nil
local buffered = ARGV[source_at + 2]
local unconfirmed = false
if buffered and string.sub(buffered, 1, 1) == '~' then
  -- The charges' total, their markers not sent: counted whole. Some may have landed meanwhile (then
  -- counted twice), which can only block a request, never admit one: so a request this total
  -- blocks and its recorded spend alone would not is answered {4}, and asked again with markers.
  local cost, tokens = string.match(buffered, '^~(%d+) (%d+)$')
  unwritten, unconfirmed = {tonumber(cost), tonumber(tokens)}, true
elseif buffered and buffered ~= '' then
  local marker, cost, tokens = 20, 0, 0
  for charge_cost, charge_tokens in string.gmatch(buffered, '(%d+) (%d+)') do
    if redis.call('EXISTS', KEYS[marker]) == 0 then
      cost, tokens = cost + tonumber(charge_cost), tokens + tonumber(charge_tokens)
    end
    marker = marker + 1
  end
  unwritten = {cost, tokens}
end
local states, held, blocked, counted = budget_states(now_ms, estimate, false, unwritten)
if blocked and unconfirmed then
  local alone = {budget_states(now_ms, estimate, false, nil)}  -- the recorded spend alone
  if not alone[3] and created == 0 then return {4} end
  -- blocked anyway (or a record made just now, with no usage of its own to count): decided alone
  states, held, blocked, counted = alone[1], alone[2], alone[3], alone[4]
end
local fallback = 0
local fallbacks = ARGV[source_at + 3]
if blocked and fallbacks and fallbacks ~= '' then
  -- Only money can be helped by a smaller estimate: a token or request limit that blocks, blocks all.
  local function blocks(smaller)
    for _, row in ipairs(states) do
      if row[9] == 1 then
        if row[2] ~= '' then
          local used, limit = tonumber(row[3]) + row[4], tonumber(row[2])
          if used >= limit or (smaller > 0 and used + smaller > limit) then return true end
        end
        if row[6] ~= '' and tonumber(row[5]) >= tonumber(row[6]) then return true end
        if row[8] ~= '' and row[7] >= tonumber(row[8]) then return true end
      end
    end
    return false
  end
  local index = 0
  for smaller in string.gmatch(fallbacks, '%d+') do
    index = index + 1
    if not blocks(tonumber(smaller)) then
      fallback, estimate, blocked = index, tonumber(smaller), false
      break
    end
  end
end
if blocked then
  count_refused()
  return {1, created, record, states, 1, 0}
end
count_admission(counted, now_ms, 1)
local reserved = 0
if estimate > 0 and #held > 0 then
  local member = string.format('%.0f', estimate) .. ':' .. ARGV[9]
  local expires = now_ms + tonumber(ARGV[10])
  local key_ttl = tonumber(ARGV[10]) + 60000
  for _, p in ipairs(held) do
    local reservations = reservations_key(p)
    redis.call('ZADD', reservations, expires, member)
    -- Every member expires before the key does; a longer-lived key never shortens.
    if redis.call('PTTL', reservations) < key_ttl then redis.call('PEXPIRE', reservations, key_ttl) end
  end
  reserved = 1
end
local renewed = 0
if lid then renewed = lease_renew(lid, tonumber(fraction), tonumber(ttl_ms), now_ms, create == '1') end
if fallbacks and fallbacks ~= '' then return {1, created, record, states, 0, reserved, renewed, fallback} end
if lid then return {1, created, record, states, 0, reserved, renewed} end
return {1, created, record, states, 0, reserved}
