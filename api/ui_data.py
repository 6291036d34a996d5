"""What the operator page shows: one client's calls, their commands and events, read from Redis for the templates.

Everything here is plain text and numbers; only the templates (autoescaped) turn it into HTML.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from api.metrics import Health, read_health
from workers import keys, metrics
from workers.command import Status

CALLS_SHOWN = 100
ATTENTION_SHOWN = 50
ENDED_SHOWN = 10
EVENTS_SHOWN = 500
ENDED = frozenset({"disconnected", "connect failed"})


@dataclass(frozen=True)
class Note:
    """Why a command is where it is: an error's code and message, or a sentence (``code`` None)."""

    text: str
    code: str | None = None


@dataclass(frozen=True)
class Participant:
    raw: str
    muted: bool


def _json(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _object(raw: str | None) -> dict[str, Any]:
    """A JSON object from Redis or an event, or ``{}`` for anything else (missing, malformed, not an object)."""
    value = _json(raw)
    return value if isinstance(value, dict) else {}


def _iso_from_ms(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _took(start: str | None, end: str | None) -> str:
    seconds = metrics.seconds_between(start, end)
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def _trouble(record: dict[str, str]) -> str | None:
    """``throttled`` or ``retrying`` while a command is still under way; a finished one is in no trouble."""
    if record.get("status", "") in Status.TERMINAL:
        return None
    return "throttled" if record.get("throttled") else "retrying" if record.get("last_error") else None


def _error(raw: str | None) -> Note:
    error = _object(raw)
    return Note(str(error.get("message", "")), code=str(error.get("code", "")))


def _reason(record: dict[str, str], trouble: str) -> Note:
    if trouble == "throttled":
        return Note(record.get("throttled") or "")
    return _error(record.get("error") if trouble == "failed" else record.get("last_error"))


# --- reads ---------------------------------------------------------------------------------------------------------

async def _participants(r: Any, cc: str) -> list[Participant] | None:
    """The roster from the call's latest ParticipantsUpdated event (None: ACS has not reported one)."""
    for _, fields in await r.xrevrange(keys.call_events_key(cc), count=200):
        event = _object(fields.get("event"))
        if str(event.get("type", "")).endswith("ParticipantsUpdated"):
            return [Participant(str((p.get("identifier") or {}).get("rawId") or "?"), bool(p.get("isMuted")))
                    for p in (event.get("data") or {}).get("participants") or []]
    return None


async def _recording(r: Any, call: dict[str, str]) -> str:
    """``none``, ``starting``, ``recording``, ``paused`` or ``stopped``.

    ACS reports only ``active`` / ``inactive`` (RecordingStateChanged, kept on the recording); whether inactive
    means paused or stopped is what the last successful recording command of callq's says.
    """
    rid = call.get("recording_id")
    if not rid:
        return "none"
    acs_state = await r.hget(keys.recording_key(rid), "state")
    if acs_state == "active":
        return "recording"
    if not acs_state:
        return "starting"
    pipe = r.pipeline(transaction=False)
    for cid in await r.lrange(keys.recording_commands_key(rid), 0, -1):
        pipe.hmget(keys.command_key(cid), "type", "status")
    done = [t for t, s in await pipe.execute() if s == "succeeded"]
    return "paused" if done and done[-1] == "pause_recording" and call.get("state") != "disconnected" else "stopped"


def _call_state(call: dict[str, str], connect_status: str | None) -> str:
    """The call's state for people: a call whose connect failed is over, though ACS never connected it."""
    if call.get("state") in (None, "", "connecting") and connect_status == "failed":
        return "connect failed"
    return call.get("state") or "connecting"


async def managed_rooms(r: Any, client: str, room_ids: list[str]) -> set[str]:
    """Which of these rooms the client manages: those get a link to their room page."""
    pipe = r.pipeline(transaction=False)
    for room_id in room_ids:
        pipe.hget(keys.room_key(room_id), "client")
    return {room_id for room_id, owner in zip(room_ids, await pipe.execute(), strict=True) if owner == client}


async def _calls(r: Any, client: str) -> list[dict[str, Any]]:
    """The client's most recently active calls, newest first, as the calls tables show them."""
    ids = await r.zrevrange(metrics.CALLS_KEY, 0, CALLS_SHOWN - 1, withscores=True)
    pipe = r.pipeline(transaction=False)
    for cc, _ in ids:
        pipe.hgetall(keys.call_key(cc))
        pipe.lrange(keys.call_commands_key(cc), 0, -1)
    rows = await pipe.execute()
    calls = []
    for (cc, score), call, command_ids in zip(ids, rows[::2], rows[1::2], strict=True):
        if call.get("client") != client:
            continue  # another client's call (or one that expired): never shown
        pipe = r.pipeline(transaction=False)
        for cid in command_ids:
            pipe.hget(keys.command_key(cid), "status")
        pipe.hget(keys.command_key(call.get("connect_command") or "-"), "status")
        *statuses, connect_status = await pipe.execute()
        calls.append({"id": cc, "room_id": call.get("room_id") or "—", "state": _call_state(call, connect_status),
                      "participants": await _participants(r, cc), "recording": await _recording(r, call),
                      "commands": len(command_ids), "active_at": _iso_from_ms(int(score)),
                      "pending": sum(1 for s in statuses if s and s not in Status.TERMINAL)})
    managed = await managed_rooms(r, client, [c["room_id"] for c in calls])
    return [{**c, "room_managed": c["room_id"] in managed} for c in calls]


async def _attention(r: Any, client: str) -> list[dict[str, Any]]:
    """Commands retrying, throttled or failed, newest first; one that recovered (succeeded) drops out."""
    ids = await r.zrevrange(metrics.ATTENTION_KEY, 0, 4 * ATTENTION_SHOWN - 1)
    pipe = r.pipeline(transaction=False)
    for cid in ids:
        pipe.hgetall(keys.command_key(cid))
    items = []
    for record in await pipe.execute():
        if record.get("client") != client:
            continue
        trouble = "failed" if record.get("status") == "failed" else _trouble(record)
        if trouble:
            items.append({"id": record["id"], "type": record.get("type", ""),
                          "call": record.get("call_connection_id") or "", "trouble": trouble,
                          "reason": _reason(record, trouble), "attempts": record.get("attempts", "0"),
                          "updated_at": record.get("updated_at")})
    return items[:ATTENTION_SHOWN]


def _health_cards(h: Health, live: int) -> list[dict[str, str]]:
    paused = f"paused {h.acs_pause_s:.1f} s" if h.acs_pause_s > 0 else "no"
    waiting = f"{h.waiting}" + (f" ({h.waiting_overdue} overdue)" if h.waiting_overdue else "")
    cards = [
        ("Live calls", str(live), ""),
        ("Waiting for ACS", waiting, "warn" if h.waiting_overdue else ""),
        ("Queue depth", f"{h.queue_depth} + {h.steps_depth} steps", "warn" if h.steps_depth > 100 else ""),
        ("Workers alive", str(h.workers_alive), "bad" if h.workers_alive == 0 else "good"),
        ("ACS throttling", paused, "warn" if h.acs_pause_s > 0 else "good"),
    ]
    return [{"label": label, "value": value, "kind": kind} for label, value, kind in cards]


async def _door_cards(r: Any, client: str, pending_limit: int) -> list[dict[str, str]]:
    """This client's commands not yet ended (against CALLQ_CLIENT_MAX_PENDING), those runnable and waiting for the
    client's turn in the fair dispatch, and those the door refused."""
    pending = int(await r.scard(keys.client_pending_key(client)))
    ready = int(await r.llen(keys.client_ready_key(client)))
    refused: Counter[str] = Counter()
    for labels, value in (await r.hgetall(metrics.PREFIX + "callq_client_refused")).items():
        who, code = json.loads(labels)
        if who == client:
            refused[code] += int(float(value))
    limit = f" of {pending_limit}" if pending_limit else ""
    near = pending_limit and pending >= 0.8 * pending_limit
    detail = ", ".join(f"{n} {code}" for code, n in sorted(refused.items()))
    return [{"label": "Your pending commands", "value": f"{pending}{limit}", "kind": "warn" if near else ""},
            {"label": "Waiting their turn", "value": str(ready), "kind": ""},
            {"label": "Refused at the door", "value": detail or "0", "kind": "warn" if refused else ""}]


async def overview(r: Any, client: str, *, queue: str, acs_endpoint: str, pending_limit: int = 0) -> dict[str, Any]:
    """The overview's context: health cards, live calls, commands needing attention, recently ended calls."""
    calls = await _calls(r, client)
    live = [c for c in calls if c["state"] not in ENDED]
    health = await read_health(r, queue=queue, acs_endpoint=acs_endpoint)
    cards = _health_cards(health, len(live)) + await _door_cards(r, client, pending_limit)
    return {"cards": cards, "live": live, "attention": await _attention(r, client),
            "ended": [c for c in calls if c["state"] in ENDED][:ENDED_SHOWN]}


# --- one call ------------------------------------------------------------------------------------------------------

def _command(record: dict[str, str]) -> dict[str, Any]:
    status = record.get("status", "")
    trouble = _trouble(record)
    if status == "failed":
        outcome = _error(record.get("error"))
    elif status == "succeeded":
        outcome = Note(str(_object(record.get("resolved_by")).get("type") or "ACS response"))
    else:
        outcome = _reason(record, trouble) if trouble else Note("")
    return {"id": record.get("id", ""), "type": record.get("type", ""), "status": status, "trouble": trouble,
            "attempts": record.get("attempts", "0"), "outcome": outcome,
            "took": _took(record.get("created_at"), record.get("resolved_at"))}


def _event(seq: str, event: dict[str, Any], types: dict[str, str]) -> dict[str, Any]:
    """One timeline entry; ``types`` maps the call's command ids to their types (operationContext → command)."""
    data = event.get("data") or {}
    kind = str(event.get("type", "")).rsplit(".", 1)[-1]
    info = data.get("resultInformation") or {}
    code = info.get("code")
    failed = "Failed" in kind or isinstance(code, int) and code >= 300
    context = str(data.get("operationContext") or "")
    return {"seq": seq, "kind": kind, "time": str(event.get("time") or ""), "failed": failed,
            "context": context, "context_type": types.get(context, "command"),
            "participants": len(data.get("participants") or []) if kind == "ParticipantsUpdated" else None,
            "recording": str(data.get("state") or "") if kind == "RecordingStateChanged" else None,
            # Success codes are noise; a failure's or a hang-up's reason is not.
            "reason": f"{code}/{info.get('subCode', '')} {info.get('message') or ''}"
                      if failed or kind == "CallDisconnected" else None}


async def call(r: Any, client: str, cc: str) -> dict[str, Any] | None:
    """A call's context: its state, roster, commands and events; None if the client has no such call."""
    record = await r.hgetall(keys.call_key(cc))
    if record.get("client") != client:
        return None
    pipe = r.pipeline(transaction=False)
    for cid in await r.lrange(keys.call_commands_key(cc), 0, -1):
        pipe.hgetall(keys.command_key(cid))
    # Acceptance order by time: the connect joins the call's list only when ACS answered it, maybe after others.
    commands = sorted((rec for rec in await pipe.execute() if rec), key=lambda rec: rec.get("created_at", ""))
    types = {rec["id"]: rec.get("type", "") for rec in commands}
    events = await r.xrevrange(keys.call_events_key(cc), count=EVENTS_SHOWN)  # newest first
    connect: dict[str, str] = next((rec for rec in commands if rec.get("type") == "connect"), {})
    state = _call_state(record, connect.get("status"))
    room_id = record.get("room_id") or ""
    return {"cc": cc, "state": state, "room_id": room_id or "—",
            "room_managed": bool(room_id) and room_id in await managed_rooms(r, client, [room_id]),
            "listen_state": "disconnected" if state in ENDED else state,
            "recording": await _recording(r, record), "participants": await _participants(r, cc),
            "commands": [_command(rec) for rec in commands],
            "events": [_event(seq, _object(fields.get("event")), types) for seq, fields in events]}
