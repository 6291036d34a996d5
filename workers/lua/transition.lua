-- Move one command to a new status (see lib.lua's transition).
-- KEYS: 1 the command hash (named so Cluster-aware tooling sees it; the id in ARGV addresses it)
-- ARGV: 1 command id, 2 to status, 3 allowed-from csv ('' = any non-terminal), 4 now iso, 5 attempts change,
--       6... field/value pairs to set
-- Returns: lib.transition's reply
return transition(ARGV[1], ARGV[2], ARGV[3], ARGV[4], {unpack(ARGV, 6)}, tonumber(ARGV[5]))
