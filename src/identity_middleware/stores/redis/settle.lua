-- One finished request in one call: spend on all four periods, the day's metrics, reservation released.
-- ARGV: 1 ULID, 2 cost (nanos), 3 input tokens, 4 output tokens, 5 error (0/1), 6-9 spend TTLs (s),
--       10 metrics TTL (s), 11 reservation member or '', then model/count pairs.
-- Returns 0 when the identity was deleted (or re-created) meanwhile: nothing is charged.
if redis.call('HGET', KEYS[1], 'u') ~= ARGV[1] then return 0 end
if ARGV[11] ~= '' then
  for i = 7, 10 do redis.call('ZREM', KEYS[i], ARGV[11]) end
end
local day = KEYS[11]
redis.call('HINCRBY', day, 'n', 1)
if ARGV[5] == '1' then redis.call('HINCRBY', day, 'e', 1) end
if ARGV[3] ~= '0' then redis.call('HINCRBY', day, 'i', ARGV[3]) end
if ARGV[4] ~= '0' then redis.call('HINCRBY', day, 'o', ARGV[4]) end
for i = 12, #ARGV, 2 do redis.call('HINCRBY', day, 'm:' .. ARGV[i], ARGV[i + 1]) end
if ARGV[2] ~= '0' then
  redis.call('HINCRBY', day, 'c', ARGV[2])
  for i = 3, 6 do
    redis.call('INCRBY', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i], ARGV[3 + i])
  end
end
redis.call('EXPIRE', day, ARGV[10])
return 1
