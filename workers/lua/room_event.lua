-- One Event Grid event of a room call, atomically: dedupe, put it on the room's timeline (and on the timeline of
-- callq's own connection to that call, once callq is connected), follow the room's call, and on CallStarted
-- open the room call's automation run: exactly once per (room, serverCallId), however often Event Grid delivers
-- the event and however many API processes receive it.
--
-- Event Grid keeps no order: a CallEnded may come before its CallStarted. An ended call is remembered (KEYS[9]),
-- so its late CallStarted neither reopens the call nor starts a run.
--
-- KEYS: 1 seen marker, 2 room's event stream, 3 room hash (a client manages it when it exists), 4 the call
--       connection callq made to the room (string), 5 the room's live serverCallId, 6 this call's run hash,
--       7 the room's runs (zset), 8 steps queue (list), 9 the room's ended calls (set), 10 the server call's room
-- ARGV: 1 dedupe ttl s, 2 stream MINID, 3 event JSON, 4 short type, 5 serverCallId, 6 now (ISO), 7 new run id,
--       8 the run's advance message, 9 ttl s, 10 now ms, 11 event time (ISO), 12 correlation id, 13 room id
-- Returns: {'duplicate'} or {'stored', managing client or '', run 'created' | 'woken' | '',
--           callq's connection to end ('' unless CallEnded), callq's connection to the call or ''}
local err = check_types({'string', 'stream', 'hash', 'string', 'string', 'hash', 'zset', 'list', 'set', 'string'})
if err then return err end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return {'duplicate'} end
local kind, scid, now, ttl = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[9])
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[2], '*', 'event', ARGV[3])
redis.call('EXPIRE', KEYS[2], ttl)
if ARGV[5] ~= '' then redis.call('SET', KEYS[10], ARGV[13], 'EX', ttl) end

local mine = ''
local cc = redis.call('GET', KEYS[4])
if cc and scid ~= '' and redis.call('HGET', CALL_PREFIX .. cc, 'server_call_id') == scid then
  mine = cc
  local events = CALL_PREFIX .. cc .. CALL_EVENTS_SUFFIX
  redis.call('XADD', events, 'MINID', '~', ARGV[2], '*', 'event', ARGV[3])
  redis.call('EXPIRE', events, ttl)
end

local ended = scid ~= '' and redis.call('SISMEMBER', KEYS[9], scid) == 1
if kind == 'CallEnded' and scid ~= '' then
  redis.call('SADD', KEYS[9], scid)
  redis.call('EXPIRE', KEYS[9], ttl)
  if redis.call('GET', KEYS[5]) == scid then redis.call('DEL', KEYS[5]) end
elseif kind == 'CallStarted' and scid ~= '' and not ended then
  redis.call('SET', KEYS[5], scid, 'EX', ttl)
end

local client = redis.call('HGET', KEYS[3], 'client') or ''
webhook_fanout(client, 'room.event', 'room:' .. ARGV[13], now,
  {'event', ARGV[3], 'room_id', ARGV[13], 'call_connection_id', mine})
local run = ''
if client ~= '' and scid ~= '' then
  local current = redis.call('HGET', KEYS[3], 'server_call_id') or ''
  if kind == 'CallStarted' and not ended then
    if current ~= scid then
      redis.call('HSET', KEYS[3], 'server_call_id', scid, 'call_state', 'active', 'call_started_at', ARGV[11],
        'call_ended_at', '', 'call_connection_id', '')
    end
    local automation = redis.call('HGET', KEYS[3], 'automation')
    local source = 'room'
    if not automation or automation == '' then
      automation = redis.call('GET', CLIENT_PREFIX .. client .. ':automation')
      source = 'client'
    end
    if automation and redis.call('EXISTS', KEYS[6]) == 0 then
      local steps = cjson.decode(automation)['on_call_started']
      if type(steps) == 'table' and #steps > 0 then
        -- The automation as it was set, not re-encoded: cjson would turn an empty body {} into [].
        redis.call('HSET', KEYS[6], 'id', ARGV[7], 'client', client, 'room_id', ARGV[13],
          'server_call_id', scid, 'correlation_id', ARGV[12], 'state', 'starting', 'source', source,
          'automation', automation, 'call_started_at', ARGV[11], 'created_at', now, 'updated_at', now)
        redis.call('EXPIRE', KEYS[6], ttl)
        redis.call('ZADD', KEYS[7], tonumber(ARGV[10]), scid)
        redis.call('EXPIRE', KEYS[7], ttl)
        redis.call('LPUSH', KEYS[8], ARGV[8])
        run = 'created'
      end
    end
  elseif kind == 'CallEnded' then
    if current == scid or current == '' then
      redis.call('HSET', KEYS[3], 'server_call_id', scid, 'call_state', 'ended', 'call_ended_at', ARGV[11])
    end
    local state = redis.call('HGET', KEYS[6], 'state')
    if state and state ~= 'succeeded' and state ~= 'failed' and state ~= 'ended' then
      redis.call('HSET', KEYS[6], 'call_ended', '1', 'updated_at', now)
      redis.call('LPUSH', KEYS[8], ARGV[8])
      run = 'woken'
    end
  end
end
return {'stored', client, run, kind == 'CallEnded' and mine or '', mine}
