"""The HTTP routes: accept commands idempotently, read them back, health."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api import callbacks
from api.auth import idempotency_key
from api.schemas import ConnectBody, HangUpBody
from tasks.app import task_name
from tasks.publish import task_message
from workers import keys, ledger
from workers.errors import (
    CallEnded,
    CommandNotFound,
    IdempotencyKeyReused,
    InvalidCommand,
)

MAX_BODY_BYTES = 16_384
WORKER_FRESH_S = 10.0


async def _body(request: Request, model: type[BaseModel]) -> BaseModel:
    raw = await request.body()
    if len(raw) > MAX_BODY_BYTES:
        raise InvalidCommand(f"Request body is larger than {MAX_BODY_BYTES} bytes.", code="body_too_large")
    if not raw.strip():
        data: Any = {}
    else:
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise InvalidCommand("Send the body as JSON with 'Content-Type: application/json'.",
                                 code="unsupported_media_type")
        try:
            data = json.loads(raw)
        except ValueError:
            raise InvalidCommand("The request body is not valid JSON.", code="invalid_json") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
                   for e in exc.errors(include_url=False, include_input=False)]
        raise InvalidCommand("The request body is not valid.", code="validation_error", details=details) from None


async def _call_for(request: Request, client: str, call_connection_id: str) -> None:
    owner, state = await request.app.state.redis.hmget(keys.call_key(call_connection_id), "client", "state")
    if owner != client:
        raise CommandNotFound(f"No call {call_connection_id!r} is known to this client.", code="call_not_found")
    if state == "disconnected":
        raise CallEnded(f"Call {call_connection_id!r} has ended; no more commands can be sent to it.")


async def _accept(request: Request, type_: str, params: dict[str, Any], *, room_id: str = "",
                  call_connection_id: str = "") -> Response:
    """Record the key, create the command and enqueue its task: atomically, exactly once per key."""
    state = request.app.state
    client = state.api_keys.client_for(request)
    idem = idempotency_key(request)
    body = await _body(request, state.body_models[type_])
    params = {**params, **body.model_dump()}
    if call_connection_id:
        await _call_for(request, client, call_connection_id)
    fingerprint = hashlib.sha256(json.dumps({"route": f"{request.method} {request.url.path}", "body": params},
                                            sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    command_id = f"cmd_{uuid.uuid4().hex}"
    record = ledger.new_command(command_id=command_id, client=client, type_=type_, params=params,
                                idempotency_key=idem, call_connection_id=call_connection_id, room_id=room_id)
    response = json.dumps(ledger.render({k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}))
    message = task_message(state.celery, task_name(type_), command_id, [command_id], queue=state.settings.queue)
    outcome, found_id, found_fp, found_response = await state.accept_script(
        keys=[keys.idempotency_key(client, idem), keys.command_key(command_id), keys.queue_key(state.settings.queue),
              keys.call_commands_key(call_connection_id) if call_connection_id else ""],
        args=[fingerprint, command_id, state.settings.idempotency_ttl_s, state.settings.command_ttl_s, message,
              response, *ledger.flatten(record)],
    )
    if outcome == "replay":
        if found_fp != fingerprint:
            raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request; "
                                       "use a new key for a new request.")
        return JSONResponse(json.loads(found_response), status_code=202,
                            headers={"Idempotent-Replayed": "true", "Location": f"/v1/commands/{found_id}"})
    return JSONResponse(json.loads(found_response), status_code=202, headers={"Location": f"/v1/commands/{found_id}"})


async def connect(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    if not room_id.strip() or len(room_id) > 128:
        raise InvalidCommand("room_id must be 1-128 characters.", code="invalid_room_id")
    return await _accept(request, "connect", {"room_id": room_id}, room_id=room_id)


async def hang_up(request: Request) -> Response:
    return await _accept(request, "hang_up", {}, call_connection_id=request.path_params["call_connection_id"])


async def _own_command(request: Request, client: str, command_id: str) -> dict[str, str]:
    record = await request.app.state.redis.hgetall(keys.command_key(command_id))
    if not record or record.get("client") != client:
        # Another client's command is indistinguishable from a missing one.
        raise CommandNotFound(f"No command {command_id!r} is known to this client.")
    return record


async def get_command(request: Request) -> Response:
    state = request.app.state
    client = state.api_keys.client_for(request)
    command_id = request.path_params["command_id"]
    raw_wait = request.query_params.get("wait", "0")
    try:
        wait_s = float(raw_wait)
    except ValueError:
        raise InvalidCommand("wait must be a number of seconds.", code="invalid_wait") from None
    if not 0 <= wait_s <= state.settings.wait_max_s:
        raise InvalidCommand(f"wait must be between 0 and {state.settings.wait_max_s} seconds.", code="invalid_wait")
    async with state.notifier.watch(command_id) as done:
        record = await _own_command(request, client, command_id)
        if record["status"] not in ledger.TERMINAL and wait_s > 0:
            try:
                await asyncio.wait_for(done.wait(), timeout=wait_s)
            except TimeoutError:
                pass
            record = await _own_command(request, client, command_id)
    return JSONResponse(ledger.render(record))


async def call_commands(request: Request) -> Response:
    state = request.app.state
    client = state.api_keys.client_for(request)
    cc = request.path_params["call_connection_id"]
    owner = await state.redis.hget(keys.call_key(cc), "client")
    if owner != client:
        raise CommandNotFound(f"No call {cc!r} is known to this client.", code="call_not_found")
    ids = await state.redis.lrange(keys.call_commands_key(cc), 0, -1)
    pipe = state.redis.pipeline(transaction=False)
    for cid in ids:
        pipe.hgetall(keys.command_key(cid))
    records = [r for r in await pipe.execute() if r]
    return JSONResponse({"items": [ledger.render(r) for r in records]})


async def call_events(request: Request) -> Response:
    state = request.app.state
    client = state.api_keys.client_for(request)
    cc = request.path_params["call_connection_id"]
    if await state.redis.hget(keys.call_key(cc), "client") != client:
        raise CommandNotFound(f"No call {cc!r} is known to this client.", code="call_not_found")
    entries = await state.redis.xrange(keys.call_events_key(cc), count=1000)
    return JSONResponse({"items": [{"seq": seq, **json.loads(fields["event"])} for seq, fields in entries]})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 only when Redis (which is also the broker) answers and at least one worker is alive."""
    redis = request.app.state.redis
    checks: dict[str, str] = {}
    try:
        await redis.ping()
        checks["redis"] = checks["broker"] = "ok"
        alive = await redis.zcount(keys.WORKERS_ZSET, time.time() - WORKER_FRESH_S, "+inf")
        checks["workers"] = f"{alive} alive" if alive else "none alive"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
        alive = 0
    ready = checks.get("redis") == "ok" and alive > 0
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks},
                        status_code=200 if ready else 503)


BODY_MODELS: dict[str, type[BaseModel]] = {"connect": ConnectBody, "hang_up": HangUpBody}

routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/v1/rooms/{room_id}/connect", connect, methods=["POST"]),
    Route("/v1/calls/{call_connection_id}/hang-up", hang_up, methods=["POST"]),
    Route("/v1/calls/{call_connection_id}/commands", call_commands, methods=["GET"]),
    Route("/v1/calls/{call_connection_id}/events", call_events, methods=["GET"]),
    Route("/v1/commands/{command_id}", get_command, methods=["GET"]),
    Route("/v1/acs/events", callbacks.acs_events, methods=["POST"]),
]
