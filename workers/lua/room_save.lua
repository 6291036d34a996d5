-- Take on a room for a client (created or adopted through callq), or refresh what callq knows of one: write the
-- room's hash and index it, and record the idempotency key of the request that made it, all or nothing.
-- A room another client already manages is refused ('taken'); a key already used answers its first reply.
-- KEYS: idempotency hash ('' for a request without one), room hash, client's rooms (zset)
-- ARGV: client, room id, fingerprint, response JSON, idempotency ttl s, field, value, ...
-- Returns: {'new' | 'replay' | 'taken', id, fingerprint, response JSON}
local err = check_types({'hash', 'hash', 'zset'})
if err then return err end
if KEYS[1] ~= '' then
  local replay = idem_replay(KEYS[1])
  if replay then return replay end
end
local owner = redis.call('HGET', KEYS[2], 'client')
if owner and owner ~= ARGV[1] then return {'taken', ARGV[2], '', ''} end
redis.call('HSET', KEYS[2], 'client', ARGV[1], 'id', ARGV[2], unpack(ARGV, 6))
redis.call('ZADD', KEYS[3], 0, ARGV[2])  -- all scores 0: the list pages by id
if KEYS[1] ~= '' then idem_record(KEYS[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]) end
return {'new', ARGV[2], ARGV[3], ARGV[4]}
