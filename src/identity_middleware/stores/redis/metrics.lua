-- The 30 daily metric hashes of one identity (KEYS), each as its flat field/value list (totals,
-- per-model and unpriced counters); summed exactly in Python.
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end
return out
