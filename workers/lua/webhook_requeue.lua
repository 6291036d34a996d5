-- Send messages again (a delivery's retry, a replay): each kept message of the endpoint that is not waiting in
-- its lane already goes to the end of its lane with a fresh retry schedule and the same id (webhook-id), in the
-- order given, so per lane the order they were made in is kept. A message still waiting in its lane is only
-- made due now, if it is its lane's head and waits for a retry (a retry should not wait for the backoff).
-- KEYS: none (the endpoint's keys and the messages, named from ARGV)
-- ARGV: 1 endpoint id, 2 client, 3 now ms, 4 ttl s, 5... message ids
-- Returns: {queued, already waiting} or {-1} when the endpoint is not the client's
local ep = ARGV[1]
local ekey = WEBHOOK_PREFIX .. ep
if redis.call('HGET', ekey, 'client') ~= ARGV[2] then return {-1} end
local now, queued, waiting = tonumber(ARGV[3]), 0, 0
for i = 5, #ARGV do
  local id = ARGV[i]
  local m = redis.call('HMGET', WEBHOOK_MSG_PREFIX .. id, 'endpoint', 'status', 'lane')
  if m[1] == ep then
    local lane_key = ekey .. ':lane:' .. m[3]
    if m[2] == 'pending' and redis.call('LPOS', lane_key, id) then
      waiting = waiting + 1
      if redis.call('LINDEX', lane_key, 0) == id and
          (redis.call('HGET', WEBHOOK_MSG_PREFIX .. id, 'claim') or '') == '' then
        redis.call('ZADD', WEBHOOKS_DUE, now, ep .. ' ' .. m[3])
      end
    else
      redis.call('HSET', WEBHOOK_MSG_PREFIX .. id, 'status', 'pending', 'round', 0, 'next_attempt_at', '',
        'claim', '')
      redis.call('EXPIRE', WEBHOOK_MSG_PREFIX .. id, tonumber(ARGV[4]))
      webhook_enqueue(ep, m[3], id, now, tonumber(ARGV[4]))
      queued = queued + 1
    end
  end
end
if queued + waiting > 0 then redis.call('PUBLISH', WEBHOOKS_CHANNEL, ep) end
return {queued, waiting}
