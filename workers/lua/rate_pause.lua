-- ACS said 429: pause the whole budget. Extends, never shortens, a pause.
-- KEYS: 1 pause-until key
-- ARGV: 1 pause ms
-- Returns: the pause's end (ms, Redis' clock)
local till = now_ms() + tonumber(ARGV[1])
if till > tonumber(redis.call('GET', KEYS[1]) or '0') then
  redis.call('SET', KEYS[1], tostring(till), 'PX', ARGV[1])
end
return till
