"""What the operator page shows of rooms: the client's managed rooms, and one room's automation, runs and timeline.

Read from the records the room scripts write (``workers.rooms``, room_event.lua, ``workers.automations``); like
``api.ui_data``, everything here is plain text for the autoescaped templates. A value that is not what those
writers write (malformed JSON, a time that does not parse) shows as unknown rather than failing the page.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from api.acs_event_fields import acs_fields
from api.ui_data import Note
from workers import keys

ROOMS_SHOWN = 50
RUNS_SHOWN = 20
EVENTS_SHOWN = 300
PREFIX = "Microsoft.Communication."


def _object(raw: Any) -> dict[str, Any]:
    """A JSON object from Redis or an event, or ``{}`` for anything else (missing, malformed, not an object)."""
    if isinstance(raw, dict):
        return raw
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _when(iso: str | None) -> datetime | None:
    try:
        parsed = datetime.fromisoformat((iso or "").replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def window_state(valid_from: str | None, valid_until: str | None, now: datetime) -> str:
    """``open``, ``not yet`` or ``over`` at ``now``; ``unknown`` when callq holds no readable window."""
    start, end = _when(valid_from), _when(valid_until)
    if start is None or end is None:
        return "unknown"
    return "not yet" if now < start else "over" if now >= end else "open"


def _steps(automation: dict[str, Any]) -> list[dict[str, str]]:
    """Each step's type and body; one entry per stored step, so a run's ``cmd:{index}`` lines up with it."""
    steps = automation.get("on_call_started")
    return [{"type": str(_object(s).get("type") or "?"),
             "body": json.dumps(_object(s).get("body") or {}, ensure_ascii=False, separators=(", ", ": "))}
            for s in steps] if isinstance(steps, list) else []


def automation(record: dict[str, str], default: str | None) -> dict[str, Any]:
    """The automation a call of this room would run: the room's own, else the client's default (room_event.lua's
    rule), with where it comes from."""
    own = _object(record.get("automation"))
    if own:
        return {"source": "room's own", "steps": _steps(own), "updated_at": str(own.get("updated_at") or "")}
    fallback = _object(default)
    if fallback:
        return {"source": "client default", "steps": _steps(fallback), "updated_at": str(fallback.get("updated_at")
                                                                                         or "")}
    return {"source": "none", "steps": [], "updated_at": ""}


def _room(record: dict[str, str], default: str | None, now: datetime) -> dict[str, Any]:
    return {"id": record.get("id", ""), "valid_from": record.get("valid_from") or "",
            "valid_until": record.get("valid_until") or "",
            "window": window_state(record.get("valid_from"), record.get("valid_until"), now),
            "dial_out": record.get("pstn_dial_out_enabled") == "1", "origin": record.get("origin") or "created",
            "created_at": record.get("acs_created_at") or "", "managed_since": record.get("managed_since") or "",
            "automation": automation(record, default)}


async def _connections(r: Any, client: str, records: list[dict[str, str]]) -> list[dict[str, str] | None]:
    """callq's connection to each room's current call, as ``{"id", "state"}``, or None.

    The automation runner writes the connection it made on the room; a connect sent by hand leaves it only under
    ``room_call_key``. That one counts if it is to the room's current call, or (Event Grid not telling callq of
    the room's calls) if the room knows of no call at all.
    """
    pipe = r.pipeline(transaction=False)
    for record in records:
        pipe.get(keys.room_call_key(record.get("id", "")))
    candidates = [rec.get("call_connection_id") or last or "" for rec, last in zip(records, await pipe.execute(),
                                                                                    strict=True)]
    pipe = r.pipeline(transaction=False)
    for cc in candidates:
        pipe.hmget(keys.call_key(cc or "-"), "client", "state", "server_call_id")
    found: list[dict[str, str] | None] = []
    for record, cc, (owner, state, scid) in zip(records, candidates, await pipe.execute(), strict=True):
        current = record.get("server_call_id") or ""
        ours = cc and owner == client and (not current or not scid or scid == current)
        found.append({"id": cc, "state": state or "connecting"} if ours else None)
    return found


def _call(record: dict[str, str], connection: dict[str, str] | None) -> dict[str, Any] | None:
    """The room's current call as Event Grid reported it (``server_call_id`` '' if it did not), and callq's
    connection to it; None when callq knows of neither."""
    scid = record.get("server_call_id") or ""
    if not scid and connection is None:
        return None
    return {"server_call_id": scid, "state": (record.get("call_state") or "active") if scid else "",
            "started_at": record.get("call_started_at") or "", "ended_at": record.get("call_ended_at") or "",
            "connection": connection}


async def overview(r: Any, client: str, *, now: datetime) -> dict[str, Any]:
    """The overview's rooms: the first ``ROOMS_SHOWN`` by id (the order the API lists them in) and how many more."""
    index = keys.client_rooms_key(client)
    total = int(await r.zcard(index))
    ids = await r.zrangebylex(index, "-", "+", start=0, num=ROOMS_SHOWN)
    pipe = r.pipeline(transaction=False)
    pipe.get(keys.client_automation_key(client))
    for room_id in ids:
        pipe.hgetall(keys.room_key(room_id))
        pipe.zrevrange(keys.room_runs_key(room_id), 0, 0)
    default, *found = await pipe.execute()
    # A room deleted between the two reads, or another client's (an index never holds one): not shown.
    rows = [(rec, last) for rec, last in zip(found[::2], found[1::2], strict=True) if rec.get("client") == client]
    pipe = r.pipeline(transaction=False)
    for rec, last in rows:
        pipe.hget(keys.room_run_key(rec.get("id", ""), last[0] if last else "-"), "state")
    last_runs = await pipe.execute()
    connections = await _connections(r, client, [rec for rec, _ in rows])
    rooms = [{**_room(rec, default, now), "call": _call(rec, connection), "last_run": run_state or ""}
             for (rec, _), run_state, connection in zip(rows, last_runs, connections, strict=True)]
    return {"rooms": rooms, "rooms_more": max(total - len(ids), 0)}


# --- one room ------------------------------------------------------------------------------------------------------

def _error(raw: str | None) -> Note | None:
    error = _object(raw)
    return Note(str(error.get("message") or ""), code=str(error.get("code") or "")) if error else None


async def _runs(r: Any, room_id: str) -> list[dict[str, Any]]:
    """The room's latest runs, newest first, each step with the command it made (if it made one yet)."""
    scids = await r.zrevrange(keys.room_runs_key(room_id), 0, RUNS_SHOWN - 1)
    pipe = r.pipeline(transaction=False)
    for scid in scids:
        pipe.hgetall(keys.room_run_key(room_id, scid))
    runs = [run for run in await pipe.execute() if run]
    pipe = r.pipeline(transaction=False)
    commands: list[list[str]] = []
    for run in runs:
        steps = _object(run.get("automation")).get("on_call_started")
        ids = [run.get(f"cmd:{i}", "") for i in range(len(steps) if isinstance(steps, list) else 0)]
        commands.append(ids)
        for cid in ids:
            pipe.hmget(keys.command_key(cid or "-"), "status", "call_connection_id")
    found = iter(await pipe.execute())
    shown = []
    for run, ids in zip(runs, commands, strict=True):
        steps = _steps(_object(run.get("automation")))
        rows = []
        for step, cid in zip(steps, ids, strict=True):
            status, cc = next(found)
            rows.append({**step, "command_id": cid, "status": (status or "expired") if cid else "not sent",
                         "call": cc or ""})
        shown.append({"server_call_id": run.get("server_call_id", ""), "state": run.get("state", ""),
                      "source": "room's own" if run.get("source") == "room" else "client default",
                      "call_started_at": run.get("call_started_at") or "", "ended_at": run.get("ended_at") or "",
                      "call": run.get("call_connection_id") or "", "error": _error(run.get("error")), "steps": rows})
    return shown


def _event(seq: str, event: dict[str, Any]) -> dict[str, str]:
    """One timeline entry. The stored data is as ACS sent it, in whichever of its shapes: ``acs_fields`` reads
    them all, as the Event Grid endpoint did."""
    kind = str(event.get("type") or "")
    acs = acs_fields(kind, str(event.get("subject") or ""), _object(event.get("data")))
    # Whom the event is about: who joined or left, who ended the call, else who started it.
    who = acs.participant_raw_id or acs.ended_by_raw_id or acs.started_by_raw_id or ""
    return {"seq": seq, "time": str(event.get("time") or ""), "type": kind, "kind": kind.removeprefix(PREFIX),
            "who": who, "server_call_id": acs.server_call_id or ""}


async def room(r: Any, client: str, room_id: str, *, now: datetime) -> dict[str, Any] | None:
    """A room's context: details, automation, current call, runs and timeline; None if the client has no such
    room."""
    record = await r.hgetall(keys.room_key(room_id))
    if not record or record.get("client") != client:
        return None
    default = await r.get(keys.client_automation_key(client))
    (connection,) = await _connections(r, client, [record])
    events = await r.xrevrange(keys.room_events_key(room_id), count=EVENTS_SHOWN)  # newest first
    return {"room": _room(record, default, now), "call": _call(record, connection),
            "runs": await _runs(r, room_id), "runs_total": int(await r.zcard(keys.room_runs_key(room_id))),
            "events": [_event(seq, _object(fields.get("event"))) for seq, fields in events]}
