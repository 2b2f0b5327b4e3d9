-- The 30 daily metric hashes of one identity (KEYS), as cost/input/output/requests/errors strings;
-- summed exactly in Python.
local out = {}
for i = 1, #KEYS do
  local values = redis.call('HMGET', KEYS[i], 'c', 'i', 'o', 'n', 'e')
  for j = 1, 5 do out[#out + 1] = values[j] or '0' end
end
return out
