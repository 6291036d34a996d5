-- Record how one delivery attempt went, and move the lane on. Only the holder of the message's current claim may
-- (a deliverer whose claim lapsed is 'stale': someone else has the message now).
--   succeeded: the message is done; the lane's next message, if any, is claimed for the same deliverer at once.
--   retry:     the message stays at the head, due again at ARGV[8]; the lane waits (order is kept).
--   failed:    its retry schedule is spent: kept for replay, the endpoint is marked failing, the lane moves on.
--   gone:      the endpoint answered 410: it is disabled (nothing more is made or sent); the message stays.
-- KEYS: none (the message, the endpoint, its lane, WEBHOOKS_DUE; named from ARGV)
-- ARGV: 1 endpoint, 2 lane, 3 message id, 4 token, 5 outcome, 6 now ms, 7 now ISO, 8 next attempt ms (retry),
--       9 next attempt ISO (retry), 10 status code ('' without an answer), 11 error, 12 claim length ms,
--       13 next token, 14 the message's body ('' when it had one already: made at its first attempt, kept for
--       every later one)
-- Returns: {'stale'} | {'later'} | {'disabled'} | {'idle'} | {'next', message id, token, webhook_load's reply}
local ep, lane, id, outcome = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local mkey = WEBHOOK_MSG_PREFIX .. id
if redis.call('HGET', mkey, 'claim') ~= ARGV[4] then return {'stale'} end
if ARGV[14] ~= '' then
  redis.call('HSETNX', mkey, 'body', ARGV[14])
  redis.call('HDEL', mkey, 'snapshot')  -- the body was made from it and is what later attempts send
end
local ekey = WEBHOOK_PREFIX .. ep
local member = ep .. ' ' .. lane
local lane_key = ekey .. ':lane:' .. lane
local now = tonumber(ARGV[6])
redis.call('HINCRBY', mkey, 'attempts', 1)
redis.call('HSET', mkey, 'claim', '', 'last_code', ARGV[10], 'last_error', ARGV[11], 'last_attempt_at', ARGV[7])
if outcome == 'succeeded' then
  redis.call('HSET', mkey, 'status', 'succeeded', 'delivered_at', ARGV[7], 'next_attempt_at', '')
  redis.call('HSET', ekey, 'last_success_at', ARGV[7], 'consecutive_failures', 0)
  if redis.call('HGET', ekey, 'state') == 'failing' then
    redis.call('HSET', ekey, 'state', 'healthy', 'failing_since', '')
  end
else
  redis.call('HINCRBY', ekey, 'consecutive_failures', 1)
  redis.call('HSET', ekey, 'last_failure_at', ARGV[7], 'last_failure_code', ARGV[10], 'last_failure_error', ARGV[11])
end
if outcome == 'retry' then
  redis.call('HINCRBY', mkey, 'round', 1)
  redis.call('HSET', mkey, 'next_attempt_at', ARGV[9])
  redis.call('ZADD', WEBHOOKS_DUE, tonumber(ARGV[8]), member)
  return {'later'}
elseif outcome == 'gone' then
  redis.call('HSET', mkey, 'next_attempt_at', '')
  local client = redis.call('HGET', ekey, 'client')
  redis.call('HSET', ekey, 'enabled', '0', 'state', 'disabled', 'disabled_reason', 'gone', 'disabled_at', ARGV[7])
  if client then redis.call('HDEL', CLIENT_PREFIX .. client .. CLIENT_WEBHOOKS_SUFFIX, ep) end
  redis.call('ZREM', WEBHOOKS_DUE, member)
  return {'disabled'}
elseif outcome == 'failed' then
  redis.call('HSET', mkey, 'status', 'failed', 'next_attempt_at', '')
  if redis.call('HGET', ekey, 'state') ~= 'disabled' then
    redis.call('HSET', ekey, 'state', 'failing')
    if (redis.call('HGET', ekey, 'failing_since') or '') == '' then redis.call('HSET', ekey, 'failing_since', ARGV[7]) end
  end
end
if redis.call('LINDEX', lane_key, 0) == id then redis.call('LPOP', lane_key) end
local nxt = webhook_head(lane_key)
if not nxt or redis.call('HGET', ekey, 'enabled') ~= '1' then
  if not nxt then
    redis.call('SREM', ekey .. ':lanes', lane)
    redis.call('ZREM', WEBHOOKS_DUE, member)
  else
    redis.call('ZREM', WEBHOOKS_DUE, member)
  end
  return {'idle'}
end
redis.call('HSET', WEBHOOK_MSG_PREFIX .. nxt, 'claim', ARGV[13])
redis.call('ZADD', WEBHOOKS_DUE, now + tonumber(ARGV[12]), member)
return {'next', nxt, ARGV[13], webhook_load(ep, nxt)}
