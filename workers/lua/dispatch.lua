-- Refill the broker's command queue from the clients' ready lists, in turn (lib.lua's dispatch). Claims refill
-- it as they take messages; workers also call this a few times a second, so a queue emptied without a claim (a
-- message that was not a command's) never leaves ready work waiting.
-- KEYS: 1 the broker's command queue
-- ARGV: 1 dispatch window
-- Returns: how many messages moved
return dispatch(KEYS[1], tonumber(ARGV[1]))
