"""Room routes: create, adopt, read, change and delete ACS rooms, and their participants, per client.

ACS answers these synchronously, so the API calls the Rooms SDK itself (in its thread pool) and answers with
what ACS said; ``workers.rooms`` explains how a create happens exactly once. A room another client manages
through callq is a 404, as with calls. Only the create takes an ``Idempotency-Key`` (it is the one request that
would make something new when repeated); reads, updates, participant changes and deletes set a state, and
sending one twice leaves the room as once.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import TypeVar

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import idempotency_key
from api.reads import index_page
from api.room_schemas import (
    CODES,
    ParticipantsBody,
    RemoveBody,
    RoomBody,
    RoomPatch,
    check_window,
    iso_z,
    window,
)
from api.routes import is_digits, read_json
from api.schemas import Body
from workers import commands, keys, rooms
from workers.errors import AcsError, Conflict, IdempotencyKeyReused, InvalidCommand, RoomNotFound
from workers.rooms import ROLES

PAGE_DEFAULT, PAGE_MAX = 50, 100
MAX_ROOM_BODY = 262_144  # a room with a thousand participants
B = TypeVar("B", bound=Body)


async def _parse(request: Request, model: type[B], *, empty_ok: bool = False) -> B:
    data = await read_json(request, empty_ok=empty_ok, max_bytes=MAX_ROOM_BODY)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        details = [{"field": ".".join(str(p) for p in e["loc"]) or None, "code": e["type"], "message": e["msg"]}
                   for e in errors]
        found = {e["type"] for e in errors}
        code = found.pop() if len(found) == 1 and found <= CODES else "validation_error"
        first = details[0]
        where = f"{first['field']}: " if first["field"] else ""
        raise InvalidCommand(f"The request body is not valid ({where}{first['message']}).", code=code,
                             details=details) from None


async def own(request: Request, client: str) -> dict[str, str]:
    """The client's record of the room in the path, or 404."""
    room_id = request.path_params["room_id"]
    record: dict[str, str] = await request.state.redis.hgetall(keys.room_key(room_id))
    if not record or record.get("client") != client:
        raise RoomNotFound(f"No room {room_id!r} is managed by this client; create it, or adopt it with "
                           f"PUT /v1/rooms/{room_id}.")
    return record


def _answer(saved: rooms.Saved, fingerprint: str, status: int) -> Response:
    headers = {"Location": f"/v1/rooms/{saved.room_id}"}
    if saved.outcome == "replay":
        if saved.fingerprint != fingerprint:
            raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request; "
                                       "use a new key for a new request.")
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(json.loads(saved.response_json), status_code=status, headers=headers)


async def _first_sent(request: Request, idem_key: str) -> datetime:
    """When this Idempotency-Key's create first went to ACS (now, for its first attempt)."""
    r = request.state.redis
    pipe = r.pipeline(transaction=False)
    pipe.hsetnx(idem_key, "first_sent", format_datetime(datetime.now(UTC), usegmt=True))
    pipe.expire(idem_key, request.state.settings.idempotency_ttl_s)
    pipe.hget(idem_key, "first_sent")
    return parsedate_to_datetime((await pipe.execute())[2])


async def create_room(request: Request) -> Response:
    """Create a room at ACS (exactly once per Idempotency-Key) and manage it for this client."""
    state = request.state
    client = state.api_keys.client_for(request)
    idem = idempotency_key(request)
    body = await _parse(request, RoomBody)
    now = datetime.now(UTC)
    check_window(*window(body, now), now, new=True)
    fingerprint = commands.fingerprint("POST /v1/rooms", body.model_dump(mode="json"))
    idem_key = keys.idempotency_key(client, idem)
    earlier = await state.redis.hmget(idem_key, "command_id", "fingerprint", "response")
    if earlier[0]:
        return _answer(rooms.Saved("replay", earlier[0], earlier[1] or "", earlier[2] or ""), fingerprint, 201)
    first = await _first_sent(request, idem_key)
    if (now - first).total_seconds() > rooms.REPEAT_WINDOW_S:
        raise Conflict("An earlier create with this Idempotency-Key reached ACS more than five minutes ago and its "
                       "answer was lost, so ACS may no longer recognise a retry: list your rooms (GET /v1/rooms) "
                       "or at ACS before creating it again with a new key.", code="room_create_in_doubt")
    try:
        room = await run_in_threadpool(
            state.rooms.create, valid_from=iso_z(body.valid_from), valid_until=iso_z(body.valid_until),
            pstn_dial_out_enabled=body.pstn_dial_out_enabled, participants=body.acs_participants(),
            repeatability_id=rooms.create_repeatability_id(client, idem),
            first_sent=format_datetime(first, usegmt=True))
    except AcsError as exc:
        if exc.status is not None and 400 <= exc.status < 500:
            await state.redis.hdel(idem_key, "first_sent")  # ACS refused it: nothing was made, start afresh
        raise
    fields = {**rooms.acs_fields(room), "origin": "created", "managed_since": _iso_now()}
    response = json.dumps(rooms.render({"id": room["id"], **fields}))
    saved: rooms.Saved = await state.scripts.run(rooms.save(
        client=client, room_id=room["id"], fields=fields, idempotency_key=idem, fingerprint=fingerprint,
        response_json=response, idempotency_ttl_s=state.settings.idempotency_ttl_s))
    if saved.outcome == "taken":  # a fresh ACS room id another client manages: ACS reused an id
        raise Conflict(f"Room {room['id']!r} is managed by another client.", code="room_managed_elsewhere")
    return _answer(saved, fingerprint, 201)


def _iso_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def adopt_room(request: Request) -> Response:
    """Manage a room created elsewhere (ACS must know it); adopting a room this client manages refreshes it."""
    state = request.state
    client = state.api_keys.client_for(request)
    room_id = request.path_params["room_id"]
    _check_id(room_id)
    room = await run_in_threadpool(state.rooms.get, room_id)
    existing = await state.redis.hget(keys.room_key(room_id), "managed_since")
    fields = {**rooms.acs_fields(room), "origin": "adopted", "managed_since": existing or _iso_now()}
    saved: rooms.Saved = await state.scripts.run(rooms.save(client=client, room_id=room_id, fields=fields))
    if saved.outcome == "taken":
        raise Conflict(f"Room {room_id!r} is managed by another client.", code="room_managed_elsewhere")
    record = await state.redis.hgetall(keys.room_key(room_id))
    status = 201 if existing is None else 200
    return JSONResponse(rooms.render(record), status_code=status, headers={"Location": f"/v1/rooms/{room_id}"})


def _check_id(room_id: str) -> None:
    if not room_id.isascii() or not room_id.strip() or len(room_id) > 128 or "/" in room_id:
        raise InvalidCommand("room_id must be 1-128 characters.", code="invalid_room_id")


async def _fresh(request: Request, client: str, record: dict[str, str]) -> dict[str, str]:
    """The room as ACS has it now, written to callq's record (a room deleted at ACS is dropped: 404)."""
    state = request.state
    room_id = record["id"]
    try:
        room = await run_in_threadpool(state.rooms.get, room_id)
    except RoomNotFound:
        await _forget(request, client, room_id)
        raise RoomNotFound(f"Room {room_id!r} no longer exists at ACS.") from None
    await state.scripts.run(rooms.save(client=client, room_id=room_id, fields=rooms.acs_fields(room)))
    return {**record, **rooms.acs_fields(room)}


async def _forget(request: Request, client: str, room_id: str) -> None:
    pipe = request.state.redis.pipeline(transaction=True)
    pipe.delete(keys.room_key(room_id))
    pipe.zrem(keys.client_rooms_key(client), room_id)
    await pipe.execute()


async def get_room(request: Request) -> Response:
    """The room as ACS has it now, with its automation and current call."""
    client = request.state.api_keys.client_for(request)
    record = await own(request, client)
    return JSONResponse(rooms.render(await _fresh(request, client, record)))


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(PAGE_DEFAULT))
    if not is_digits(raw) or not 1 <= int(raw) <= PAGE_MAX:
        raise InvalidCommand(f"limit must be a whole number from 1 to {PAGE_MAX}.", code="invalid_limit")
    return int(raw)


async def list_rooms(request: Request) -> Response:
    """The client's rooms (as callq last heard from ACS), by id, paged with ``?after=<id>&limit=N``."""
    state = request.state
    client = state.api_keys.client_for(request)
    page = await index_page(request, keys.client_rooms_key(client), keys.room_key, rooms.render, "/v1/rooms",
                            _limit(request))
    return JSONResponse(page)


async def update_room(request: Request) -> Response:
    """Change the window or the dial-out flag; fields not given keep their value."""
    state = request.state
    client = state.api_keys.client_for(request)
    record = await own(request, client)
    patch = await _parse(request, RoomPatch)
    current = await _fresh(request, client, record)
    start = patch.valid_from or datetime.fromisoformat(current["valid_from"].replace("Z", "+00:00"))
    until = patch.valid_until or datetime.fromisoformat(current["valid_until"].replace("Z", "+00:00"))
    check_window(start, until, datetime.now(UTC), new=False)
    dial_out = current["pstn_dial_out_enabled"] == "1" if patch.pstn_dial_out_enabled is None \
        else patch.pstn_dial_out_enabled
    room = await run_in_threadpool(state.rooms.update, record["id"], valid_from=iso_z(start) or "",
                                   valid_until=iso_z(until) or "", pstn_dial_out_enabled=dial_out)
    fields = rooms.acs_fields(room)
    await state.scripts.run(rooms.save(client=client, room_id=record["id"], fields=fields))
    return JSONResponse(rooms.render({**current, **fields}))


async def delete_room(request: Request) -> Response:
    """Delete the room at ACS and stop managing it (a room ACS no longer has is simply forgotten)."""
    state = request.state
    client = state.api_keys.client_for(request)
    record = await own(request, client)
    try:
        await run_in_threadpool(state.rooms.delete, record["id"])
    except RoomNotFound:
        pass
    await _forget(request, client, record["id"])
    return Response(status_code=204)


async def _participants(request: Request, room_id: str) -> Response:
    items = await run_in_threadpool(request.state.rooms.participants, room_id)
    return JSONResponse({"items": [{"communication_user": p["raw_id"], "role": p["role"]} for p in items]})


async def list_participants(request: Request) -> Response:
    """Everyone the room lists, with their roles."""
    record = await own(request, request.state.api_keys.client_for(request))
    return await _participants(request, record["id"])


async def put_participants(request: Request) -> Response:
    """Add participants, or change their roles; answers the room's participants after the change."""
    record = await own(request, request.state.api_keys.client_for(request))
    body = await _parse(request, ParticipantsBody)
    await run_in_threadpool(request.state.rooms.change_participants, record["id"],
                            {p.communication_user: ROLES[p.role] for p in body.participants})
    return await _participants(request, record["id"])


async def remove_participants(request: Request) -> Response:
    """Remove participants; answers the room's participants after the change."""
    record = await own(request, request.state.api_keys.client_for(request))
    body = await _parse(request, RemoveBody)
    await run_in_threadpool(request.state.rooms.change_participants, record["id"],
                            dict.fromkeys(body.participants))
    return await _participants(request, record["id"])


room_routes = [
    Route("/v1/rooms", create_room, methods=["POST"]),
    Route("/v1/rooms", list_rooms, methods=["GET"]),
    Route("/v1/rooms/{room_id}", get_room, methods=["GET"]),
    Route("/v1/rooms/{room_id}", adopt_room, methods=["PUT"]),
    Route("/v1/rooms/{room_id}", update_room, methods=["PATCH"]),
    Route("/v1/rooms/{room_id}", delete_room, methods=["DELETE"]),
    Route("/v1/rooms/{room_id}/participants", list_participants, methods=["GET"]),
    Route("/v1/rooms/{room_id}/participants", put_participants, methods=["PUT"]),
    Route("/v1/rooms/{room_id}/participants/remove", remove_participants, methods=["POST"]),
]
