-- Queue work published from outside a script (a parked command whose message ran before it parked, a command the
-- sweeper revives) through the fair dispatch (lib.lua's fair_push and dispatch).
-- KEYS: 1 the broker's command queue
-- ARGV: 1 client, 2 command id ('' for work that is not a command's send), 3 broker message, 4 dispatch window
-- Returns: how many messages the dispatch moved onto the queue
fair_push(ARGV[1], ARGV[2], ARGV[3])
return dispatch(KEYS[1], tonumber(ARGV[4]))
