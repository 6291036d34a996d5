-- Accept a command: record the idempotency key, create the command and push its Celery message onto the broker
-- list, all three or none. A concurrent duplicate sees the key and gets the same command back.
-- KEYS: 1 idempotency hash, 2 command hash, 3 broker queue list, 4 the call's command list, 5 the recording's
--       command list (4 and 5 '' when the command has no call / recording yet)
-- ARGV: 1 fingerprint, 2 command id, 3 idempotency ttl s, 4 command ttl s, 5 broker message, 6 response json
--       ('' when the caller keeps none), 7 sweep grace ms, 8... the command's field/value pairs
-- Returns: {'new' | 'replay', command id, fingerprint, response json} (a replay's are the stored ones)
local bad = check_types({'hash', 'hash', 'list', 'list', 'list'})
if bad then return bad end
local existing = redis.call('HMGET', KEYS[1], 'command_id', 'fingerprint', 'response')
if existing[1] then
  return {'replay', existing[1], existing[2] or '', existing[3] or ''}
end
redis.call('HSET', KEYS[1], 'command_id', ARGV[2], 'fingerprint', ARGV[1], 'response', ARGV[6])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
for i = 4, 5 do
  if KEYS[i] ~= '' then
    redis.call('RPUSH', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4]))
  end
end
redis.call('LPUSH', KEYS[3], ARGV[5])
-- Watched by the sweeper until it ends (first look after the grace period): the record is the truth.
redis.call('ZADD', ACTIVE_ZSET, now_ms() + tonumber(ARGV[7]), ARGV[2])
return {'new', ARGV[2], ARGV[1], ARGV[6]}
