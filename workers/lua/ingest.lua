-- One ACS event, atomically: dedupe, store, find the commands it may resolve, resolve them, update the call.
-- Python decides beforehand what the event means for each command type (ARGV[9], correlation._steps); the
-- script decides which commands it reaches, reading them as they are at that instant.
--
-- Candidates: an operationContext names its command. Without one (real 2024 samples of CallConnected,
-- CallDisconnected and SendDtmfTonesCompleted lack it) the event answers the call's oldest pending command of
-- a type it resolves. CallDisconnected answers every pending command of the call; a RecordingStateChanged
-- answers the oldest pending command of its recording that expects that state (a StartRecordingFailed, which
-- names its recording too, its start); a CancelAddParticipantSucceeded also fails the pending add whose
-- invitation it withdrew (ACS sends that add nothing more).
--
-- KEYS: 1 seen marker, 2 the call's event stream, 3 call hash, 4 call's command list, 5 recording hash,
--       6 recording's command list, 7 recording's early events ('' for those the event names no call /
--       recording for)
-- ARGV: 1 dedupe ttl, 2 ttl, 3 stream MINID, 4 event json, 5 operationContext, 6 short type,
--       7 '1' when the event answers every candidate (else the first), 8 recording state, 9 steps json
--       ('' = the event resolves nothing), 10 now, 11 late-event json ('' without a context),
--       12 withdrawn invitation id, 13 its failure fields json, 14 server call id, 15 call id
-- Returns: {'duplicate'} or {'stored', 'orphan' | '', {id, call, record as field/value} per command resolved}
local bad = check_types({'string', 'stream', 'hash', 'list', 'hash', 'list', 'list'})
if bad then return bad end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return {'duplicate'} end
local ttl, now, kind, context = tonumber(ARGV[2]), ARGV[10], ARGV[6], ARGV[5]
if KEYS[5] ~= '' then
  -- Stored before the recording's commands are read, while a worker registers a start before it reads
  -- this: whichever runs second sees the other (runtime._catch_up_recording).
  redis.call('HSET', KEYS[5], 'state', ARGV[8], 'last_event', ARGV[4])
  redis.call('EXPIRE', KEYS[5], ttl)
end
local ids, seen = {}, {}
local function add(id)
  if id and id ~= '' and not seen[id] then seen[id] = true; ids[#ids + 1] = id end
end
add(context)
if KEYS[6] ~= '' then
  for _, id in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do add(id) end
elseif KEYS[4] ~= '' and (kind == 'CallDisconnected' or context == '') then
  if kind == 'CallConnected' then add(redis.call('HGET', KEYS[3], 'connect_command')) end
  for _, id in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do add(id) end
end
local found, connect = {}, nil
for _, id in ipairs(ids) do
  local c = redis.call('HMGET', COMMAND_PREFIX .. id, 'type', 'status', 'client', 'call_connection_id')
  if c[1] then
    local cmd = {id = id, type = c[1], status = c[2], client = c[3] or '', cc = c[4] or ''}
    cmd.terminal = is_terminal(cmd.status)
    found[#found + 1] = cmd
    if cmd.type == 'connect' and not cmd.terminal and not connect then connect = cmd end
  end
end
-- Stream ids are millisecond timestamps, so MINID trims what is older than the retention.
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[3], '*', 'event', ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
-- Real ACS reports a recording from a recorder of its own, so its RecordingStateChanged names another call
-- connection than callq's: the event also joins the timeline of the connection that started the recording. One
-- that beats the start's answer (which names that connection) is kept for sent.lua to put there.
local own = KEYS[5] ~= '' and redis.call('HGET', KEYS[5], 'call_connection_id') or ''
if own ~= '' and own ~= ARGV[15] then
  local timeline = CALL_PREFIX .. own .. CALL_EVENTS_SUFFIX
  redis.call('XADD', timeline, 'MINID', '~', ARGV[3], '*', 'event', ARGV[4])
  redis.call('EXPIRE', timeline, ttl)
else
  if own == '' and KEYS[7] ~= '' then
    redis.call('RPUSH', KEYS[7], ARGV[4])
    redis.call('EXPIRE', KEYS[7], ttl)
  end
  own = ''
end
-- Told before the commands it resolves: a receiver sees the event, then what it meant.
for _, call in ipairs({KEYS[3] ~= '' and ARGV[15] or '', own}) do
  if call ~= '' then
    local owner = redis.call('HMGET', CALL_PREFIX .. call, 'client', 'room_id')
    webhook_fanout(owner[1] or (call == ARGV[15] and connect and connect.client), 'call.event', call, now,
      {'event', ARGV[4], 'call_connection_id', call, 'room_id', owner[2] or ''})
  end
end
-- Decoded only when there is a command to apply it to (most events only join the timeline).
local plan = (#found > 0 and ARGV[9] ~= '') and cjson.decode(ARGV[9]) or {types = {}, steps = {}}
local answered, known = {}, #found
local function resolved(id, cc, moved)
  if moved[1] ~= 'applied' then return false end
  answered[#answered + 1] = {id, cc, moved[3]}
  return true
end
for _, cmd in ipairs(found) do
  local tag = plan.types[cmd.type]
  local step = tag and plan.steps[tag]
  if step then
    if cmd.terminal then
      -- kept, not applied
      if cmd.id == context then redis.call('HSET', COMMAND_PREFIX .. cmd.id, 'late_event', ARGV[11]) end
    else
      resolved(cmd.id, cmd.cc, transition(cmd.id, step[1], '', now, merged_result(cmd.id, step[2])))
      if ARGV[7] ~= '1' then break end  -- one event answers one command: the one it names, else the oldest
    end
  end
end
if ARGV[12] ~= '' and KEYS[4] ~= '' then
  local fields = cjson.decode(ARGV[13])
  for _, id in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
    local c = redis.call('HMGET', COMMAND_PREFIX .. id, 'type', 'status', 'result', 'call_connection_id')
    if c[1] == 'add_participant' and not is_terminal(c[2]) and c[3] then
      local ok, result = pcall(cjson.decode, c[3])
      if ok and type(result) == 'table' and result['invitation_id'] == ARGV[12] then
        if resolved(id, c[4] or '', transition(id, 'failed', '', now, fields)) then known = known + 1 end
      end
    end
  end
end
if KEYS[3] ~= '' and kind == 'CallConnected' then
  call_connected(ARGV[15], ARGV[14], connect and connect.id, connect and connect.client, ttl)
  -- A connect whose worker died after ACS made the call never recorded ACS's answer (sent.lua), so its call's
  -- command list lacks it: the event names the call, and what sent.lua would have written is written here.
  if connect and not redis.call('LPOS', KEYS[4], connect.id) then
    redis.call('LPUSH', KEYS[4], connect.id)
    redis.call('EXPIRE', KEYS[4], ttl)
    if connect.cc == '' then redis.call('HSET', COMMAND_PREFIX .. connect.id, 'call_connection_id', ARGV[15]) end
    local room = redis.call('HGET', COMMAND_PREFIX .. connect.id, 'room_id')
    if room and room ~= '' then
      redis.call('HSET', KEYS[3], 'room_id', room)
      redis.call('SET', ROOM_PREFIX .. room .. ROOM_CALL_SUFFIX, ARGV[15], 'EX', ttl)
    end
  end
elseif KEYS[3] ~= '' and kind == 'CallDisconnected' then
  call_disconnected(ARGV[15], ttl)
elseif KEYS[3] ~= '' then
  redis.call('ZADD', LIVE_CALLS, 'XX', now_ms(), ARGV[15])  -- news of the call: it is not stale
end
local out = {'stored', known == 0 and 'orphan' or ''}
for _, r in ipairs(answered) do out[#out + 1] = r end
return out
