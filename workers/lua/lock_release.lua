-- Release a lock taken with SET NX PX, only if it is still the caller's: a lock that expired and was taken
-- by someone else is theirs to release.
-- KEYS: lock
-- ARGV: token (the value the caller set)
-- Returns: 1 released, 0 not (expired, or another holder's)
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
