-- What ACS answered a command's request, in one round trip: its fields; for a connect, the call ACS made (the
-- command heads the call's list: an early CallConnected can let later commands be accepted before this
-- response); for a recording start, the recording (after the fields, so whoever sees the command resolved
-- sees its recording id); then running -> ARGV[2] (waiting, or succeeded when the answer is the outcome).
-- A command that now waits for its event is indexed under its outcome deadline in the same step (due.lua
-- reads that index), so no crash can leave a wait without its deadline. The fields are recorded even if an
-- early event already resolved the command: the response is still true (its result joins the event's: merged_result).
-- KEYS: 1 command hash; 2 hash and 3 command list of the call ACS made, 4 its room's call key; 5 hash and
--       6 command list of the recording ACS started, 7 the hash of the call it records, 8 the recording's early
--       events ('' for what ACS did not make)
-- ARGV: 1 command id, 2 to, 3 now iso, 4 ttl s, 5 wait deadline ms, 6 client, 7 room id, 8 call made,
--       9 recording id, 10 the command's call, 11... field/value pairs
-- Returns: lib.transition's reply
local bad = check_types({'hash', 'hash', 'list', 'string', 'hash', 'list', 'hash', 'list'})
if bad then return bad end
local id, ttl = ARGV[1], tonumber(ARGV[4])
if KEYS[2] ~= '' then
  call_made(ARGV[8], ARGV[6], ARGV[7], id, ttl)
  -- An early CallConnected may have listed it already (ingest.lua).
  if not redis.call('LPOS', KEYS[3], id) then redis.call('LPUSH', KEYS[3], id) end
  if KEYS[4] ~= '' then redis.call('SET', KEYS[4], ARGV[8], 'EX', ttl) end
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('HSET', KEYS[1], unpack(merged_result(id, {unpack(ARGV, 11)})))
if KEYS[5] ~= '' then
  redis.call('HSET', KEYS[5], 'client', ARGV[6], 'call_connection_id', ARGV[10], 'start_command', id)
  redis.call('RPUSH', KEYS[6], id)
  if KEYS[7] ~= '' then call_recording(ARGV[10], ARGV[9]) end
  redis.call('EXPIRE', KEYS[5], ttl)
  redis.call('EXPIRE', KEYS[6], ttl)
  -- Its events that came before this answer (ingest.lua kept them): the ones naming another connection (the
  -- recorder's, as real ACS's do) join the timeline of the call that started it now, told as ingest tells them.
  local early = KEYS[8] ~= '' and ARGV[10] ~= '' and redis.call('LRANGE', KEYS[8], 0, -1) or {}
  local room = #early > 0 and redis.call('HGET', CALL_PREFIX .. ARGV[10], 'room_id') or ''
  for _, raw in ipairs(early) do
    local ok, event = pcall(cjson.decode, raw)
    local named = ok and type(event) == 'table' and type(event.data) == 'table' and event.data.callConnectionId
    if named ~= ARGV[10] then
      local timeline = CALL_PREFIX .. ARGV[10] .. CALL_EVENTS_SUFFIX
      redis.call('XADD', timeline, '*', 'event', raw)
      redis.call('EXPIRE', timeline, ttl)
      webhook_fanout(ARGV[6], 'call.event', ARGV[10], ARGV[3],
        {'event', raw, 'call_connection_id', ARGV[10], 'room_id', room or ''})
    end
  end
  if KEYS[8] ~= '' then redis.call('DEL', KEYS[8]) end
end
local moved = transition(id, ARGV[2], 'running', ARGV[3], {'lease_until', '0'})
if moved[1] == 'applied' and ARGV[2] == 'waiting' then
  redis.call('ZADD', WAIT_DEADLINES, ARGV[5], id)
  if KEYS[2] ~= '' then
    -- A connect heads its call's lane: pending on the call, so the accept and claim of a command behind it see it.
    local pending, lane = CALL_PREFIX .. ARGV[8] .. PENDING_SUFFIX, CALL_PREFIX .. ARGV[8] .. CALL_LANE_SUFFIX
    redis.call('SADD', pending, id)
    redis.call('EXPIRE', pending, ttl)
    if not redis.call('LPOS', lane, id) then redis.call('LPUSH', lane, id) end
    redis.call('EXPIRE', lane, ttl)
  end
end
return moved
