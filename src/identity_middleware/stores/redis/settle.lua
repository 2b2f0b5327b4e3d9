-- Finished requests of one identity in one call (a flush merges every settlement of an identity in
-- its batch): spend on all four periods, the day's metrics, their reservations released.
-- KEYS: the 11 of lib.lua, then 12 this call's marker (P:{T}:c:<charge id>, the same hash tag).
-- ARGV: 1 ULID, 2 cost (nanos), 3 input tokens, 4 output tokens, 5 requests, 6 errors,
--       7 expiry instants "<daily> <weekly> <monthly> <yearly> <metrics>" (Unix s),
--       8 reservation members separated by spaces, or '', 9 the marker's TTL (s), then
--       field/increment pairs for the day's metrics hash (per-model and unpriced counters; keys.py).
-- Returns 0 when the identity was deleted (or re-created) meanwhile: nothing is charged; 2 when
-- this charge was applied before (a retry after a timeout): nothing is charged again; else 1.
if redis.call('HGET', KEYS[1], 'u') ~= ARGV[1] then return 0 end
if not redis.call('SET', KEYS[12], '1', 'NX', 'EX', ARGV[9]) then return 2 end
if ARGV[8] ~= '' then
  local members = {}
  for member in string.gmatch(ARGV[8], '%S+') do members[#members + 1] = member end
  for i = 7, 10 do redis.call('ZREM', KEYS[i], unpack(members)) end
end
local at = {}
for instant in string.gmatch(ARGV[7], '%d+') do at[#at + 1] = instant end
local day = KEYS[11]
redis.call('HINCRBY', day, 'n', ARGV[5])
if ARGV[6] ~= '0' then redis.call('HINCRBY', day, 'e', ARGV[6]) end
if ARGV[3] ~= '0' then redis.call('HINCRBY', day, 'i', ARGV[3]) end
if ARGV[4] ~= '0' then redis.call('HINCRBY', day, 'o', ARGV[4]) end
for i = 10, #ARGV, 2 do redis.call('HINCRBY', day, ARGV[i], ARGV[i + 1]) end
if ARGV[2] ~= '0' then
  redis.call('HINCRBY', day, 'c', ARGV[2])
  for i = 3, 6 do
    redis.call('INCRBY', KEYS[i], ARGV[2])
    redis.call('EXPIREAT', KEYS[i], at[i - 2])
  end
end
redis.call('EXPIREAT', day, at[5])
return 1
