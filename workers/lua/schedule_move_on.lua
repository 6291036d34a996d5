-- Move a schedule's next occurrence on, by compare-and-set: only if it is still active and still at `from`,
-- so a redelivered or duplicated fire cannot move it twice or backwards. With no occurrence left (`to` is
-- '') the schedule is finished: it leaves the active set and expires after the retention ttl.
-- KEYS: schedule hash, active schedules (set)
-- ARGV: from (planned epoch s), to (planned epoch s, or ''), now (ISO), retention ttl s, schedule id
-- Returns: 1 moved, 0 not (not active, or already moved)
local cur = redis.call('HMGET', KEYS[1], 'status', 'next_planned')
if cur[1] ~= 'active' or cur[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next_planned', ARGV[2], 'updated_at', ARGV[3])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'status', 'finished')
  redis.call('SREM', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return 1
