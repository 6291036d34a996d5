-- A `webhook.test` message to one endpoint (POST /v1/webhooks/{id}/test), whatever it subscribes to, on its own
-- lane; with the request's Idempotency-Key recorded, so a retried request makes no second message.
-- KEYS: 1 idempotency hash, 2 endpoint hash
-- ARGV: 1 client, 2 endpoint id, 3 fingerprint, 4 response JSON with '{id}' where the message id goes,
--       5 idempotency ttl s, 6 now ISO
-- Returns: {'new' | 'replay' | 'missing', message id, fingerprint, response JSON}
local err = check_types({'hash', 'hash'})
if err then return err end
local replay = idem_replay(KEYS[1])
if replay then return replay end
if redis.call('HGET', KEYS[2], 'client') ~= ARGV[1] then return {'missing', '', '', ''} end
local id = webhook_add(ARGV[2], 'webhook.test', 'test', ARGV[6], {})
local response = string.gsub(ARGV[4], '{id}', id)
idem_record(KEYS[1], id, ARGV[3], response, ARGV[5])
return {'new', id, ARGV[3], response}
