-- Release a lease (RedisStore's close): its headroom goes back to everyone at once.
-- ARGV: 1 lease id, 2 now (ms). Returns how many members it had.
local found = lease_members(ARGV[1], tonumber(ARGV[2]))
local n = 0
for p, member in pairs(found) do
  redis.call('ZREM', reservations_key(p), member)
  n = n + 1
end
return n
