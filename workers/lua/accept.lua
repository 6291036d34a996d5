-- Accept a command: record the idempotency key, create the command and push its Celery message onto the broker
-- list, all three or none. A concurrent duplicate sees the key and gets the same command back. A new command is
-- first checked against the door's limits (the call's and the client's pending commands, the client's accept
-- budget): past one, nothing is written and the key stays free.
-- KEYS: 1 idempotency hash, 2 command hash, 3 broker queue list, 4 the call's command list, 5 the recording's
--       command list (4 and 5 '' when the command has no call / recording yet), 6 the call's pending set ('' when
--       no call), 7 the client's pending set, 8 the client's accept budget ('' when it has none)
-- ARGV: 1 fingerprint, 2 command id, 3 idempotency ttl s, 4 command ttl s, 5 broker message, 6 response json
--       ('' when the caller keeps none), 7 sweep grace ms, 8 most pending per call (0: no limit), 9 most pending
--       per client (0: no limit), 10 the accept budget's emission interval ms, 11 its burst, 12... the command's
--       field/value pairs
-- Returns: {'new' | 'replay', command id, fingerprint, response json} (a replay's are the stored ones), or
--          {'refused', code, retry after ms, limit}
local bad = check_types({'hash', 'hash', 'list', 'list', 'list'})
if bad then return bad end
local existing = redis.call('HMGET', KEYS[1], 'command_id', 'fingerprint', 'response')
if existing[1] then
  return {'replay', existing[1], existing[2] or '', existing[3] or ''}
end
-- A set at its limit first drops members that ended without leaving it (finished by a worker of a release
-- before the door, or a record gone): all of a call's, a sample of a client's (their many would cost too much
-- on every refusal; each refusal drops a few more).
local function pending_after_pruning(key, members)
  for _, id in ipairs(members) do
    local status = redis.call('HGET', COMMAND_PREFIX .. id, 'status')
    if not status or is_terminal(status) then redis.call('SREM', key, id) end
  end
  return redis.call('SCARD', key)
end
-- SCARD also checks the sets' types before the first write (a wrong type fails here, leaving nothing).
local per_call, per_client = tonumber(ARGV[8]), tonumber(ARGV[9])
if KEYS[6] ~= '' then
  local pending = redis.call('SCARD', KEYS[6])
  if per_call > 0 and pending >= per_call
      and pending_after_pruning(KEYS[6], redis.call('SMEMBERS', KEYS[6])) >= per_call then
    return {'refused', 'too_many_pending', 1000, 'call'}
  end
end
local pending = redis.call('SCARD', KEYS[7])
if per_client > 0 and pending >= per_client
    and pending_after_pruning(KEYS[7], redis.call('SRANDMEMBER', KEYS[7], 16)) >= per_client then
  return {'refused', 'too_many_pending', 1000, 'client'}
end
if KEYS[8] ~= '' then
  local wait = gcra_take(KEYS[8], tonumber(ARGV[10]), tonumber(ARGV[11]), now_ms())
  if wait > 0 then return {'refused', 'client_rate_limited', wait, 'client'} end
end
redis.call('HSET', KEYS[1], 'command_id', ARGV[2], 'fingerprint', ARGV[1], 'response', ARGV[6])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], unpack(ARGV, 12))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
for i = 4, 7 do
  if KEYS[i] ~= '' then
    redis.call(i < 6 and 'RPUSH' or 'SADD', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4]))
  end
end
redis.call('LPUSH', KEYS[3], ARGV[5])
-- Watched by the sweeper until it ends (first look after the grace period): the record is the truth.
redis.call('ZADD', ACTIVE_ZSET, now_ms() + tonumber(ARGV[7]), ARGV[2])
return {'new', ARGV[2], ARGV[1], ARGV[6]}
