"""Resolve commands from ACS callback events, durably, whichever process receives them.

An event resolves the command named by its ``operationContext`` (every command sends its id there).
Events that carry none fall back to the call they belong to: ``CallConnected`` resolves the call's
connect command, ``CallDisconnected`` resolves pending hang-ups and fails every other pending command
of that call with ``call_ended``. Transitions go through ``ledger.TRANSITION_LUA``, so a command is
resolved at most once and never moves backwards; an event for a terminal command, a duplicate, or an
event for an unknown call is still kept in the call's timeline.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from workers import keys, ledger, metrics
from workers.operations import OPERATIONS

PREFIX = "Microsoft.Communication."


@dataclass
class IngestReport:
    stored: int = 0
    duplicates: int = 0
    resolved: list[str] = field(default_factory=list)
    lanes: set[str] = field(default_factory=set)  # calls whose next command may now have its turn


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


def outcome(command_type: str, event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The transition an event implies for a command of this type, or None when it says nothing of it."""
    kind, data = short_type(event), event.get("data") or {}
    op = OPERATIONS.get(command_type)
    if op is None:
        return None
    resolved_by = {"type": kind, "id": event.get("id"), "time": event.get("time")}
    if op.recording_state and kind == "RecordingStateChanged":
        if data.get("state") != op.recording_state:
            return None
        return "succeeded", {"result": {"recording_id": data.get("recordingId"), "state": data.get("state")},
                             "resolved_by": resolved_by}
    if kind in op.succeeds_on:
        fields = {"result": _result_from(kind, data), "resolved_by": resolved_by}
        if kind == "CallConnected" and data.get("callConnectionId"):
            # The event may beat connect's HTTP response: it names the call as well as the response does.
            fields["call_connection_id"] = data["callConnectionId"]
        return "succeeded", fields
    if kind in op.fails_on:
        return "failed", {"error": _error_from(data, "acs_failed"), "resolved_by": resolved_by}
    if kind == "CallDisconnected":
        return "failed", {"error": _error_from(data, "call_ended") | {"message": "The call ended before this "
                                                                      "command completed."},
                          "resolved_by": resolved_by}
    return None


async def _commands(r: aioredis.Redis, ids: list[str]) -> dict[str, dict[str, str]]:
    pipe = r.pipeline(transaction=False)
    for cid in ids:
        pipe.hmget(keys.command_key(cid), "type", "status", "client", "call_connection_id")
    found = {}
    for cid, (type_, status, client, cc) in zip(ids, await pipe.execute(), strict=True):
        if type_ is not None:
            found[cid] = {"type": type_, "status": status, "client": client, "call_connection_id": cc or ""}
    return found


async def _candidates(r: aioredis.Redis, event: dict[str, Any]) -> tuple[dict[str, dict[str, str]], bool]:
    """Commands this event may resolve, oldest first, and whether it resolves all of them or only the first.

    An ``operationContext`` names its command. Without one (real 2024 samples of CallConnected,
    CallDisconnected and SendDtmfTonesCompleted lack it) the event answers the call's oldest pending
    command of a type it resolves. CallDisconnected answers every pending command of the call; a
    RecordingStateChanged answers the oldest pending command of its recording that expects that state.
    """
    data = event.get("data") or {}
    kind, cc = short_type(event), data.get("callConnectionId")
    context = data.get("operationContext")
    ids = [context] if context else []
    if kind == "RecordingStateChanged" and data.get("recordingId"):
        ids += await r.lrange(keys.recording_commands_key(data["recordingId"]), 0, -1)
    elif cc and (kind == "CallDisconnected" or not context):
        if kind == "CallConnected":
            connect = await r.hget(keys.call_key(cc), "connect_command")
            ids += [connect] if connect else []
        ids += await r.lrange(keys.call_commands_key(cc), 0, -1)
    found = await _commands(r, list(dict.fromkeys(ids)))
    return found, kind == "CallDisconnected"


async def _canceled_adds(r: aioredis.Redis, event: dict[str, Any]) -> list[str]:
    """Pending adds whose invitation this CancelAddParticipantSucceeded withdrew (ACS sends them nothing)."""
    data = event.get("data") or {}
    cc, invitation = data.get("callConnectionId"), data.get("invitationId")
    if short_type(event) != "CancelAddParticipantSucceeded" or not cc or not invitation:
        return []
    ids = await r.lrange(keys.call_commands_key(cc), 0, -1)
    pipe = r.pipeline(transaction=False)
    for cid in ids:
        pipe.hmget(keys.command_key(cid), "type", "status", "result")
    found = []
    for cid, (type_, status, result) in zip(ids, await pipe.execute(), strict=True):
        if type_ == "add_participant" and status not in ledger.TERMINAL and result and \
                json.loads(result).get("invitation_id") == invitation:
            found.append(cid)
    return found


def _late(event: dict[str, Any]) -> str:
    return json.dumps({"type": short_type(event), "id": event.get("id"), "time": event.get("time"),
                       "result_information": (event.get("data") or {}).get("resultInformation")})


def _call_updates(event: dict[str, Any], commands: dict[str, dict[str, str]]) -> dict[str, str]:
    data, kind = event.get("data") or {}, short_type(event)
    updates: dict[str, str] = {}
    if kind == "CallConnected":
        updates = {"state": "connected", "server_call_id": data.get("serverCallId") or ""}
        connect = next((cid for cid, c in commands.items() if c["type"] == "connect"), None)
        if connect:
            updates |= {"connect_command": connect, "client": commands[connect]["client"]}
    elif kind == "CallDisconnected":
        updates = {"state": "disconnected"}
    return updates


async def ingest(r: aioredis.Redis, events: list[dict[str, Any]], *, dedup_ttl_s: int, ttl_s: int,
                 retention_s: int) -> IngestReport:
    """Store and apply a batch of CloudEvents. Safe to call again with the same events.

    A duplicate (same CloudEvent id within ``dedup_ttl_s``) changes nothing. Two deliveries of one event
    racing each other may both be stored in the timeline, but transitions are idempotent.
    """
    report = IngestReport()
    for raw in events:
        event = clean(raw)
        event_id = event["id"]
        if not event_id or await r.exists(keys.event_seen_key(event_id)):
            report.duplicates += 1
            continue
        data = event.get("data") or {}
        if short_type(event) == "RecordingStateChanged" and data.get("recordingId"):
            # Stored *before* looking for the recording's commands, while the worker registers a start
            # *before* reading this: whichever runs second sees the other (runtime._catch_up_recording).
            rec = keys.recording_key(data["recordingId"])
            await r.hset(rec, mapping={"state": data.get("state") or "", "last_event": json.dumps(event)})
            await r.expire(rec, ttl_s)
        found, resolves_all = await _candidates(r, event)
        cc = data.get("callConnectionId") or "unknown"
        pipe = r.pipeline(transaction=True)
        pipe.set(keys.event_seen_key(event_id), "1", ex=dedup_ttl_s)
        # Stream ids are millisecond timestamps, so MINID trims what is older than the retention.
        pipe.xadd(keys.call_events_key(cc), {"event": json.dumps(event, separators=(",", ":"))},
                  minid=int((time.time() - retention_s) * 1000), approximate=True)
        pipe.expire(keys.call_events_key(cc), ttl_s)
        planned: list[str] = []
        for cid, cmd in found.items():
            step = outcome(cmd["type"], event)
            if step is None:
                continue
            if cmd["status"] in ledger.TERMINAL:
                if cid == data.get("operationContext"):
                    pipe.hset(keys.command_key(cid), "late_event", _late(event))  # kept, not applied
                continue
            status, fields = step
            pipe.eval(ledger.TRANSITION_LUA, 1, keys.command_key(cid), *ledger.transition_args(status, fields))
            planned.append(cid)
            if not resolves_all:
                break  # one event answers one command: the one it names, else the oldest that fits
        for cid in await _canceled_adds(r, event):
            error = {"code": "invitation_canceled", "message": "The invitation was canceled before it was answered."}
            pipe.eval(ledger.TRANSITION_LUA, 1, keys.command_key(cid), *ledger.transition_args(
                "failed", {"error": error, "resolved_by": {"type": short_type(event), "id": event_id}}))
            planned.append(cid)
            found.setdefault(cid, {"type": "add_participant", "status": "waiting", "client": "",
                                   "call_connection_id": cc})
        pending = {cid: c for cid, c in found.items() if c["status"] not in ledger.TERMINAL}
        updates = _call_updates(event, pending)
        if updates and cc != "unknown":
            pipe.hset(keys.call_key(cc), mapping=updates)
            pipe.expire(keys.call_key(cc), ttl_s)
        results = await pipe.execute()
        report.stored += 1
        metrics.event(short_type(event), data.get("callConnectionId"), data.get("operationContext"), orphan=not found)
        evals = [res for res in results if isinstance(res, list)]
        done = [cid for cid, res in zip(planned, evals, strict=True) if res[0] == "applied"]
        report.resolved += done
        report.lanes |= {found[cid]["call_connection_id"] for cid in done if found[cid]["call_connection_id"]}
    return report
