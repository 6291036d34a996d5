-- Claim up to ARGV[3] lanes whose next message is due: each claimed lane is rescheduled to when the claim lapses
-- (so a deliverer that dies mid-delivery gives it back, and nobody else takes it meanwhile) and its head message
-- gets the claim's token, which the delivery's result must show. Lanes of a disabled or deleted endpoint, and
-- lanes found empty, leave the schedule (enabling the endpoint again puts them back).
-- KEYS: none (WEBHOOKS_DUE and the endpoints' keys, named from it)
-- ARGV: 1 now ms, 2 claim length ms, 3 most lanes, 4 token prefix (unique per call)
-- Returns: {endpoint, lane, message id, token, webhook_load's reply, ...}
local now, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i, member in ipairs(redis.call('ZRANGEBYSCORE', WEBHOOKS_DUE, '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local space = string.find(member, ' ', 1, true)
  local ep, lane = string.sub(member, 1, space - 1), string.sub(member, space + 1)
  local head = nil
  if redis.call('HGET', WEBHOOK_PREFIX .. ep, 'enabled') == '1' then
    head = webhook_head(WEBHOOK_PREFIX .. ep .. ':lane:' .. lane)
    if not head then redis.call('SREM', WEBHOOK_PREFIX .. ep .. ':lanes', lane) end
  end
  if head then
    local token = ARGV[4] .. ':' .. i
    redis.call('ZADD', WEBHOOKS_DUE, now + lease, member)
    redis.call('HSET', WEBHOOK_MSG_PREFIX .. head, 'claim', token)
    out[#out + 1] = ep
    out[#out + 1] = lane
    out[#out + 1] = head
    out[#out + 1] = token
    out[#out + 1] = webhook_load(ep, head)
  else
    redis.call('ZREM', WEBHOOKS_DUE, member)
  end
end
return out
