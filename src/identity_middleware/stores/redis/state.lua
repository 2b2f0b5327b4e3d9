-- Every budget's state for a status or usage read (lib.lua's rows, not-live budgets included). ARGV: 1 now (ms).
local states = budget_states(tonumber(ARGV[1]), 0, true)
return states
