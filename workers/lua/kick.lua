-- Hand the call's parked commands their turn (lib.lua's kick_lane), then run the fair dispatch. Called whenever a
-- command of the call may have stopped holding the rest back (sent, resolved, reconciled), and by the sweeper as
-- a safety net.
-- KEYS: 1 the call's lane (its commands not ended, in order), 2 the broker's command queue
-- ARGV: 1 now ms, 2 non-blocking types csv, 3 media types csv, 4 interrupt types csv, 5 overtaking types csv,
--       6 the dispatch window
-- Returns: {command id, command type, client, ...} of the unparked commands that kept no message: the caller
--          publishes those
local lanes = {nonblocking = ARGV[2], media = ARGV[3], interrupts = ARGV[4], overtaking = ARGV[5]}
local no_message = kick_lane(KEYS[1], tonumber(ARGV[1]), lanes)
dispatch(KEYS[2], tonumber(ARGV[6]))
return no_message
