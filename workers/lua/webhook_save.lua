-- Create or change a client's webhook endpoint, all or nothing, recording the idempotency key of a create.
-- The client's subscriptions hash (what fan-outs read) holds exactly its enabled endpoints; an endpoint enabled
-- again has each lane that still holds messages made due, so what waited while it was off goes out, in order.
-- KEYS: 1 idempotency hash ('' without one), 2 endpoint hash, 3 client's subscriptions (hash),
--       4 client's endpoints (zset)
-- ARGV: 1 client, 2 endpoint id, 3 fingerprint, 4 response JSON, 5 idempotency ttl s, 6 'create' | 'update',
--       7 most endpoints a client may have, then field/value pairs. 'rotate' is an update that first keeps the
--       current secret as `old_secret` (here, so two rotations at once cannot lose a secret either one answered)
-- Returns: {'new' | 'replay' | 'updated' | 'missing' | 'too_many', id, fingerprint, response JSON}
local err = check_types({'hash', 'hash', 'hash', 'zset'})
if err then return err end
if KEYS[1] ~= '' then
  local replay = idem_replay(KEYS[1])
  if replay then return replay end
end
local ep, mode = ARGV[2], ARGV[6]
local owner = redis.call('HGET', KEYS[2], 'client')
if mode == 'create' then
  if owner then return {'missing', ep, '', ''} end  -- ids are random: never reached unless one is reused
  if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[7]) then return {'too_many', ep, '', ''} end
elseif owner ~= ARGV[1] then
  return {'missing', ep, '', ''}
end
local was_enabled = redis.call('HGET', KEYS[2], 'enabled') == '1'
if mode == 'rotate' then redis.call('HSET', KEYS[2], 'old_secret', redis.call('HGET', KEYS[2], 'secret')) end
redis.call('HSET', KEYS[2], 'client', ARGV[1], 'id', ep, unpack(ARGV, 8))
local e = redis.call('HMGET', KEYS[2], 'enabled', 'events', 'created_ms')
if e[1] == '1' then
  redis.call('HSET', KEYS[3], ep, e[2])
  if not was_enabled then
    local now = now_ms()
    for _, lane in ipairs(redis.call('SMEMBERS', WEBHOOK_PREFIX .. ep .. ':lanes')) do
      redis.call('ZADD', WEBHOOKS_DUE, 'NX', now, ep .. ' ' .. lane)
    end
    redis.call('PUBLISH', WEBHOOKS_CHANNEL, ep)
  end
else
  redis.call('HDEL', KEYS[3], ep)
end
redis.call('ZADD', KEYS[4], tonumber(e[3] or '0'), ep)
if KEYS[1] ~= '' then idem_record(KEYS[1], ep, ARGV[3], ARGV[4], ARGV[5]) end
return {mode == 'create' and 'new' or 'updated', ep, ARGV[3], ARGV[4]}
