-- Waiting commands whose outcome deadline has passed, for the caller to reconcile: each is re-armed ARGV[2] ms
-- ahead as it is handed out, so among many workers scanning, one takes it, and if its reconcile is lost (a
-- crash, a lost message) it comes round again. Entries of commands no longer waiting are dropped (a terminal
-- transition removes its own; this catches anything else).
-- KEYS: 1 the deadline index (WAIT_DEADLINES)
-- ARGV: 1 now ms, 2 re-arm ms, 3 at most this many
-- Returns: the command ids handed out
local due, out = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3])), {}
for _, id in ipairs(due) do
  if redis.call('HGET', COMMAND_PREFIX .. id, 'status') == 'waiting' then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
    out[#out + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
