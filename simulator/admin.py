"""The ``/_sim/...`` admin API (JSON, not HMAC-protected: it is not part of ACS). See docs/simulator.md."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .model import BEHAVIOURS, PhoneScript, Room, ServerCall, utc_now
from .rooms import ROLES, iso7, parse_time
from .runtime import Runtime

_E164 = re.compile(r"\+[1-9]\d{6,14}")
CALL_ENDED = (200, 0, "The conversation has ended.")


class AdminError(Exception):
    """Raised for a bad admin request; becomes ``{"error": {"code", "message"}}``."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def admin_error(request: Request, exc: Exception) -> Response:
    """Exception handler for AdminError."""
    status = exc.status if isinstance(exc, AdminError) else 500
    code = (exc.code if isinstance(exc, AdminError) else None) or {
        400: "bad_request", 404: "not_found", 409: "conflict"}.get(status, "error")
    return JSONResponse({"error": {"code": code, "message": str(exc)}}, status_code=status)


def _rt(request: Request) -> Runtime:
    return request.state.runtime  # type: ignore[no-any-return]  # Starlette state is untyped


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError:
        raise AdminError(400, "body must be JSON") from None
    if not isinstance(data, dict):
        raise AdminError(400, "body must be a JSON object")
    return data


def _number(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        raise AdminError(400, f"{key} must be a number >= 0, got {value!r}")
    return float(value)


def _room(rt: Runtime, room_id: str) -> Room:
    room = rt.sim.store.rooms.get(room_id)
    if room is None:
        raise AdminError(404, f"no room {room_id}")
    return room


def _active_call(room: Room) -> ServerCall:
    if room.call is None or room.call.ended:
        raise AdminError(409, f"room {room.room_id} has no active call")
    return room.call


def _raw_ids(data: dict[str, Any]) -> list[str]:
    ids = data.get("participants", [])
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise AdminError(400, 'participants must be a non-empty list of raw ids, e.g. ["8:acs:..."]')
    return ids


def _admissible(room: Room, ids: list[str]) -> None:
    """Refuse (nothing changes) unless the room is open now and lists every one of ``ids``."""
    now = utc_now()
    if not room.is_open(now):
        when = "has not begun" if now < room.valid_from else "has passed"
        raise AdminError(409, f"room {room.room_id} cannot be joined: its validity window "
                              f"({iso7(room.valid_from)} .. {iso7(room.valid_until)}) {when}", "room_not_open")
    strangers = [i for i in ids if not room.admits(i)]
    if strangers:
        raise AdminError(403, f"not participants of room {room.room_id}: {strangers}; add them with the Rooms API",
                         "not_a_room_participant")


def _roster(data: dict[str, Any]) -> dict[str, str] | None:
    value = data.get("participants")
    if value is None:
        return None
    if isinstance(value, list) and all(isinstance(i, str) and i for i in value):
        return dict.fromkeys(value, "Attendee")
    if isinstance(value, dict) and all(isinstance(k, str) and k and v in ROLES for k, v in value.items()):
        return dict(value)
    raise AdminError(400, f"participants must be a list of raw ids or an object of raw id to role {list(ROLES)}")


def _time(data: dict[str, Any], key: str) -> datetime | None:
    value = data.get(key)
    if value is None:
        return None
    parsed = parse_time(value)
    if parsed is None or parsed.tzinfo is None:
        raise AdminError(400, f"{key} must be an ISO 8601 time with an offset, e.g. 2026-11-25T10:00:00Z")
    return parsed


async def health(request: Request) -> Response:
    """Liveness for the supervisor."""
    return JSONResponse({"status": "ok"})


async def create_room(request: Request) -> Response:
    """``{"pstn_dial_out_enabled", "connect_delay_ms", "room_id"?, "participants"?, "valid_from"?, "valid_until"?}``
    → 201 with the room.

    Unlike the Rooms API, any window is accepted (also one already over), so tests can make expired rooms; without
    ``participants`` the room has no roster and admits anyone (a simulator-only convenience).
    """
    rt, data = _rt(request), await _body(request)
    dial_out = data.get("pstn_dial_out_enabled", False)
    if not isinstance(dial_out, bool):
        raise AdminError(400, "pstn_dial_out_enabled must be true or false")
    room_id = data.get("room_id") or rt.sim.store.ids.room_id()
    if not isinstance(room_id, str) or room_id in rt.sim.store.rooms:
        raise AdminError(409, f"room id {room_id!r} is taken or not a string")
    room = Room(room_id, dial_out, _number(data, "connect_delay_ms", 0.0), participants=_roster(data))
    room.valid_from = _time(data, "valid_from") or room.valid_from
    room.valid_until = _time(data, "valid_until") or room.valid_until
    if room.valid_until <= room.valid_from:
        raise AdminError(400, "valid_until must be after valid_from")
    rt.sim.store.add_room(room)
    return JSONResponse(_room_json(room), status_code=201)


async def get_room(request: Request) -> Response:
    """The room, its call, roster and connections."""
    return JSONResponse(_room_json(_room(_rt(request), request.path_params["room_id"])))


def _room_json(room: Room) -> dict[str, Any]:
    call = room.call
    return {
        "room_id": room.room_id,
        "pstn_dial_out_enabled": room.pstn_dial_out_enabled,
        "connect_delay_ms": room.connect_delay_ms,
        "valid_from": iso7(room.valid_from),
        "valid_until": iso7(room.valid_until),
        "participants": room.participants,
        "call": None if call is None else {
            "server_call_id": call.server_call_id,
            "participants": list(call.participants),
            "connections": {cc: c.state for cc, c in call.connections.items()},
            "recording_id": call.recording.recording_id if call.recording else None,
        },
    }


async def start_call(request: Request) -> Response:
    """Participants start the room's call: ``{"participants": [...]}`` → 201 ``{"server_call_id"}``.

    Only inside the room's validity window (409 ``room_not_open``) and only people the room lists (403
    ``not_a_room_participant``); the first one starts it. Event Grid hears CallStarted and CallParticipantAdded.
    """
    rt = _rt(request)
    room, ids = _room(rt, request.path_params["room_id"]), _raw_ids(await _body(request))
    if room.call is not None and not room.call.ended:
        raise AdminError(409, f"room {room.room_id} already has an active call")
    _admissible(room, ids)
    store = rt.sim.store
    call = ServerCall(store.ids.server_call_id(), store.ids.uuid(), room.room_id, dict.fromkeys(ids, False))
    store.calls[call.server_call_id] = call
    room.call = call
    rt.sim.call_started(call, ids)
    return JSONResponse({"server_call_id": call.server_call_id, "room_id": room.room_id}, status_code=201)


async def end_call(request: Request) -> Response:
    """Everyone leaves: the call ends and every connection gets CallDisconnected (the first one still in the call
    counts as who ended it)."""
    rt = _rt(request)
    call = _active_call(_room(rt, request.path_params["room_id"]))
    rt.sim.end_call(call, CALL_ENDED, by_participant=next(iter(call.members), call.started_by))
    return Response(status_code=204)


async def join(request: Request) -> Response:
    """More participants join the running call (``{"participants": [...]}``); ParticipantsUpdated follows.

    The same rules as starting it: the room must be open and list them (else 409 / 403, and nobody joins).
    """
    rt = _rt(request)
    room = _room(rt, request.path_params["room_id"])
    call, ids = _active_call(room), _raw_ids(await _body(request))
    _admissible(room, ids)
    for raw_id in ids:
        if raw_id not in call.participants:
            call.participants[raw_id] = False
            rt.sim.user_joined(call, raw_id)
    rt.sim.roster_changed(call)
    return JSONResponse({"participants": list(call.participants)})


async def leave(request: Request) -> Response:
    """A participant hangs up; ParticipantsUpdated follows."""
    rt = _rt(request)
    call = _active_call(_room(rt, request.path_params["room_id"]))
    raw_id = request.path_params["raw_id"]
    if call.participants.pop(raw_id, None) is None:
        raise AdminError(404, "no such participant in the call")
    rt.sim.user_left(call, raw_id)
    rt.sim.roster_changed(call)
    return JSONResponse({"participants": list(call.participants)})


async def put_phone(request: Request) -> Response:
    """Script a number: ``{"behaviour", "delay_ms", "dtmf", "speech", "input_delay_ms"}``."""
    number, data = request.path_params["number"], await _body(request)
    if not _E164.fullmatch(number):
        raise AdminError(400, f"{number!r} is not an E.164 number like +16045550100")
    unknown = set(data) - set(PhoneScript().to_json())
    behaviour = data.get("behaviour", "answer")
    if unknown or behaviour not in BEHAVIOURS:
        raise AdminError(400, f"behaviour must be one of {list(BEHAVIOURS)}; unknown keys: {sorted(unknown)}")
    for key in ("dtmf", "speech"):
        if not isinstance(data.get(key, ""), str):
            raise AdminError(400, f"{key} must be a string")
    script = PhoneScript(behaviour, _number(data, "delay_ms", 50.0), data.get("dtmf", ""), data.get("speech", ""),
                         _number(data, "input_delay_ms", 20.0))
    _rt(request).sim.store.phones[number] = script
    return JSONResponse({"number": number, **script.to_json()})


async def list_phones(request: Request) -> Response:
    """Every scripted number."""
    return JSONResponse({n: s.to_json() for n, s in _rt(request).sim.store.phones.items()})


async def faults(request: Request) -> Response:
    """GET shows the knobs; PUT sets the given ones (others unchanged); DELETE restores all defaults."""
    rt = _rt(request)
    if request.method == "PUT":
        try:
            rt.faults.set(await _body(request))
        except ValueError as exc:
            raise AdminError(400, str(exc)) from None
    elif request.method == "DELETE":
        rt.faults.clear()
    return JSONResponse(rt.faults.knobs.to_json())


async def request_log(request: Request) -> Response:
    """Executed state-changing ACS requests, oldest first; filter with ``?operation=&call_connection_id=``."""
    return JSONResponse(_filtered(list(_rt(request).log.entries), request, ("operation", "call_connection_id")))


async def arrivals(request: Request) -> Response:
    """Every authenticated ACS request as it arrived (reads and refused ones too), with its time."""
    return JSONResponse(list(_rt(request).log.arrivals))


async def callback_log(request: Request) -> Response:
    """Callback POST attempts, oldest first; filter with ``?outcome=&target=``."""
    return JSONResponse(_filtered(list(_rt(request).sim.dispatcher.log), request, ("outcome", "target")))


def _filtered(entries: list[dict[str, Any]], request: Request, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    wanted = {k: request.query_params[k] for k in keys if k in request.query_params}
    return [e for e in entries if all(e.get(k) == v for k, v in wanted.items())]


async def stats(request: Request) -> Response:
    """Counters for benchmarks: ACS requests seen, callback POSTs and events, Event Grid POSTs and events."""
    rt = _rt(request)
    return JSONResponse({"requests": rt.log.requests_seen, **rt.sim.dispatcher.stats, **rt.eventgrid.stats})


async def reset(request: Request) -> Response:
    """Clear rooms, calls, logs, repeatability, faults and queued callbacks."""
    await _rt(request).reset()
    return JSONResponse({"status": "reset"})


ROUTES = [
    Route("/health", health),
    Route("/rooms", create_room, methods=["POST"]),
    Route("/rooms/{room_id}", get_room),
    Route("/rooms/{room_id}/call", start_call, methods=["POST"]),
    Route("/rooms/{room_id}/call", end_call, methods=["DELETE"]),
    Route("/rooms/{room_id}/call/participants", join, methods=["POST"]),
    Route("/rooms/{room_id}/call/participants/{raw_id:path}", leave, methods=["DELETE"]),
    Route("/phones", list_phones),
    Route("/phones/{number}", put_phone, methods=["PUT"]),
    Route("/faults", faults, methods=["GET", "PUT", "DELETE"]),
    Route("/log", request_log),
    Route("/arrivals", arrivals),
    Route("/callbacks", callback_log),
    Route("/stats", stats),
    Route("/reset", reset, methods=["POST"]),
]
