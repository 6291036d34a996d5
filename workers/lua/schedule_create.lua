-- Create a recording schedule: record the idempotency key, write the schedule, index it, and push the
-- Celery message that books its first beat entry, all or nothing. A key already used answers the reply of
-- its first request instead (a command's key too: the caller sees another fingerprint and answers 422).
-- KEYS: idempotency hash, schedule hash, client's schedules (zset), active schedules (set), broker queue (list)
-- ARGV: fingerprint, schedule id, idempotency ttl s, book message, response JSON, field, value, ...
-- Returns: {'new' | 'replay', id its key made, fingerprint stored with the key, response JSON}
local err = check_types({'hash', 'hash', 'zset', 'set', 'list'})
if err then return err end
local replay = idem_replay(KEYS[1])
if replay then return replay end
idem_record(KEYS[1], ARGV[2], ARGV[1], ARGV[5], ARGV[3])
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('LPUSH', KEYS[5], ARGV[4])
return {'new', ARGV[2], ARGV[1], ARGV[5]}
