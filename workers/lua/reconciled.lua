-- A waiting command whose event never came, settled from a read of ACS: waiting -> ARGV[2]. When the read says
-- what CallConnected / CallDisconnected would have told the call record, the record learns it too.
-- KEYS: 1 command hash
-- ARGV: 1 command id, 2 to status, 3 now iso, 4 call connection id ('' for none), 5 call state to record on
--       success ('connected', 'disconnected' or ''), 6 the call's server call id, 7... field/value pairs
-- Returns: lib.transition's reply
local moved = transition(ARGV[1], ARGV[2], 'waiting', ARGV[3], {unpack(ARGV, 7)})
if moved[1] == 'applied' and ARGV[2] == 'succeeded' and ARGV[4] ~= '' then
  if ARGV[5] == 'connected' then
    call_connected(ARGV[4], ARGV[6])
  elseif ARGV[5] == 'disconnected' then
    call_disconnected(ARGV[4])
  end
end
return moved
