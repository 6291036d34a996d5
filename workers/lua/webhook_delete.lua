-- Delete a client's webhook endpoint: nothing more is made for it or sent to it. Its messages are left to expire
-- (their history dies with the endpoint: reads go through it).
-- KEYS: 1 endpoint hash, 2 client's subscriptions (hash), 3 client's endpoints (zset)
-- ARGV: 1 client, 2 endpoint id
-- Returns: 1 deleted, 0 no such endpoint of this client
local err = check_types({'hash', 'hash', 'zset'})
if err then return err end
local ep = ARGV[2]
if redis.call('HGET', KEYS[1], 'client') ~= ARGV[1] then return 0 end
local prefix = WEBHOOK_PREFIX .. ep
for _, lane in ipairs(redis.call('SMEMBERS', prefix .. ':lanes')) do
  redis.call('ZREM', WEBHOOKS_DUE, ep .. ' ' .. lane)
  redis.call('DEL', prefix .. ':lane:' .. lane)
end
redis.call('DEL', KEYS[1], prefix .. ':lanes', prefix .. ':seq', prefix .. ':msgs')
redis.call('HDEL', KEYS[2], ep)
redis.call('ZREM', KEYS[3], ep)
return 1
