"""The command ledger: command records in Redis are the truth; idempotency keys point at them.

A command moves ``queued → running → waiting → succeeded | failed`` and only forward: once terminal it
never changes status again (a late event is kept in the call's timeline, not applied). Both moves that
matter for exactly-once are single Lua scripts, so they are atomic whichever process runs them:

* ``ACCEPT``: record the idempotency key, create the command and push its Celery message onto the
  broker list — all three or none. A concurrent duplicate sees the key and gets the same command.
* ``TRANSITION``: move a command to a new status only from a non-terminal one (optionally only from a
  given set), and announce terminal moves on one pub/sub channel for long-polling API requests.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from workers import keys
from workers.ratelimit import GCRA_FN

TERMINAL = frozenset({"succeeded", "failed"})
SWEEP_GRACE_MS = 30_000  # the sweeper leaves a new command alone this long: its own message should run it
STATUSES = ("queued", "running", "waiting", "succeeded", "failed")
_CALL_LIST = keys.call_commands_key("\n").split("\n")  # a call's command list key: head + call id + tail

# Redis does not roll back a script that fails half-way, so a script refuses before its first write when a
# key it will write has a type a later command would choke on: a failure then leaves nothing behind.
# ``want[i]`` is the type ``KEYS[i]`` must have (or not exist); '' keys are skipped.
CHECK_TYPES_FN = """
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
"""

# Move the command ``id`` (hash ``key``) to status ``to`` from a non-terminal one (only from the csv
# ``allowed`` unless it is ''), setting ``fields`` (a flat field/value list); terminal moves leave the
# sweeper's index and are announced on ``channel`` for long-polling API requests: "{id} {record as JSON}",
# so a waiting request can answer at once instead of reading the record back (see ``announced``).
TRANSITION_FN = """
local function transition(key, id, to, allowed, now, channel, fields)
  local cur = redis.call('HGET', key, 'status')
  if not cur then return {'missing', ''} end
  if cur == 'succeeded' or cur == 'failed' then return {'terminal', cur} end
  if allowed ~= '' and not string.find(',' .. allowed .. ',', ',' .. cur .. ',', 1, true) then
    return {'skipped', cur}
  end
  redis.call('HSET', key, 'status', to, 'updated_at', now, unpack(fields))
  if to == 'succeeded' or to == 'failed' then
    redis.call('HSET', key, 'resolved_at', now)
    redis.call('ZREM', '""" + keys.ACTIVE_ZSET + """', id)
    redis.call('ZREM', '""" + keys.WAIT_DEADLINES + """', id)
    local flat, record = redis.call('HGETALL', key), {}
    for i = 1, #flat, 2 do record[flat[i]] = flat[i + 1] end
    redis.call('PUBLISH', channel, id .. ' ' .. cjson.encode(record))
  end
  return {'applied', to}
end
"""

# KEYS: idempotency hash, command hash, broker queue list, call's command list, recording's command list
# (the last two "" when the command has no call / recording yet)
# ARGV: fingerprint, command id, idempotency ttl, command ttl, broker message, response json, field/value...
ACCEPT_LUA = CHECK_TYPES_FN + """
local bad = check_types({'hash', 'hash', 'list', 'list', 'list'})
if bad then return bad end
local existing = redis.call('HMGET', KEYS[1], 'command_id', 'fingerprint', 'response')
if existing[1] then
  return {'replay', existing[1], existing[2], existing[3]}
end
redis.call('HSET', KEYS[1], 'command_id', ARGV[2], 'fingerprint', ARGV[1], 'response', ARGV[6])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
for i = 4, 5 do
  if KEYS[i] ~= '' then
    redis.call('RPUSH', KEYS[i], ARGV[2])
    redis.call('EXPIRE', KEYS[i], tonumber(ARGV[4]))
  end
end
redis.call('LPUSH', KEYS[3], ARGV[5])
-- Watched by the sweeper until it ends (first look after the grace period): the record is the truth.
local t = redis.call('TIME')
redis.call('ZADD', '""" + keys.ACTIVE_ZSET + """', tonumber(t[1]) * 1000 + """ + str(SWEEP_GRACE_MS) + """, ARGV[2])
return {'new', ARGV[2], ARGV[1], ARGV[6]}
"""

# KEYS: command hash.  ARGV: to status, allowed-from csv ('' = any non-terminal), now, channel, field/value...
TRANSITION_LUA = TRANSITION_FN + """
return transition(KEYS[1], string.sub(KEYS[1], """ + str(len(keys.COMMAND_PREFIX) + 1) + """), ARGV[1], ARGV[2],
                  ARGV[3], ARGV[4], {unpack(ARGV, 5)})
"""


# Per-call order. A command may be sent only when every command accepted before it on the same call is
# out of its way: sent and resolved, or sent and of a kind that does not hold the call (background media,
# which still holds back the next media operation: ACS allows one at a time, 400/8500), or past its
# outcome deadline (a lost event must not stall a call). Reading command hashes that are not in KEYS is
# fine on a single Redis (not on Cluster, which callq does not support).
# Interrupts (hang up, cancel an invitation, cancel media) wait for earlier commands to be sent, never for
# their outcomes: they exist to cut those short.
# ARGV of both scripts ends with: key prefix of command hashes, now ms, and the non-blocking, media and
# interrupt types as csv.
_BLOCKS = """
local prefix, now = ARGV[#ARGV - 4], tonumber(ARGV[#ARGV - 3])
local nonblocking, media, interrupts = ARGV[#ARGV - 2], ARGV[#ARGV - 1], ARGV[#ARGV]
local function listed(csv, t) return string.find(',' .. csv .. ',', ',' .. t .. ',', 1, true) ~= nil end
-- Does the earlier command `id` keep a command of type `t` from being sent now?
local function blocks(id, t)
  local st = redis.call('HMGET', prefix .. id, 'status', 'type', 'wait_deadline')
  if st[1] == 'queued' or st[1] == 'running' then return true end
  if st[1] ~= 'waiting' or tonumber(st[3] or '0') <= now or listed(interrupts, t) then return false end
  if not listed(nonblocking, st[2]) then return true end
  return listed(media, st[2]) and listed(media, t)
end
"""

# Everything a worker does before it sends a command, in one round trip: read the command, check its turn on
# its call, pay the shared ACS budget for its request (ratelimit.GCRA_FN; nothing is paid for a command
# that may not go), claim it. The call's command list is named by the record, so it is read here without
# being declared in KEYS (like the command hashes above; single Redis, not Cluster).
# KEYS: command hash, the budget's theoretical-arrival-time and pause keys.
# ARGV: lease ms, now iso, the budget's emission interval ms and burst, then the common ones.
# Returns {'missing'}, {'done', status, call}, {'leased'}, {'blocked', parks}, {'throttled', wait ms, type},
# or {'claimed', attempts, status before, the record as field/value...}.
CLAIM_LUA = _BLOCKS + GCRA_FN + """
local rec = redis.call('HGETALL', KEYS[1])
if #rec == 0 then return {'missing'} end
local f = {}
for i = 1, #rec, 2 do f[rec[i]] = rec[i + 1] end
local status, call = f['status'], f['call_connection_id'] or ''
if status ~= 'queued' and status ~= 'running' then return {'done', status, call} end
if tonumber(f['lease_until'] or '0') > now then return {'leased'} end
if call ~= '' then
  local list = '""" + _CALL_LIST[0] + """' .. call .. '""" + _CALL_LIST[1] + """'
  for _, id in ipairs(redis.call('LRANGE', list, 0, -1)) do
    if id == f['id'] then break end
    if blocks(id, f['type']) then
      redis.call('HSET', KEYS[1], 'parked', '1')
      return {'blocked', tostring(redis.call('HINCRBY', KEYS[1], 'parks', 1))}
    end
  end
end
local wait = gcra(KEYS[2], KEYS[3], tonumber(ARGV[3]), tonumber(ARGV[4]))
if wait > 0 then return {'throttled', wait, f['type']} end
redis.call('HSET', KEYS[1], 'status', 'running', 'lease_until', tostring(now + tonumber(ARGV[1])),
           'updated_at', ARGV[2], 'parked', '')
-- Third: the status before this claim; 'running' means an earlier attempt died while sending.
return {'claimed', tostring(redis.call('HINCRBY', KEYS[1], 'attempts', 1)), status, rec}
"""

# What ACS answered a command's request, in one round trip: its fields; for a connect, the call ACS made
# (the command heads the call's list: an early CallConnected can let later commands be accepted before this
# response); for a recording start, the recording (after the fields, so whoever sees the command resolved
# sees its recording id); then running → ``to`` (waiting, or succeeded when the answer is the outcome).
# A command that now waits for its event is listed as waiting and under its outcome deadline in the same
# step (``DUE_LUA`` reads that index), so no crash can leave a wait without its deadline. The fields are
# recorded even if an early event already resolved the command: the response is still true.
# KEYS: 1 command hash; 2 hash and 3 command list of the call ACS made, 4 its room's call key; 5 hash and
# 6 command list of the recording ACS started, 7 the hash of the call it records ('' for what ACS did not
# make)
# ARGV: 1 to, 2 now iso, 3 ttl s, 4 wait deadline ms, 5 client, 6 room id, 7 call made, 8 recording id,
#       9 the command's call, then field/value...
SENT_LUA = CHECK_TYPES_FN + TRANSITION_FN + """
local bad = check_types({'hash', 'hash', 'list', 'string', 'hash', 'list', 'hash'})
if bad then return bad end
local id = string.sub(KEYS[1], """ + str(len(keys.COMMAND_PREFIX) + 1) + """)
local ttl = tonumber(ARGV[3])
if KEYS[2] ~= '' then
  redis.call('HSETNX', KEYS[2], 'state', 'connecting')
  redis.call('HSET', KEYS[2], 'client', ARGV[5], 'room_id', ARGV[6], 'connect_command', id)
  redis.call('LPUSH', KEYS[3], id)
  if KEYS[4] ~= '' then redis.call('SET', KEYS[4], ARGV[7], 'EX', ttl) end
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 10))
if KEYS[5] ~= '' then
  redis.call('HSET', KEYS[5], 'client', ARGV[5], 'call_connection_id', ARGV[9], 'start_command', id)
  redis.call('RPUSH', KEYS[6], id)
  if KEYS[7] ~= '' then redis.call('HSET', KEYS[7], 'recording_id', ARGV[8]) end
  redis.call('EXPIRE', KEYS[5], ttl)
  redis.call('EXPIRE', KEYS[6], ttl)
end
local moved = transition(KEYS[1], id, ARGV[1], 'running', ARGV[2], '""" + keys.COMMAND_DONE_CHANNEL + """',
                         {'lease_until', '0'})
if moved[1] == 'applied' and ARGV[1] == 'waiting' then
  redis.call('ZADD', '""" + keys.OPS_WAITING + """', ARGV[4], id)
  redis.call('ZADD', '""" + keys.WAIT_DEADLINES + """', ARGV[4], id)
end
return moved
"""

# Waiting commands whose outcome deadline has passed, for the caller to reconcile: each is re-armed
# ``ARGV[2]`` ms ahead as it is handed out, so among many workers scanning, one takes it, and if its
# reconcile is lost (a crash, a lost message) it comes round again. Entries of commands no longer waiting
# are dropped (a terminal transition removes its own; this catches anything else).
# KEYS: 1 the deadline index. ARGV: 1 now ms, 2 re-arm ms, 3 at most this many, 4 command key prefix
DUE_LUA = """
local due, out = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3])), {}
for _, id in ipairs(due) do
  if redis.call('HGET', ARGV[4] .. id, 'status') == 'waiting' then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), id)
    out[#out + 1] = id
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# The call's first unsent command, if it parked waiting for its turn and nothing before it holds it back
# any more: unparks it and returns {id, type}.  KEYS: call's command list.  ARGV: the common ones.
KICK_LUA = _BLOCKS + """
local before = {}
for _, id in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  local st = redis.call('HMGET', prefix .. id, 'status', 'parked', 'type')
  if st[1] == 'queued' or st[1] == 'running' then
    if st[2] ~= '1' then return {} end
    for _, earlier in ipairs(before) do
      if blocks(earlier, st[3]) then return {} end
    end
    redis.call('HSET', prefix .. id, 'parked', '')
    return {id, st[3]}
  end
  before[#before + 1] = id
end
return {}
"""


def announced(message: str) -> tuple[str, dict[str, str] | None]:
    """The command id and record of a ``TRANSITION_FN`` announcement; no record (read it) from an older callq."""
    command_id, _, doc = message.partition(" ")
    try:
        record = json.loads(doc) if doc else None
    except ValueError:  # never from our script; but a bad message must cost a read, not the subscription
        record = None
    return command_id, record if isinstance(record, dict) else None


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def flatten(fields: dict[str, Any]) -> list[str]:
    """Hash fields as an ARGV list; dicts and lists are stored as JSON, None as ''."""
    out: list[str] = []
    for name, value in fields.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, separators=(",", ":"), sort_keys=True)
        out += [name, "" if value is None else str(value)]
    return out


def transition_args(to: str, fields: dict[str, Any], *, only_from: tuple[str, ...] = ()) -> list[str]:
    return [to, ",".join(only_from), now_iso(), keys.COMMAND_DONE_CHANNEL, *flatten(fields)]


def new_command(
    *, command_id: str, client: str, type_: str, params: dict[str, Any], idempotency_key: str,
    call_connection_id: str = "", room_id: str = "", recording_id: str = "",
) -> dict[str, Any]:
    now = now_iso()
    return {
        "id": command_id, "client": client, "type": type_, "status": "queued", "attempts": 0,
        "params": params, "idempotency_key": idempotency_key, "call_connection_id": call_connection_id,
        "room_id": room_id, "recording_id": recording_id, "created_at": now, "updated_at": now,
    }


def _json(raw: str | None) -> Any:
    return json.loads(raw) if raw else None


def render(record: dict[str, str]) -> dict[str, Any]:
    """The public command resource for a stored command hash."""
    cid = record["id"]
    cc = record.get("call_connection_id") or None
    links = {"self": f"/v1/commands/{cid}"}
    if cc:
        links["call"] = f"/v1/calls/{cc}"
    return {
        "id": cid,
        "type": record.get("type"),
        "status": record.get("status"),
        "call_connection_id": cc,
        "room_id": record.get("room_id") or None,
        "recording_id": record.get("recording_id") or None,
        "attempts": int(record.get("attempts") or 0),
        "created_at": record.get("created_at"),
        "updated_at": record.get("updated_at"),
        "resolved_at": record.get("resolved_at") or None,
        "result": _json(record.get("result")),
        "error": _json(record.get("error")),
        "resolved_by": _json(record.get("resolved_by")),
        "links": links,
    }
