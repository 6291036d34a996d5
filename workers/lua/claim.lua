-- Everything a worker does before it sends a command, in one round trip: read the command, check its turn on
-- its call (lib.lua's blocks), pay the shared ACS budget for its request (lib.lua's gcra; nothing is paid for a
-- command that may not go), claim it. The call's lane (its commands not ended, in order) is named by the record,
-- so it is read here without being declared in KEYS (single Redis, not Cluster).
-- A worker took this command's message off the broker's queue: the same round trip refills the queue from the
-- fair dispatch (lib.lua's dispatch), so the queue stays full without a step of its own.
-- A command that finds its turn not come parks (kick.lua hands it its turn; it needs no message meanwhile).
-- While a quiet window is open (lib.lua's dispatch), only a sparse flow's command (marked QUIET_MARK) is claimed;
-- any other yields for what is left of the window, before it pays the budget (the worker waits in place).
-- KEYS: 1 command hash, 2 the budget's theoretical-arrival-time key, 3 the budget's pause key, 4 the broker's
--       command queue
-- ARGV: 1 lease ms, 2 now iso, 3 the budget's emission interval ms, 4 its burst, 5 now ms,
--       6 non-blocking types csv, 7 media types csv, 8 interrupt types csv, 9 overtaking types csv,
--       10 the dispatch window
-- Returns: {'missing'}, {'done', status, call}, {'leased'}, {'blocked'}, {'throttled', wait ms, type},
--          {'yielded', wait ms},
--          or {'claimed', attempts, status before, the record as field/value...}
dispatch(KEYS[4], tonumber(ARGV[10]))
local now = tonumber(ARGV[5])
local lanes = {nonblocking = ARGV[6], media = ARGV[7], interrupts = ARGV[8], overtaking = ARGV[9]}
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then return {'missing'} end
local f = {}
for i = 1, #rec, 2 do f[rec[i]] = rec[i + 1] end
local status, call = f['status'], f['call_connection_id'] or ''
if status ~= 'queued' and status ~= 'running' then return {'done', status, call} end
if tonumber(f['lease_until'] or '0') > now then return {'leased'} end
if call ~= '' then
  for _, id in ipairs(redis.call('LRANGE', CALL_PREFIX .. call .. CALL_LANE_SUFFIX, 0, -1)) do
    if id == f['id'] then break end
    if blocks(id, f['type'], now, lanes) then
      -- Parked: when its turn comes it is dispatched again, and is quiet only if its client still is.
      redis.call('HSET', KEYS[1], 'parked', '1')
      redis.call('HDEL', KEYS[1], QUIET_MARK)
      return {'blocked'}
    end
  end
end
if f[QUIET_MARK] ~= '1' then
  local quiet_ms = redis.call('PTTL', QUIET_WINDOW)
  if quiet_ms > 0 then return {'yielded', quiet_ms} end
end
local wait = gcra(KEYS[2], KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]))
if wait > 0 then return {'throttled', wait, f['type']} end
-- paid_ms: when the budget granted this send, on Redis's clock (the one the budget runs on): one clock for
-- every worker, so what was granted can be checked against the budget exactly.
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_until', tostring(now + tonumber(ARGV[1])),
           'updated_at', ARGV[2], 'parked', '', 'paid_ms', tostring(now_ms()))
redis.call('HDEL', KEYS[1], 'msg', QUIET_MARK)
-- The status before this claim: 'running' means an earlier attempt died while sending.
return {'claimed', tostring(redis.call('HINCRBY', KEYS[1], 'attempts', 1)), status, rec}
