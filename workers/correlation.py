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
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from workers import keys, ledger
from workers.operations import OPERATIONS

PREFIX = "Microsoft.Communication."
TIMELINE_MAXLEN = 10_000


@dataclass
class IngestReport:
    stored: int = 0
    duplicates: int = 0
    resolved: list[str] = field(default_factory=list)
    lanes: set[str] = field(default_factory=set)  # calls whose next command may now have its turn


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


async def _candidates(r: aioredis.Redis, event: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Commands this event may resolve: its operationContext, plus call-scoped fallbacks."""
    data = event.get("data") or {}
    kind, cc = short_type(event), data.get("callConnectionId")
    ids = [data["operationContext"]] if data.get("operationContext") else []
    if cc and kind == "CallDisconnected":
        ids += await r.lrange(keys.call_commands_key(cc), 0, -1)
    elif cc and kind == "CallConnected" and not ids:
        connect = await r.hget(keys.call_key(cc), "connect_command")
        ids += [connect] if connect else []
    if kind == "RecordingStateChanged" and data.get("recordingId"):
        ids += await r.lrange(keys.recording_commands_key(data["recordingId"]), 0, -1)
    found = await _commands(r, list(dict.fromkeys(ids)))
    return {cid: c for cid, c in found.items() if c["status"] not in ledger.TERMINAL}


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


async def ingest(r: aioredis.Redis, events: list[dict[str, Any]], *, dedup_ttl_s: int, ttl_s: int) -> IngestReport:
    """Store and apply a batch of CloudEvents. Safe to call again with the same events."""
    report = IngestReport()
    for event in events:
        event_id = str(event.get("id") or "")
        if not event_id or await r.exists(keys.event_seen_key(event_id)):
            report.duplicates += 1
            continue
        commands = await _candidates(r, event)
        cc = (event.get("data") or {}).get("callConnectionId") or "unknown"
        pipe = r.pipeline(transaction=True)
        pipe.set(keys.event_seen_key(event_id), "1", ex=dedup_ttl_s)
        pipe.xadd(keys.call_events_key(cc), {"event": json.dumps(event, separators=(",", ":"))},
                  maxlen=TIMELINE_MAXLEN, approximate=True)
        pipe.expire(keys.call_events_key(cc), ttl_s)
        planned = []
        for cid, cmd in commands.items():
            step = outcome(cmd["type"], event)
            if step is not None:
                status, fields = step
                pipe.eval(ledger.TRANSITION_LUA, 1, keys.command_key(cid), *ledger.transition_args(status, fields))
                planned.append(cid)
                if short_type(event) == "RecordingStateChanged":
                    break  # one state change answers one command: the oldest pending that expects it
        updates = _call_updates(event, commands)
        if updates and cc != "unknown":
            pipe.hset(keys.call_key(cc), mapping=updates)
            pipe.expire(keys.call_key(cc), ttl_s)
        recording_id = (event.get("data") or {}).get("recordingId")
        if short_type(event) == "RecordingStateChanged" and recording_id:
            # Kept so a start whose HTTP response comes after this event can still be resolved by it.
            pipe.hset(keys.recording_key(recording_id), mapping={
                "state": (event.get("data") or {}).get("state") or "", "last_event": json.dumps(event)})
            pipe.expire(keys.recording_key(recording_id), ttl_s)
        results = await pipe.execute()
        report.stored += 1
        applied = [r_ for r_ in results[3:3 + len(planned)]]
        done = [cid for cid, res in zip(planned, applied, strict=True) if res[0] == "applied"]
        report.resolved += done
        report.lanes |= {commands[cid]["call_connection_id"] for cid in done if commands[cid]["call_connection_id"]}
    return report
