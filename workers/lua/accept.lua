-- Accept a command: record the idempotency key, create the command and queue its Celery message, all or none. A
-- concurrent duplicate sees the key and gets the same command back. A new command is first checked against the
-- door's limits (the call's and the client's pending commands, the client's accept budget): past one, nothing is
-- written and the key stays free.
-- Only runnable work reaches the broker: a command that an earlier pending command of its call holds back
-- (lib.lua's blocks) parks in the call's lane with its message kept in its record, costing no worker anything
-- until its turn (kick.lua); a runnable one joins its client's ready list and the fair dispatch (lib.lua).
-- An interrupt that ends media fails the call's earlier media operations that callq has not sent (never
-- attempted): 'interrupted', with its id. Cancel media cuts them all (its point: ACS would have cancelled them
-- had they been queued there); a hang up only while a looping play runs: that play never ends by itself, so what
-- waits behind it would hold the hang up until the play's deadline and never play anyway. Otherwise "play, then
-- hang up" still plays. Their successors get their turn at once.
-- KEYS: 1 idempotency hash, 2 command hash, 3 broker queue list, 4 the call's command list, 5 the recording's
--       command list (4 and 5 '' when the command has no call / recording yet), 6 the call's pending set ('' when
--       no call), 7 the client's pending set, 8 the client's accept budget ('' when it has none), 9 the call's lane
--       (its commands not ended, in order; '' when no call), 10 the call's pending interrupts ('' unless this is
--       an interrupt on a call)
-- ARGV: 1 fingerprint, 2 command id, 3 idempotency ttl s, 4 command ttl s, 5 broker message, 6 response json
--       ('' when the caller keeps none), 7 sweep grace ms, 8 most pending per call (0: no limit), 9 most pending
--       per client (0: no limit), 10 the accept budget's emission interval ms, 11 its burst, 12 the dispatch
--       window, 13 client, 14 type, 15 now ms, 16 non-blocking types csv, 17 media types csv, 18 interrupt types
--       csv, 19 overtaking types csv, 20 now iso, 21 what it cuts ('' nothing, 'all' the unsent media operations,
--       'held' those only while a looping play runs), 22 the error of what it cuts (JSON), 23... the command's
--       field/value pairs
-- Returns: {'new' | 'replay', command id, fingerprint, response json, the record of each command it cut...}
--          (a replay's are the stored ones), or {'refused', code, retry after ms, limit}
local bad = check_types({'hash', 'hash', 'list', 'list', 'list', 'set', 'set', 'string', 'list', 'set'})
if bad then return bad end
local existing = redis.call('HMGET', KEYS[1], 'command_id', 'fingerprint', 'response')
if existing[1] then
  return {'replay', existing[1], existing[2] or '', existing[3] or ''}
end
-- A set at its limit first drops members that ended without leaving it (finished by a worker of a release
-- before the door, or a record gone), from a sample of 16: reading them all would cost every refusal the whole
-- set (a flooded call refuses many), and each refusal drops a few more.
local function pending_after_pruning(key, members)
  for _, id in ipairs(members) do
    local status = redis.call('HGET', COMMAND_PREFIX .. id, 'status')
    if not status or is_terminal(status) then redis.call('SREM', key, id) end
  end
  return redis.call('SCARD', key)
end
-- SCARD also checks the sets' types before the first write (a wrong type fails here, leaving nothing).
local per_call, per_client = tonumber(ARGV[8]), tonumber(ARGV[9])
if KEYS[6] ~= '' then
  local pending = redis.call('SCARD', KEYS[6])
  if per_call > 0 and pending >= per_call
      and pending_after_pruning(KEYS[6], redis.call('SRANDMEMBER', KEYS[6], 16)) >= per_call then
    return {'refused', 'too_many_pending', 1000, 'call'}
  end
end
local pending = redis.call('SCARD', KEYS[7])
if per_client > 0 and pending >= per_client
    and pending_after_pruning(KEYS[7], redis.call('SRANDMEMBER', KEYS[7], 16)) >= per_client then
  return {'refused', 'too_many_pending', 1000, 'client'}
end
if KEYS[8] ~= '' then
  local wait = gcra_take(KEYS[8], tonumber(ARGV[10]), tonumber(ARGV[11]), now_ms())
  if wait > 0 then return {'refused', 'client_rate_limited', wait, 'client'} end
end
redis.call('HSET', KEYS[1], 'command_id', ARGV[2], 'fingerprint', ARGV[1], 'response', ARGV[6])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], unpack(ARGV, 23))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
for i = 4, 10 do
  if KEYS[i] ~= '' and i ~= 8 then
    redis.call((i < 6 or i == 9) and 'RPUSH' or 'SADD', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4]))
  end
end
local held, cut = false, {}
local now, lanes = tonumber(ARGV[15]), {nonblocking = ARGV[16], media = ARGV[17], interrupts = ARGV[18],
                                       overtaking = ARGV[19]}
if KEYS[6] ~= '' then
  -- The call's pending commands are exactly the earlier ones that may still hold this one back.
  local earlier = ARGV[21] ~= '' and redis.call('SMEMBERS', KEYS[6]) or nil
  local cuts = ARGV[21] == 'all'
  if ARGV[21] == 'held' then
    for _, id in ipairs(earlier) do
      local st = redis.call('HMGET', COMMAND_PREFIX .. id, 'status', 'type', 'wait_deadline', 'params')
      -- params are stored as compact JSON with sorted keys (command.flatten)
      if st[1] == 'waiting' and listed(lanes.media, st[2]) and tonumber(st[3] or '0') > now
          and string.find(st[4] or '', '"loop":true', 1, true) then
        cuts = true
      end
    end
  end
  if cuts then
    for _, id in ipairs(earlier) do
      local st = redis.call('HMGET', COMMAND_PREFIX .. id, 'status', 'type', 'attempts')
      if id ~= ARGV[2] and st[1] == 'queued' and tonumber(st[3] or '0') == 0 and listed(lanes.media, st[2]) then
        local moved = transition(id, 'failed', 'queued', ARGV[20], {'error', ARGV[22], 'lease_until', '0',
                                                                     'parked', ''})
        if moved[3] then cut[#cut + 1] = moved[3] end
      end
    end
    -- What waited behind a cut command may go now (one parked after its message ran is the sweeper's to revive),
    -- and so is ahead of this command.
    if #cut > 0 then kick_lane(KEYS[9], now, lanes) end
  end
  -- The command accepted just before this one (the lane's last but this) is the one that holds it back most
  -- often: looked at first, it spares a call with a backlog reading every pending command on each accept.
  local last = redis.call('LINDEX', KEYS[9], -2)
  if last and last ~= ARGV[2] and blocks(last, ARGV[14], now, lanes) then
    held = true
  else
    for _, id in ipairs(earlier or redis.call('SMEMBERS', KEYS[6])) do
      if id ~= ARGV[2] and blocks(id, ARGV[14], now, lanes) then
        held = true
        break
      end
    end
  end
end
if held then
  redis.call('HSET', KEYS[2], 'parked', '1', 'msg', ARGV[5])
else
  fair_push(ARGV[13], ARGV[2], ARGV[5])
end
if not held or #cut > 0 then dispatch(KEYS[3], tonumber(ARGV[12])) end
-- Watched by the sweeper until it ends (first look after the grace period): the record is the truth.
redis.call('ZADD', ACTIVE_ZSET, now_ms() + tonumber(ARGV[7]), ARGV[2])
return {'new', ARGV[2], ARGV[1], ARGV[6], unpack(cut)}
