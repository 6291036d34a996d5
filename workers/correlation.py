"""Resolve commands from ACS callback events, durably, whichever process receives them.

An event resolves the command named by its ``operationContext`` (every command sends its id there).
Events that carry none fall back to the call they belong to: ``CallConnected`` resolves the call's
connect command, ``CallDisconnected`` resolves pending hang-ups and fails every other pending command
of that call with ``call_ended``. Transitions go through ``ledger.TRANSITION_FN``, so a command is
resolved at most once and never moves backwards; an event for a terminal command, a duplicate, or an
event for an unknown call is still kept in the call's timeline.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from workers import keys, ledger, metrics
from workers.operations import OPERATIONS, Operation
from workers.scripts import AutoPipeline

PREFIX = "Microsoft.Communication."
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder for every event, not one per json.dumps call


@dataclass
class IngestReport:
    stored: int = 0
    duplicates: int = 0
    resolved: list[str] = field(default_factory=list)
    lanes: set[str] = field(default_factory=set)  # calls whose next command may now have its turn
    finished: dict[str, dict[str, str | None]] = field(default_factory=dict)  # resolved: their metrics.FINISH_FIELDS


_STRING_FIELDS = ("callConnectionId", "serverCallId", "correlationId", "operationContext", "recordingId",
                  "invitationId", "state")


def clean(event: dict[str, Any]) -> dict[str, Any]:
    """The event with every field callq reads in the shape callq expects; odd-typed ones are dropped.

    A signed event is still ACS's word, but its content is never trusted to be well-formed.
    """
    data = dict(event["data"]) if isinstance(event.get("data"), dict) else {}
    for name in _STRING_FIELDS:
        if name in data and not isinstance(data[name], str):
            del data[name]
    if not isinstance(data.get("resultInformation"), dict):
        data.pop("resultInformation", None)
    return {**event, "id": str(event.get("id") or ""), "type": str(event.get("type") or ""), "data": data}


def short_type(event: dict[str, Any]) -> str:
    return str(event.get("type", "")).removeprefix(PREFIX)


def _error_from(data: dict[str, Any], code: str) -> dict[str, Any]:
    info = data.get("resultInformation") or {}
    return {"code": code, "message": info.get("message") or code.replace("_", " "),
            "acs_code": info.get("code"), "acs_subcode": info.get("subCode")}


def _result_from(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    result = {"call_connection_id": data.get("callConnectionId"), "server_call_id": data.get("serverCallId"),
              "correlation_id": data.get("correlationId")}
    if kind == "CallDisconnected":
        result["result_information"] = data.get("resultInformation")
    return result


def _tag(op: Operation, kind: str, data: dict[str, Any]) -> str | None:
    """What an event of this kind says of a pending command of this operation: the name of its step, if any."""
    if op.recording_state and kind == "RecordingStateChanged":
        return "recorded" if data.get("state") == op.recording_state else None
    if kind in op.succeeds_on:
        return "succeeded"
    if kind in op.fails_on:
        return "failed"
    return "ended" if kind == "CallDisconnected" else None


def _step(tag: str, kind: str, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The transition of a step; it depends on the event only, never on which command takes it."""
    data = event.get("data") or {}
    resolved_by = {"type": kind, "id": event.get("id"), "time": event.get("time")}
    if tag == "recorded":
        return "succeeded", {"result": {"recording_id": data.get("recordingId"), "state": data.get("state")},
                             "resolved_by": resolved_by}
    if tag == "succeeded":
        fields = {"result": _result_from(kind, data), "resolved_by": resolved_by}
        if kind == "CallConnected" and data.get("callConnectionId"):
            # The event may beat connect's HTTP response: it names the call as well as the response does.
            fields["call_connection_id"] = data["callConnectionId"]
        return "succeeded", fields
    if tag == "failed":
        return "failed", {"error": _error_from(data, "acs_failed"), "resolved_by": resolved_by}
    return "failed", {"error": _error_from(data, "call_ended") | {"message": "The call ended before this "
                                                                 "command completed."},
                      "resolved_by": resolved_by}


def outcome(command_type: str, event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The transition an event implies for a command of this type, or None when it says nothing of it."""
    op = OPERATIONS.get(command_type)
    kind = short_type(event)
    tag = None if op is None else _tag(op, kind, event.get("data") or {})
    return None if tag is None else _step(tag, kind, event)


# One event, in one script call and atomically: dedupe, store, find the commands it may resolve, resolve them,
# update the call. Python decides beforehand what the event means for each command type (``steps``); the
# script decides which commands it reaches, reading them as they are at that instant.
#
# Candidates: an ``operationContext`` names its command. Without one (real 2024 samples of CallConnected,
# CallDisconnected and SendDtmfTonesCompleted lack it) the event answers the call's oldest pending command
# of a type it resolves. CallDisconnected answers every pending command of the call; a
# RecordingStateChanged answers the oldest pending command of its recording that expects that state; a
# CancelAddParticipantSucceeded also fails the pending add whose invitation it withdrew (ACS sends that add
# nothing more).
#
# KEYS: 1 seen marker, 2 the call's event stream, 3 call hash, 4 call's command list, 5 recording hash,
#       6 recording's command list ('' for those the event names no call / recording for)
# ARGV: 1 dedupe ttl, 2 ttl, 3 stream MINID, 4 event json, 5 operationContext, 6 short type,
#       7 '1' when the event answers every candidate (else the first), 8 recording state, 9 steps json
#       ('' = the event resolves nothing; see _steps), 10 now, 11 late-event json ('' without a context),
#       12 withdrawn invitation id, 13 its failure fields json, 14 server call id
# Returns {'duplicate'} or {'stored', 'orphan' | '', {id, call, {FINISH_FIELDS...}} for each command resolved}.
_FINISH_FIELDS_LUA = ", ".join(f"'{name}'" for name in metrics.FINISH_FIELDS)
INGEST_LUA = ledger.CHECK_TYPES_FN + ledger.TRANSITION_FN + """
local bad = check_types({'string', 'stream', 'hash', 'list', 'hash', 'list'})
if bad then return bad end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[1])) then return {'duplicate'} end
local ttl, now, kind, context = tonumber(ARGV[2]), ARGV[10], ARGV[6], ARGV[5]
local prefix, channel = '""" + keys.COMMAND_PREFIX + """', '""" + keys.COMMAND_DONE_CHANNEL + """'
if KEYS[5] ~= '' then
  -- Stored before the recording's commands are read, while a worker registers a start before it reads
  -- this: whichever runs second sees the other (runtime._catch_up_recording).
  redis.call('HSET', KEYS[5], 'state', ARGV[8], 'last_event', ARGV[4])
  redis.call('EXPIRE', KEYS[5], ttl)
end
local ids, listed = {}, {}
local function add(id)
  if id and id ~= '' and not listed[id] then listed[id] = true; ids[#ids + 1] = id end
end
add(context)
if KEYS[6] ~= '' then
  for _, id in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do add(id) end
elseif KEYS[4] ~= '' and (kind == 'CallDisconnected' or context == '') then
  if kind == 'CallConnected' then add(redis.call('HGET', KEYS[3], 'connect_command')) end
  for _, id in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do add(id) end
end
local found, connect = {}, nil
for _, id in ipairs(ids) do
  local c = redis.call('HMGET', prefix .. id, 'type', 'status', 'client', 'call_connection_id')
  if c[1] then
    local cmd = {id = id, type = c[1], status = c[2], client = c[3] or '', cc = c[4] or ''}
    cmd.terminal = cmd.status == 'succeeded' or cmd.status == 'failed'
    found[#found + 1] = cmd
    if cmd.type == 'connect' and not cmd.terminal and not connect then connect = cmd end
  end
end
-- Stream ids are millisecond timestamps, so MINID trims what is older than the retention.
redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[3], '*', 'event', ARGV[4])
redis.call('EXPIRE', KEYS[2], ttl)
-- Decoded only when there is a command to apply it to (most events only join the timeline).
local plan, resolved = (#found > 0 and ARGV[9] ~= '') and cjson.decode(ARGV[9]) or {types = {}, steps = {}}, {}
for _, cmd in ipairs(found) do
  local tag = plan.types[cmd.type]
  local step = tag and plan.steps[tag]
  if step then
    if cmd.terminal then
      if cmd.id == context then redis.call('HSET', prefix .. cmd.id, 'late_event', ARGV[11]) end  -- kept, not applied
    else
      if transition(prefix .. cmd.id, cmd.id, step[1], '', now, channel, step[2])[1] == 'applied' then
        resolved[#resolved + 1] = cmd
      end
      if ARGV[7] ~= '1' then break end  -- one event answers one command: the one it names, else the oldest
    end
  end
end
if ARGV[12] ~= '' and KEYS[4] ~= '' then
  local fields = cjson.decode(ARGV[13])
  for _, id in ipairs(redis.call('LRANGE', KEYS[4], 0, -1)) do
    local c = redis.call('HMGET', prefix .. id, 'type', 'status', 'result', 'call_connection_id')
    if c[1] == 'add_participant' and c[2] ~= 'succeeded' and c[2] ~= 'failed' and c[3] then
      local ok, result = pcall(cjson.decode, c[3])
      if ok and type(result) == 'table' and result['invitation_id'] == ARGV[12] and
          transition(prefix .. id, id, 'failed', '', now, channel, fields)[1] == 'applied' then
        found[#found + 1] = {id = id}
        resolved[#resolved + 1] = {id = id, cc = c[4] or ''}
      end
    end
  end
end
if KEYS[3] ~= '' and kind == 'CallConnected' then
  redis.call('HSET', KEYS[3], 'state', 'connected', 'server_call_id', ARGV[14])
  if connect then redis.call('HSET', KEYS[3], 'connect_command', connect.id, 'client', connect.client) end
  redis.call('EXPIRE', KEYS[3], ttl)
elseif KEYS[3] ~= '' and kind == 'CallDisconnected' then
  redis.call('HSET', KEYS[3], 'state', 'disconnected')
  redis.call('EXPIRE', KEYS[3], ttl)
end
local out = {'stored', #found == 0 and 'orphan' or ''}
for _, cmd in ipairs(resolved) do
  redis.call('ZREM', '""" + metrics.WAITING_KEY + """', cmd.id)
  out[#out + 1] = {cmd.id, cmd.cc, redis.call('HMGET', prefix .. cmd.id, """ + _FINISH_FIELDS_LUA + """)}
end
return out
"""


def _late(event: dict[str, Any]) -> str:
    return json.dumps({"type": short_type(event), "id": event.get("id"), "time": event.get("time"),
                       "result_information": (event.get("data") or {}).get("resultInformation")})


def _steps(event: dict[str, Any]) -> str:
    """What the event means for a pending command of each type, as INGEST_LUA reads it.

    ``{"types": {command type: step name}, "steps": {step name: [status, [field, value, ...]]}}``: the
    fields of a step depend on the event alone, so each is built (and sent) once however many types take it.
    """
    kind, data = short_type(event), event["data"]
    types = _tags(kind, data.get("state") if kind == "RecordingStateChanged" else None)
    steps: dict[str, list[Any]] = {}
    for tag in set(types.values()):
        status, fields = _step(tag, kind, event)
        steps[tag] = [status, ledger.flatten(fields)]
    return _COMPACT.encode({"types": types, "steps": steps}) if types else ""


@functools.lru_cache(maxsize=256)  # event kinds (and recording states) are few; the answer depends on nothing else
def _tags(kind: str, recording_state: str | None) -> dict[str, str]:
    data = {"state": recording_state} if recording_state is not None else {}
    return {type_: tag for type_, op in OPERATIONS.items() if (tag := _tag(op, kind, data)) is not None}


_CANCELED = {"code": "invitation_canceled", "message": "The invitation was canceled before it was answered."}


def _script_args(event: dict[str, Any], *, dedup_ttl_s: int, ttl_s: int,
                 retention_s: int) -> tuple[list[str], list[str]]:
    """KEYS and ARGV of INGEST_LUA for one cleaned event."""
    data, kind = event["data"], short_type(event)
    cc, context, rec = data.get("callConnectionId") or "", data.get("operationContext") or "", ""
    if kind == "RecordingStateChanged":
        rec = data.get("recordingId") or ""
    invitation = data.get("invitationId") or "" if kind == "CancelAddParticipantSucceeded" and cc else ""
    canceled = {"error": _CANCELED, "resolved_by": {"type": kind, "id": event["id"]}}
    keys_ = [keys.event_seen_key(event["id"]), keys.call_events_key(cc or "unknown"),
             keys.call_key(cc) if cc else "", keys.call_commands_key(cc) if cc else "",
             keys.recording_key(rec) if rec else "", keys.recording_commands_key(rec) if rec else ""]
    min_id = str(int((time.time() - retention_s) * 1000))
    args = [str(dedup_ttl_s), str(ttl_s), min_id, _COMPACT.encode(event), context,
            kind, "1" if kind == "CallDisconnected" else "", data.get("state") or "", _steps(event),
            ledger.now_iso(), _late(event) if context else "", invitation,
            _COMPACT.encode(ledger.flatten(canceled)) if invitation else "",
            data.get("serverCallId") or ""]
    return keys_, args


async def ingest(scripts: AutoPipeline, events: list[dict[str, Any]], *, dedup_ttl_s: int, ttl_s: int,
                 retention_s: int) -> IngestReport:
    """Store and apply a batch of CloudEvents, in order, one script call each. Safe to call again with the same events.

    Each call joins the API's pipeline (``scripts.AutoPipeline``), so concurrent POSTs share round trips; the
    next event of this batch is sent only once the last one's answer is in. A duplicate (same CloudEvent id
    within ``dedup_ttl_s``) changes nothing.
    """
    report = IngestReport()
    for raw in events:
        event = clean(raw)
        if not event["id"]:
            report.duplicates += 1  # nothing to dedupe by: ACS always sends one, so this is not ACS
            continue
        keys_, args = _script_args(event, dedup_ttl_s=dedup_ttl_s, ttl_s=ttl_s, retention_s=retention_s)
        reply = await scripts.run(INGEST_LUA, keys_, args)
        if reply[0] == "duplicate":
            report.duplicates += 1
            continue
        report.stored += 1
        data = event["data"]
        metrics.event(short_type(event), data.get("callConnectionId"), data.get("operationContext"),
                      orphan=reply[1] == "orphan")
        for cid, cc, values in reply[2:]:
            report.resolved.append(cid)
            report.finished[cid] = dict(zip(metrics.FINISH_FIELDS, values, strict=True))
            if cc:
                report.lanes.add(cc)
    return report

