"""Recording-schedule routes: create, read, list, cancel, and an occurrence log (runs).

Same rules as the command routes: bearer auth, an ``Idempotency-Key`` on every mutating request (one
atomic script records it with the change and the Celery message that books or unbooks the beat entry),
JSON errors with stable codes, and another client's schedule is a 404.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import render
from api.auth import idempotency_key
from api.reads import index_page
from api.routes import is_digits, read_json
from api.schedule_schemas import CODES, ScheduleBody
from tasks.publish import task_message
from workers import command, commands, keys
from workers import schedules as s
from workers.errors import IdempotencyKeyReused, InvalidCommand, ScheduleNotFound

PAGE_DEFAULT, PAGE_MAX = 50, 100
BOOK, CANCEL = "callq.schedule_book", "callq.schedule_cancel"  # tasks.schedules (not imported: it loads redbeat)


def _invalid(exc: ValidationError) -> InvalidCommand:
    errors = exc.errors(include_url=False, include_input=False)
    details = [{"field": ".".join(str(p) for p in e["loc"]) or None, "code": e["type"], "message": e["msg"]}
               for e in errors]
    codes = {e["type"] for e in errors}
    code = codes.pop() if len(codes) == 1 and codes <= CODES else "validation_error"
    first = details[0]
    where = f"{first['field']}: " if first["field"] else ""
    return InvalidCommand(f"The request body is not valid ({where}{first['message']}).", code=code, details=details)


async def _body(request: Request) -> ScheduleBody:
    data = await read_json(request, empty_ok=False)
    try:
        return ScheduleBody.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _first_occurrence(body: ScheduleBody, now: int) -> int:
    """Checks that need the clock; returns the first planned time."""
    plan = body.plan(now)
    if body.start_at and plan.start is not None and plan.start < now:
        raise InvalidCommand("start_at is in the past; schedule a time from now on.", code="start_in_past")
    first = plan.first(now)
    if first is None:
        raise InvalidCommand("This cron expression never matches a date.", code="invalid_cron")
    gap = plan.shortest_gap_s(now)
    if gap is not None and gap <= plan.duration_s:
        raise InvalidCommand(f"Sessions would overlap: they start {gap} s apart but last {plan.duration_s} s.",
                             code="occurrences_overlap")
    return first


async def _own(request: Request, client: str) -> dict[str, str]:
    sid = request.path_params["schedule_id"]
    record: dict[str, str] = await request.state.redis.hgetall(s.schedule_key(sid))
    if not record or record.get("client") != client:
        raise ScheduleNotFound(f"No recording schedule {sid!r} is known to this client.")
    return record


def _message(request: Request, task: str, schedule_id: str) -> str:
    state = request.state
    return task_message(state.celery, task, str(uuid.uuid4()), [schedule_id], queue=state.settings.steps_queue)


def _answer(found: s.Recorded, fingerprint: str, status: int) -> Response:
    headers = {"Location": f"/v1/recording-schedules/{found.resource_id}"}
    if found.replayed:
        if found.fingerprint != fingerprint:
            raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request; "
                                       "use a new key for a new request.")
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(json.loads(found.response_json), status_code=status, headers=headers)


async def create_schedule(request: Request) -> Response:
    """Create a recording schedule; its first occurrence is booked with beat."""
    state = request.state
    client = state.api_keys.client_for(request)
    idem = idempotency_key(request)
    body = await _body(request)
    now = int(time.time())
    first = _first_occurrence(body, now)
    sid = f"rs_{time.time_ns() // 1_000_000:012x}{uuid.uuid4().hex[:16]}"  # time-ordered: lists page by id
    record = s.stored(s.new_schedule(schedule_id=sid, client=client, room_id=body.room_id, plan=body.plan(now),
                                     recording=body.recording(), windows=body.windows(), first=first,
                                     idempotency_key=idem))
    fingerprint = commands.fingerprint("POST /v1/recording-schedules", body.compared())
    found: s.Recorded = await state.scripts.run(s.create(
        client=client, idempotency_key=idem, schedule_id=sid, record=record, fingerprint=fingerprint,
        idempotency_ttl_s=state.settings.idempotency_ttl_s, queue=state.settings.steps_queue,
        book_message=_message(request, BOOK, sid), response_json=json.dumps(render.schedule(record))))
    return _answer(found, fingerprint, 201)


async def get_schedule(request: Request) -> Response:
    """One schedule, with its status and next run."""
    record = await _own(request, request.state.api_keys.client_for(request))
    return JSONResponse(render.schedule(record))


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(PAGE_DEFAULT))
    if not is_digits(raw) or not 1 <= int(raw) <= PAGE_MAX:
        raise InvalidCommand(f"limit must be a whole number from 1 to {PAGE_MAX}.", code="invalid_limit")
    return int(raw)


async def list_schedules(request: Request) -> Response:
    """The client's schedules, oldest first, paged with ``?after=<id>&limit=N``."""
    state = request.state
    client = state.api_keys.client_for(request)
    page = await index_page(request, s.client_schedules_key(client), s.schedule_key, render.schedule,
                            "/v1/recording-schedules", _limit(request))
    return JSONResponse(page)


async def delete_schedule(request: Request) -> Response:
    """Cancel future occurrences; a running one is stopped cleanly (its run ends ``cancelled``)."""
    state = request.state
    client = state.api_keys.client_for(request)
    idem = idempotency_key(request)
    record = await _own(request, client)
    sid = record["id"]
    now = command.now_iso()
    response = render.schedule({**record, "status": "cancelled", "next_planned": "", "updated_at": now,
                                "cancelled_at": record.get("cancelled_at") or now})
    fingerprint = commands.fingerprint(f"DELETE /v1/recording-schedules/{sid}", {})
    found: s.Recorded = await state.scripts.run(s.cancel(
        client=client, idempotency_key=idem, schedule_id=sid, fingerprint=fingerprint,
        idempotency_ttl_s=state.settings.idempotency_ttl_s, queue=state.settings.steps_queue,
        cancel_message=_message(request, CANCEL, sid), response_json=json.dumps(response), now_iso=now,
        retention_s=state.settings.command_ttl_s))
    if found.outcome == "missing":
        raise ScheduleNotFound(f"No recording schedule {sid!r} is known to this client.")
    return _answer(found, fingerprint, 200)


async def schedule_runs(request: Request) -> Response:
    """The schedule's occurrences so far (planned time order), paged with ``?after=<epoch s>&limit=N``."""
    state = request.state
    record = await _own(request, state.api_keys.client_for(request))
    sid, limit = record["id"], _limit(request)
    after = request.query_params.get("after", "")
    if after and not is_digits(after):
        raise InvalidCommand("after must be the epoch seconds of a run's planned time.", code="invalid_after")
    planned = await state.redis.zrangebyscore(s.runs_key(sid), f"({after}" if after else "-inf", "+inf",
                                              start=0, num=limit + 1)
    items = [item for p in planned[:limit] if (item := await _run(request, sid, int(p)))]
    page: dict[str, Any] = {"items": items}
    if len(planned) > limit:
        page["next"] = f"/v1/recording-schedules/{sid}/runs?after={planned[limit - 1]}&limit={limit}"
    return JSONResponse(page)


async def _run(request: Request, sid: str, planned: int) -> dict[str, Any] | None:
    r = request.state.redis
    run = await r.hgetall(s.run_key(sid, planned))
    if not run:
        return None
    pipe = r.pipeline(transaction=False)
    for cid in await r.lrange(s.run_commands_key(sid, planned), 0, -1):
        pipe.hmget(keys.command_key(cid), "id", "type", "status")
    cmds = [dict(zip(("id", "type", "status"), c, strict=True)) for c in await pipe.execute() if c[0]]
    return render.schedule_run(run, cmds)


_SCHEDULE = {"type": "object", "description": "A recording schedule: id, room_id, kind (once|cron|every), "
             "start_at, cron, timezone, every, duration, recording, pause_windows, status "
             "(active|finished|cancelled), next_run_at, created_at, links"}
_RUNS = {"type": "object", "description": "items: each occurrence's planned_at, state (starting|recording|paused|"
         "stopping|completed|completed_early|missed|failed|cancelled), call_connection_id, recording_id, commands "
         "(id, step, type, status), error, links (recording, files: once it has a recording); next: the following "
         "page"}
_PAGE = [{"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1,
                                                                         "maximum": PAGE_MAX}},
         {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}}]


def openapi_paths(idem: dict[str, Any], errors: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """These routes for ``/openapi.json`` (the body's schema is ``ScheduleBody``)."""
    sid = {"name": "schedule_id", "in": "path", "required": True, "schema": {"type": "string"}}

    def ok(status: str, what: str, schema: dict[str, Any], *codes: int) -> dict[str, Any]:
        return {status: {"description": what, "content": {"application/json": {"schema": schema}}}, **errors(*codes)}

    return {
        "/v1/recording-schedules": {
            "post": {"operationId": "create_recording_schedule", "summary": "Schedule recordings of a room's call "
                     "(one-off, cron in a timezone, or every N)", "parameters": [idem],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": "#/components/schemas/ScheduleBody"}}}},
                     "responses": ok("201", "created (or replayed)", _SCHEDULE, 400, 401, 413, 415, 422)},
            "get": {"operationId": "list_recording_schedules", "summary": "Your schedules, oldest first",
                    "parameters": _PAGE, "responses": ok("200", "a page", {"type": "object"}, 401, 422)}},
        "/v1/recording-schedules/{schedule_id}": {
            "get": {"operationId": "get_recording_schedule", "summary": "A schedule", "parameters": [sid],
                    "responses": ok("200", "the schedule", _SCHEDULE, 401, 404)},
            "delete": {"operationId": "cancel_recording_schedule", "summary": "Cancel future occurrences; stop a "
                       "running one", "parameters": [sid, idem],
                       "responses": ok("200", "cancelled (or replayed)", _SCHEDULE, 400, 401, 404, 422)}},
        "/v1/recording-schedules/{schedule_id}/runs": {
            "get": {"operationId": "list_recording_schedule_runs", "summary": "Each occurrence so far: planned time, "
                    "state, recording, commands, error", "parameters": [sid, *_PAGE],
                    "responses": ok("200", "a page of runs", _RUNS, 401, 404, 422)}},
    }


schedule_routes = [
    Route("/v1/recording-schedules", create_schedule, methods=["POST"]),
    Route("/v1/recording-schedules", list_schedules, methods=["GET"]),
    Route("/v1/recording-schedules/{schedule_id}", get_schedule, methods=["GET"]),
    Route("/v1/recording-schedules/{schedule_id}", delete_schedule, methods=["DELETE"]),
    Route("/v1/recording-schedules/{schedule_id}/runs", schedule_runs, methods=["GET"]),
]
