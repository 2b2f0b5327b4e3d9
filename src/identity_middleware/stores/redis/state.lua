-- Every budget's live state (spend, live reservations) for a status read. ARGV: 1 now (ms).
local states = budget_states(tonumber(ARGV[1]), 0)
return states
