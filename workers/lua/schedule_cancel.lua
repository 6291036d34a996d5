-- Cancel a recording schedule: record the idempotency key, mark the schedule cancelled (it expires after the
-- retention ttl), drop it from the active set and push the Celery message that unbooks its beat entry and
-- stops a running occurrence, all or nothing. A key already used answers the reply of its first request.
-- KEYS: idempotency hash, schedule hash, active schedules (set), broker queue (list)
-- ARGV: fingerprint, schedule id, idempotency ttl s, cancel message, response JSON, now (ISO), retention ttl s
-- Returns: {'new' | 'replay' | 'missing', id its key made (missing: the schedule id), fingerprint, response JSON}
local err = check_types({'hash', 'hash', 'set', 'list'})
if err then return err end
local replay = idem_replay(KEYS[1])
if replay then return replay end
if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing', ARGV[2], '', ''} end
idem_record(KEYS[1], ARGV[2], ARGV[1], ARGV[5], ARGV[3])
if redis.call('HGET', KEYS[2], 'status') ~= 'cancelled' then
  -- cancelled_next: the occurrence whose beat entry the cancel task removes
  local nxt = redis.call('HGET', KEYS[2], 'next_planned') or ''
  redis.call('HSET', KEYS[2], 'status', 'cancelled', 'cancelled_at', ARGV[6], 'updated_at', ARGV[6],
             'next_planned', '', 'cancelled_next', nxt)
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('LPUSH', KEYS[4], ARGV[4])
return {'new', ARGV[2], ARGV[1], ARGV[5]}
