-- Take one request from the shared ACS budget (lib.lua's gcra).
-- KEYS: 1 theoretical-arrival-time key, 2 pause-until key
-- ARGV: 1 emission interval ms, 2 burst
-- Returns: 0 when the request may go now, else the milliseconds to wait
return gcra(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]))
