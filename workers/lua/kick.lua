-- The call's first unsent command, if it parked waiting for its turn and nothing before it holds it back any
-- more (lib.lua's blocks): unparks it.
-- KEYS: 1 the call's command list
-- ARGV: 1 now ms, 2 non-blocking types csv, 3 media types csv, 4 interrupt types csv
-- Returns: {} or {command id, command type}
local now = tonumber(ARGV[1])
local lanes = {nonblocking = ARGV[2], media = ARGV[3], interrupts = ARGV[4]}
local before = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local st = redis.call('HMGET', COMMAND_PREFIX .. id, 'status', 'parked', 'type')
  if st[1] == 'queued' or st[1] == 'running' then
    if st[2] ~= '1' then return {} end
    for _, earlier in ipairs(before) do
      if blocks(earlier, st[3], now, lanes) then return {} end
    end
    redis.call('HSET', COMMAND_PREFIX .. id, 'parked', '')
    return {id, st[3]}
  end
  before[#before + 1] = id
end
return {}
