-- A RecordingFileStatusUpdated, kept on callq's record of the recording it announces: each chunk once, by its index
-- (Event Grid delivers at least once and in no order: a duplicate, or a later event naming a chunk again, changes
-- nothing, and a chunk deleted since stays deleted), and what the event says of the recording as a whole.
-- KEYS: 1 the recording hash, 2 its files hash (index -> chunk JSON)
-- ARGV: 1 ttl s, 2 n: the number of recording field/value pairs that follow, 3..2+2n those pairs,
--       then index / chunk JSON pairs
-- Returns: {'unknown'} (callq did not start this recording: nothing is stored) or {'attached', chunks new}
local err = check_types({'hash', 'hash'})
if err then return err end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'unknown'} end
local ttl, n = tonumber(ARGV[1]), tonumber(ARGV[2])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 3, 2 + 2 * n)) end
local added = 0
for i = 3 + 2 * n, #ARGV, 2 do
  added = added + redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return {'attached', added}
