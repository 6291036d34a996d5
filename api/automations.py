"""Automation routes: what callq does when a room's call starts, per room or as a client's default; the runs;
the room's timeline of Event Grid events.

``PUT /v1/rooms/{room_id}/automation`` (and ``PUT /v1/automation``, the client's default for rooms without one)
takes ``{"on_call_started": [{"type": "connect"}, {"type": "play", "body": {"text": "Welcome"}}, …]}``: each step
is a command type with the same body as its route (validated the same way, codes included). The first step
connects (callq must join the call before it can act in it), and only the first. Setting an automation is
idempotent (PUT): sending it twice leaves it as once. ``workers.automations`` runs it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.reads import event_page
from api.rooms import MAX_ROOM_BODY, own
from api.routes import COMMANDS, CommandSpec, check_media, is_digits, read_json, validation_error
from workers import keys
from workers.automations import render_run
from workers.command import now_iso
from workers.errors import InvalidCommand, RoomNotFound

MAX_STEPS = 20
PAGE_MAX = 100


def _specs() -> dict[str, CommandSpec]:
    """Each command type's route for an automation step: the call's own variant where there are two."""
    specs: dict[str, CommandSpec] = {}
    for spec in COMMANDS:
        if spec.scope == "recording":
            continue  # a recording's id is not known in advance: the call's variants stand for these
        specs.setdefault(spec.type, spec)
    return specs


STEP_SPECS = _specs()


def _step(request: Request, index: int, raw: Any) -> dict[str, Any]:
    where = f"on_call_started.{index}"
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str) or set(raw) - {"type", "body"}:
        raise InvalidCommand(f"{where}: a step is {{\"type\": <command type>, \"body\": {{…}}}}.", code="invalid_step",
                             details=[{"field": where, "code": "invalid_step", "message": "type and body only"}])
    spec = STEP_SPECS.get(raw["type"])
    if spec is None:
        raise InvalidCommand(f"{where}.type: unknown command type {raw['type']!r}; one of "
                             f"{', '.join(sorted(STEP_SPECS))}.", code="unknown_step_type")
    try:
        body = spec.body.model_validate(raw.get("body") or {})
    except ValidationError as exc:
        err = validation_error(exc)
        for d in err.details:
            d["field"] = f"{where}.body" + (f".{d['field']}" if d.get("field") else "")
        raise InvalidCommand(f"{where}.body: {err.message}", code=err.code, details=err.details) from None
    params = body.params()
    check_media(request, params)
    # "type" stays the step's as given (what the automation shows and takes back); the command it makes may be
    # another (a play that barges in is a play_barge_in).
    return {"type": spec.type, "command_type": body.command_type(spec.type),
            "body": body.model_dump(mode="json", exclude_none=True), "params": params}


async def _automation(request: Request) -> dict[str, Any]:
    data = await read_json(request, empty_ok=False, max_bytes=MAX_ROOM_BODY)
    if not isinstance(data, dict) or set(data) != {"on_call_started"} or not isinstance(data["on_call_started"], list):
        raise InvalidCommand("An automation is {\"on_call_started\": [steps]}.", code="invalid_automation")
    raw_steps = data["on_call_started"]
    if not 1 <= len(raw_steps) <= MAX_STEPS:
        raise InvalidCommand(f"on_call_started takes 1 to {MAX_STEPS} steps.", code="invalid_automation")
    steps = [_step(request, i, raw) for i, raw in enumerate(raw_steps)]
    if steps[0]["type"] != "connect" or any(s["type"] == "connect" for s in steps[1:]):
        raise InvalidCommand("The first step must be connect (callq joins the call before acting in it), and only "
                             "the first.", code="connect_first")
    return {"on_call_started": steps, "updated_at": now_iso()}


def render(automation: str | None, scope: str) -> dict[str, Any] | None:
    """An automation as the API shows it (its stored command parameters left out)."""
    if not automation:
        return None
    doc = json.loads(automation)
    return {"scope": scope, "on_call_started": [{"type": s["type"], "body": s["body"]} for s in doc["on_call_started"]],
            "updated_at": doc.get("updated_at")}


async def put_room_automation(request: Request) -> Response:
    """Set what callq does when this room's call starts (replaces the room's automation)."""
    record = await own(request, request.state.api_keys.client_for(request))
    doc = json.dumps(await _automation(request))
    await request.state.redis.hset(keys.room_key(record["id"]), "automation", doc)
    return JSONResponse(render(doc, "room"))


async def get_room_automation(request: Request) -> Response:
    """The room's automation (404 ``automation_not_found`` without one; the client's default is /v1/automation)."""
    record = await own(request, request.state.api_keys.client_for(request))
    if not record.get("automation"):
        raise _none(f"Room {record['id']!r} has no automation of its own.")
    return JSONResponse(render(record["automation"], "room"))


async def delete_room_automation(request: Request) -> Response:
    """Remove the room's automation (calls that start afterwards run the client's default, if any)."""
    record = await own(request, request.state.api_keys.client_for(request))
    await request.state.redis.hdel(keys.room_key(record["id"]), "automation")
    return Response(status_code=204)


def _none(message: str) -> RoomNotFound:
    return RoomNotFound(message, code="automation_not_found")


async def put_client_automation(request: Request) -> Response:
    """Set the client's default automation, for its rooms without one of their own."""
    client = request.state.api_keys.client_for(request)
    doc = json.dumps(await _automation(request))
    await request.state.redis.set(keys.client_automation_key(client), doc)
    return JSONResponse(render(doc, "client"))


async def get_client_automation(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    doc = await request.state.redis.get(keys.client_automation_key(client))
    if not doc:
        raise _none("This client has no default automation.")
    return JSONResponse(render(doc, "client"))


async def delete_client_automation(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    await request.state.redis.delete(keys.client_automation_key(client))
    return Response(status_code=204)


async def list_runs(request: Request) -> Response:
    """The room's automation runs, one per room call, oldest first; paged with ``?after=<run's created ms>``."""
    state = request.state
    record = await own(request, state.api_keys.client_for(request))
    room_id = record["id"]
    after = request.query_params.get("after", "")
    if after and not is_digits(after):
        raise InvalidCommand("after must be the cursor of an earlier page.", code="invalid_after")
    found = await state.redis.zrangebyscore(keys.room_runs_key(room_id), f"({after}" if after else "-inf", "+inf",
                                            start=0, num=PAGE_MAX + 1, withscores=True)
    r = state.redis
    scids = [scid for scid, _ in found[:PAGE_MAX]]
    pipe = r.pipeline(transaction=False)
    for scid in scids:  # three round trips for the page: runs and their command lists, then the commands
        pipe.hgetall(keys.room_run_key(room_id, scid))
        pipe.lrange(keys.room_run_commands_key(room_id, scid), 0, -1)
    replies = await pipe.execute()
    runs, id_lists = replies[0::2], replies[1::2]
    pipe = r.pipeline(transaction=False)
    for cid in (cid for ids in id_lists for cid in ids):
        pipe.hmget(keys.command_key(cid), "id", "status")
    statuses = iter(await pipe.execute())
    items = []
    for run, ids in zip(runs, id_lists, strict=True):
        cmds = [dict(zip(("id", "status"), next(statuses), strict=True)) for _ in ids]
        if run:
            items.append(render_run(run, [c for c in cmds if c["id"]]))
    page: dict[str, Any] = {"items": items}
    if len(found) > PAGE_MAX:
        page["next"] = f"/v1/rooms/{room_id}/automation/runs?after={int(found[PAGE_MAX - 1][1])}"
    return JSONResponse(page)


async def room_events(request: Request) -> Response:
    """The room's Event Grid events (CloudEvents form) in arrival order, paged with ``?after=<seq>``."""
    record = await own(request, request.state.api_keys.client_for(request))
    room_id = record["id"]
    return JSONResponse(await event_page(request, keys.room_events_key(room_id), f"/v1/rooms/{room_id}/events"))


automation_routes = [
    Route("/v1/automation", put_client_automation, methods=["PUT"]),
    Route("/v1/automation", get_client_automation, methods=["GET"]),
    Route("/v1/automation", delete_client_automation, methods=["DELETE"]),
    Route("/v1/rooms/{room_id}/automation", put_room_automation, methods=["PUT"]),
    Route("/v1/rooms/{room_id}/automation", get_room_automation, methods=["GET"]),
    Route("/v1/rooms/{room_id}/automation", delete_room_automation, methods=["DELETE"]),
    Route("/v1/rooms/{room_id}/automation/runs", list_runs, methods=["GET"]),
    Route("/v1/rooms/{room_id}/events", room_events, methods=["GET"]),
]
