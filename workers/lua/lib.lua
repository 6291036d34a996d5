-- Functions shared by callq's scripts; workers/scripts.py puts this (after the constants header) in front of
-- every script. A function a script does not use costs nothing but its definition.
-- luacheck: push ignore 211

-- Redis does not roll back a script that fails half-way, so a script refuses before its first write when a
-- key it will write has a type a later command would choke on: a failure then leaves nothing behind.
-- want[i] is the type KEYS[i] must have (or not exist); '' keys are skipped.
local function check_types(want)
  for i = 1, #want do
    if KEYS[i] ~= '' then
      local t = redis.call('TYPE', KEYS[i])['ok']
      if t ~= 'none' and t ~= want[i] then
        return redis.error_reply('WRONGTYPE callq cannot use ' .. KEYS[i] .. ', a ' .. t)
      end
    end
  end
end

local function is_terminal(status)
  return status == 'succeeded' or status == 'failed'
end

-- Is `item` one of the comma-separated `csv`?
local function listed(csv, item)
  return string.find(',' .. csv .. ',', ',' .. item .. ',', 1, true) ~= nil
end

-- The milliseconds of Redis' clock: every host shares it.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Outbound webhooks (workers/webhooks.py). A message is made in the same script as what it tells of (a command's
-- terminal move, an ACS event stored, an Event Grid event stored), so nothing can happen without its message and no
-- message exists for what did not happen. Messages to one endpoint about one call (the lane) are delivered one at
-- a time in the order they were made, each with the next `seq` of that (endpoint, lane).

-- The first message of the lane that is still kept (expired ones are dropped on the way), or nil.
local function webhook_head(lane_key)
  while true do
    local id = redis.call('LINDEX', lane_key, 0)
    if not id then return nil end
    if redis.call('EXISTS', WEBHOOK_MSG_PREFIX .. id) == 1 then return id end
    redis.call('LPOP', lane_key)
  end
end

-- What a deliverer needs to send message `id` of endpoint `ep`, handed over with its claim (no round trip of its own):
-- {the message (flat), the endpoint's url and secrets (flat)}. A command's message keeps a snapshot of the command
-- from its first claim until its body is stored (webhook_result.lua): its field 'snapshot', the command's hash as a
-- JSON array of its fields and values in HGETALL's order. Every attempt's body is made from that one record, not
-- the command as it is now: so it is the same bytes even after an attempt that went out unrecorded (its deliverer
-- killed mid-POST, or its claim lapsed) while the command gained fields (an ACS answer that came after the event
-- that ended it, sent.lua). Taken at the claim, not when the message is made, so it holds what the command gained
-- meanwhile.
local function webhook_load(ep, id)
  local mkey = WEBHOOK_MSG_PREFIX .. id
  local m = redis.call('HGETALL', mkey)
  local command, made = nil, false
  for i = 1, #m - 1, 2 do
    if m[i] == 'body' or m[i] == 'snapshot' then made = true elseif m[i] == 'command' then command = m[i + 1] end
  end
  if command and not made then
    local flat = redis.call('HGETALL', COMMAND_PREFIX .. command)
    if #flat > 0 then
      local snapshot = cjson.encode(flat)
      redis.call('HSET', mkey, 'snapshot', snapshot)
      m[#m + 1] = 'snapshot'
      m[#m + 1] = snapshot
    end
  end
  local e = redis.call('HMGET', WEBHOOK_PREFIX .. ep, 'url', 'secret', 'old_secret', 'old_secret_until_ms')
  return {m, {'url', e[1] or '', 'secret', e[2] or '', 'old_secret', e[3] or '', 'old_secret_until_ms', e[4] or ''}}
end

-- Put message `id` (already stored) at the end of its lane; a lane that was empty is due now.
local function webhook_enqueue(ep, lane, id, now, ttl)
  local ekey = WEBHOOK_PREFIX .. ep
  local lane_key = ekey .. ':lane:' .. lane
  if redis.call('RPUSH', lane_key, id) == 1 then
    redis.call('ZADD', WEBHOOKS_DUE, 'NX', now, ep .. ' ' .. lane)
  end
  redis.call('SADD', ekey .. ':lanes', lane)
  redis.call('EXPIRE', lane_key, ttl)
  redis.call('EXPIRE', ekey .. ':lanes', ttl)
end

-- A new message of type `kind` to endpoint `ep` on `lane`, happened at `at` (ISO), with `fields` (flat
-- field/value list: what the body is made of). Returns its id.
local function webhook_add(ep, kind, lane, at, fields)
  local ekey = WEBHOOK_PREFIX .. ep
  local n = redis.call('HINCRBY', ekey, 'messages', 1)
  local ttl = tonumber(redis.call('HGET', ekey, 'retention') or '259200')
  local now = now_ms()
  local seq = redis.call('HINCRBY', ekey .. ':seq', lane, 1)
  redis.call('EXPIRE', ekey .. ':seq', ttl)
  -- Zero-padded: ids made in the same millisecond sort in the order they were made (the index's tie-break).
  local id = 'msg_' .. string.sub(ep, 4) .. '_' .. string.format('%010d', n)
  local mkey = WEBHOOK_MSG_PREFIX .. id
  redis.call('HSET', mkey, 'id', id, 'endpoint', ep, 'type', kind, 'lane', lane, 'seq', seq, 'at', at,
    'created_ms', now, 'status', 'pending', 'attempts', 0, 'round', 0, unpack(fields))
  redis.call('EXPIRE', mkey, ttl)
  redis.call('ZADD', ekey .. ':msgs', now, id)
  redis.call('ZREMRANGEBYSCORE', ekey .. ':msgs', '-inf', now - ttl * 1000)
  redis.call('EXPIRE', ekey .. ':msgs', ttl)
  webhook_enqueue(ep, lane, id, now, ttl)
  redis.call('PUBLISH', WEBHOOKS_CHANNEL, ep)
  return id
end

-- A message of type `kind` to each of the client's enabled endpoints that takes it.
local function webhook_fanout(client, kind, lane, at, fields)
  if not client or client == '' then return end
  local subs = redis.call('HGETALL', CLIENT_PREFIX .. client .. CLIENT_WEBHOOKS_SUFFIX)
  for i = 1, #subs, 2 do
    if subs[i + 1] == '*' or listed(subs[i + 1], kind) then webhook_add(subs[i], kind, lane, at, fields) end
  end
end

-- A command's result is told twice for some commands, in either order: by ACS's answer to the request (an add's
-- invitation_id and participant) and by the event that resolves it (the call's ids, what was recognized). Whichever
-- comes second joins what is there instead of replacing it: its non-null members win, the others stay. `fields` is a
-- flat field/value list; returns it with its 'result' merged into the command's stored one (unchanged when either is
-- not a JSON object).
local function merged_result(id, fields)
  local at = nil
  for i = 1, #fields - 1, 2 do
    if fields[i] == 'result' then at = i + 1 end
  end
  if not at then return fields end
  local stored = redis.call('HGET', COMMAND_PREFIX .. id, 'result')
  if not stored or stored == '' or stored == 'null' then return fields end
  local ok_old, old = pcall(cjson.decode, stored)
  local ok_new, new = pcall(cjson.decode, fields[at])
  if not (ok_old and ok_new and type(old) == 'table' and type(new) == 'table') then return fields end
  for k, v in pairs(new) do
    if v ~= cjson.null then old[k] = v end
  end
  local out = {unpack(fields)}
  out[at] = cjson.encode(old)
  return out
end

-- Move the command `id` to status `to` from a non-terminal one (only from the csv `allowed` unless it is ''),
-- setting `fields` (a flat field/value list) and adding `attempts_by` to its attempts. A terminal move leaves
-- the sweeper's and the deadline index, and is announced on COMMAND_DONE_CHANNEL for long-polling API
-- requests: "{id} {record as JSON}", so a waiting request can answer at once instead of reading the record.
-- Returns {outcome, status}: outcome 'applied' (status = to), 'terminal' or 'skipped' (status = the current
-- one), or 'missing'; a terminal move that applied adds the record as a third element.
local function transition(id, to, allowed, now, fields, attempts_by)
  local key = COMMAND_PREFIX .. id
  local cur = redis.call('HGET', key, 'status')
  if not cur then return {'missing', ''} end
  if is_terminal(cur) then return {'terminal', cur} end
  if allowed ~= '' and not listed(allowed, cur) then return {'skipped', cur} end
  redis.call('HSET', key, 'status', to, 'updated_at', now, unpack(fields))
  if attempts_by and attempts_by ~= 0 then redis.call('HINCRBY', key, 'attempts', attempts_by) end
  if not is_terminal(to) then return {'applied', to} end
  redis.call('HSET', key, 'resolved_at', now)
  redis.call('HDEL', key, 'msg')  -- a parked command's message, never needed now
  redis.call('ZREM', ACTIVE_ZSET, id)
  redis.call('ZREM', WAIT_DEADLINES, id)
  local flat, record = redis.call('HGETALL', key), {}
  for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
  -- No longer pending: frees its place under the door's limits (accept.lua).
  if record['call_connection_id'] and record['call_connection_id'] ~= '' then
    redis.call('SREM', CALL_PREFIX .. record['call_connection_id'] .. PENDING_SUFFIX, id)
    redis.call('LREM', CALL_PREFIX .. record['call_connection_id'] .. CALL_LANE_SUFFIX, 1, id)
    redis.call('SREM', CALL_PREFIX .. record['call_connection_id'] .. CALL_INTERRUPTS_SUFFIX, id)
  end
  if record['client'] then redis.call('SREM', CLIENT_PREFIX .. record['client'] .. PENDING_SUFFIX, id) end
  local doc = cjson.encode(record)
  redis.call('PUBLISH', COMMAND_DONE_CHANNEL, id .. ' ' .. doc)
  local cc = record['call_connection_id'] or ''
  webhook_fanout(record['client'], 'command.' .. to, cc ~= '' and cc or ('cmd:' .. id), now,
    {'command', id, 'call_connection_id', cc, 'room_id', record['room_id'] or ''})
  return {'applied', to, flat}
end


-- GCRA: take one from the budget whose theoretical arrival time is at tat_key (one every `emission` ms, `burst`
-- at once). 0 when it may go now (and it is taken), else the milliseconds to wait.
local function gcra_take(tat_key, emission, burst, now)
  local tolerance = emission * (burst - 1)
  local tat = tonumber(redis.call('GET', tat_key) or '0')
  if tat < now then tat = now end
  local allow_at = tat - tolerance
  if now < allow_at then return math.ceil(allow_at - now) end
  local new_tat = tat + emission
  redis.call('SET', tat_key, tostring(new_tat), 'PX', math.ceil(new_tat - now) + 1000)
  return 0
end

-- The shared ACS budget: GCRA, unless a 429 paused everyone until the time at pause_key.
local function gcra(tat_key, pause_key, emission, burst)
  local now = now_ms()
  local paused = tonumber(redis.call('GET', pause_key) or '0')
  if paused > now then return paused - now end
  return gcra_take(tat_key, emission, burst, now)
end

-- Per-call order: does the earlier command `id` keep a command of type `t` from being sent at `now`?
-- lanes = {nonblocking, media, interrupts, overtaking} (csvs of types, from the Operation table:
-- ledger.lane_args). A command may be sent only when every command accepted before it on the same call is out
-- of its way: sent and resolved, or sent and of a kind that does not hold the call (background media, which
-- still holds back the next media operation: ACS allows one at a time, 400/8500), or past its outcome deadline
-- (a lost event must not stall a call). Interrupts (hang up, cancel an invitation, cancel media) exist to cut
-- earlier commands short: they wait for earlier commands to be sent, never for their outcomes; the cancels
-- (`overtaking`) not even for a command parked behind another, which may be the very one they cut short (a play
-- behind a ringing invitation would otherwise hold its cancel until the invitation ends). Unsent media
-- operations a hang up or cancel media would wait behind, accept.lua has already failed. Reading
-- command hashes that are not in KEYS is fine on a single Redis (not on Cluster, which callq does not support).
local function blocks(id, t, now, lanes)
  local st = redis.call('HMGET', COMMAND_PREFIX .. id, 'status', 'type', 'wait_deadline', 'parked')
  if st[1] == 'queued' and st[4] == '1' and listed(lanes.overtaking, t) then return false end
  if st[1] == 'queued' or st[1] == 'running' then return true end
  if listed(lanes.interrupts, t) then return false end
  if st[1] ~= 'waiting' or tonumber(st[3] or '0') <= now then return false end
  if not listed(lanes.nonblocking, st[2]) then return true end
  return listed(lanes.media, st[2]) and listed(lanes.media, t)
end

-- Fair dispatch. Runnable work does not go straight onto the broker's queue: it waits in its client's ready list
-- (entries "{command id} {broker message}"; the id is '' for work that is not a command's send), and the clients
-- with ready work take turns (FAIR_RING, each client once) to fill the queue up to a window. So a client with
-- thousands of runnable commands and a client with one both get a message into the next window; and since a
-- call has at most one runnable command at a time (the rest are parked in its lane, see accept.lua), a client's
-- own calls take turns in its ready list. in_ready marks a command whose message waits there (the sweeper
-- leaves it alone).
local function fair_push(client, id, message)
  if redis.call('RPUSH', CLIENT_PREFIX .. client .. READY_SUFFIX, id .. ' ' .. message) == 1 then
    redis.call('RPUSH', FAIR_RING, client)
  end
  redis.call('RPUSH', FAIR_BACKLOG, '1')
  if id ~= '' then redis.call('HSET', COMMAND_PREFIX .. id, 'in_ready', '1') end
end

-- Move ready work onto the broker's queue, one entry per client in turn, until it holds `window` messages.
--
-- A client that had nothing dispatched for SPARSE_MS is a sparse flow (fq_codel's "new flow"): its message goes to
-- the end of the queue workers take from next (kombu LPUSHes and BRPOPs), ahead of the window, instead of behind
-- up to `window` messages of a client that floods. It stays sparse only while it stays quiet: a client whose
-- messages keep coming has them dispatched within SPARSE_MS of each other and queues like everyone else, so a
-- flood cannot jump the queue by calling itself new.
--
-- A sparse flow's command also opens the quiet window (QUIET_WINDOW, for QUIET_WINDOW_MS): its place in the queue
-- gets it a worker first, but on a machine a flood keeps busy it would then share the CPUs with every send of the
-- flood that workers start meanwhile (and with their callbacks). While the window is open, claim.lua holds back the
-- sends of commands that are not marked QUIET_MARK; the marked command, and any other sparse flow's, go through. A
-- window opens at most once per QUIET_EVERY_MS (QUIET_ARMED), so however many quiet clients come, the flood keeps
-- at least the rest of the time.
-- Returns how many moved.
local function dispatch(queue, window)
  local moved = 0
  while redis.call('LLEN', queue) < window do
    local client = redis.call('LPOP', FAIR_RING)
    if not client then break end
    local ready = CLIENT_PREFIX .. client .. READY_SUFFIX
    local entry = redis.call('LPOP', ready)
    if entry then
      local space = string.find(entry, ' ', 1, true)
      local id = string.sub(entry, 1, space - 1)
      if id ~= '' then redis.call('HDEL', COMMAND_PREFIX .. id, 'in_ready') end
      local recent = CLIENT_PREFIX .. client .. DISPATCHED_SUFFIX
      local push = redis.call('EXISTS', recent) == 1 and 'LPUSH' or 'RPUSH'
      redis.call('SET', recent, '1', 'PX', SPARSE_MS)
      if push == 'RPUSH' and id ~= '' then
        redis.call('HSET', COMMAND_PREFIX .. id, QUIET_MARK, '1')
        if redis.call('SET', QUIET_ARMED, '1', 'PX', QUIET_EVERY_MS, 'NX') then
          redis.call('SET', QUIET_WINDOW, '1', 'PX', QUIET_WINDOW_MS)
        end
      end
      redis.call(push, queue, string.sub(entry, space + 1))
      redis.call('LPOP', FAIR_BACKLOG)
      moved = moved + 1
    end
    if redis.call('LLEN', ready) > 0 then redis.call('RPUSH', FAIR_RING, client) end
  end
  return moved
end

-- A parked command whose turn came: its stored message (accept.lua keeps it) joins its client's ready list.
-- Returns false when it has none (it parked after its message ran: the caller publishes a new one).
local function unpark(id, client)
  local key = COMMAND_PREFIX .. id
  local message = redis.call('HGET', key, 'msg')
  redis.call('HSET', key, 'parked', '')
  if not message then return false end
  redis.call('HDEL', key, 'msg')
  fair_push(client, id, message)
  return true
end

-- Hand the call's parked commands their turn: each one that nothing earlier holds back any more (blocks) is
-- unparked and its kept message joins its client's ready list. Past the first unsent command that is not an
-- interrupt, only interrupts can be runnable (an unsent command holds back every later one but interrupts), so
-- the walk then looks at nothing else, and it stops once it has passed every interrupt the call has pending
-- (CALL_INTERRUPTS_SUFFIX, kept by accept.lua and transition). A call with a backlog of plays and no interrupt
-- costs a kick the head of its lane, not the backlog: kicks come with every send and every outcome.
-- Returns {command id, command type, client, ...} of the unparked commands that kept no message (they parked
-- after their message ran): the caller publishes those.
local function kick_lane(list_key, now, lanes)
  local before, no_message, only_interrupts = {}, {}, false
  local interrupts_left = redis.call('SCARD',
    string.sub(list_key, 1, #list_key - #CALL_LANE_SUFFIX) .. CALL_INTERRUPTS_SUFFIX)
  -- An entry of the set whose record is gone or ended is never met on the way: the walk then goes to the end of the
  -- lane, as it always did. An interrupt missing from the set (accepted by a release before it) is not looked for
  -- past the head: it goes in its turn, like any command, once the commands before it are sent.
  for _, id in ipairs(redis.call('LRANGE', list_key, 0, -1)) do
    if only_interrupts and interrupts_left <= 0 then break end
    local st = redis.call('HMGET', COMMAND_PREFIX .. id, 'status', 'parked', 'type', 'client')
    if st[1] and not is_terminal(st[1]) and listed(lanes.interrupts, st[3] or '') then
      interrupts_left = interrupts_left - 1
    end
    local unsent = st[1] == 'queued' or st[1] == 'running'
    if unsent and st[2] == '1' and (not only_interrupts or listed(lanes.interrupts, st[3])) then
      local free = true
      for _, earlier in ipairs(before) do
        if blocks(earlier, st[3], now, lanes) then
          free = false
          break
        end
      end
      if free and not unpark(id, st[4] or '') then
        no_message[#no_message + 1] = id
        no_message[#no_message + 1] = st[3]
        no_message[#no_message + 1] = st[4] or ''
      end
    end
    if unsent and not listed(lanes.interrupts, st[3]) then only_interrupts = true end
    -- Only commands not ended can hold a later one back.
    if st[1] and not is_terminal(st[1]) then before[#before + 1] = id end
  end
  return no_message
end

-- The call record (callq:call:{id}) is written only through these four (which also keep LIVE_CALLS, the calls not
-- known to have ended, by when callq last heard of them), by the scripts that learn what
-- they say: sent.lua (ACS made the call, or started a recording of it), ingest.lua (CallConnected /
-- CallDisconnected) and reconciled.lua (a read of ACS said what those events would have).
local function call_made(call, client, room_id, command_id, ttl)
  local key = CALL_PREFIX .. call
  redis.call('HSETNX', key, 'state', 'connecting')
  redis.call('HSET', key, 'client', client, 'room_id', room_id, 'connect_command', command_id)
  redis.call('EXPIRE', key, ttl)
  if redis.call('HGET', key, 'state') ~= 'disconnected' then redis.call('ZADD', LIVE_CALLS, now_ms(), call) end
end

local function call_connected(call, server_call_id, connect_command, client, ttl)
  local key = CALL_PREFIX .. call
  redis.call('HSET', key, 'state', 'connected', 'server_call_id', server_call_id)
  redis.call('ZADD', LIVE_CALLS, now_ms(), call)
  if connect_command then redis.call('HSET', key, 'connect_command', connect_command, 'client', client) end
  if ttl then redis.call('EXPIRE', key, ttl) end
end

local function call_recording(call, recording_id)
  redis.call('HSET', CALL_PREFIX .. call, 'recording_id', recording_id)
end

local function call_disconnected(call, ttl)
  local key = CALL_PREFIX .. call
  redis.call('HSET', key, 'state', 'disconnected')
  redis.call('ZREM', LIVE_CALLS, call)
  if ttl then redis.call('EXPIRE', key, ttl) end
end

-- Idempotency of the requests that are not commands (a recording schedule's create and cancel). Their key's
-- hash is the one a command's accept writes, in the same per-client namespace, with what the first request
-- made under `command_id`: so a key reused across a command and a schedule is a replay with another
-- fingerprint (422), never a silent overwrite.
-- The reply a replay answers, {'replay', id, fingerprint, response}; nil when the key is not used yet.
local function idem_replay(key)
  local found = redis.call('HMGET', key, 'command_id', 'fingerprint', 'response')
  if found[1] then return {'replay', found[1], found[2], found[3]} end
  return nil
end

-- Record the first request under an idempotency key: the id of what it made, its fingerprint and its answer.
local function idem_record(key, id, fingerprint, response, ttl_s)
  redis.call('HSET', key, 'command_id', id, 'fingerprint', fingerprint, 'response', response)
  redis.call('EXPIRE', key, tonumber(ttl_s))
end

-- luacheck: pop
