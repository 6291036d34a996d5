"""Read routes: commands, a call's commands and events, ACS reads, health."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api import render
from workers import keys, reads
from workers.command import is_terminal
from workers.errors import CommandNotFound, InvalidCommand

WORKER_FRESH_S = 10.0
EVENTS_PAGE = 100


async def _own_command(request: Request, client: str, command_id: str) -> dict[str, str]:
    record: dict[str, str] = await request.state.redis.hgetall(keys.command_key(command_id))
    if not record or record.get("client") != client:
        # Another client's command is indistinguishable from a missing one.
        raise CommandNotFound(f"No command {command_id!r} is known to this client.")
    return record


async def _own_call(request: Request, client: str) -> str:
    cc: str = request.path_params["call_connection_id"]
    if await request.state.redis.hget(keys.call_key(cc), "client") != client:
        raise CommandNotFound(f"No call {cc!r} is known to this client.", code="call_not_found")
    return cc


def _number(request: Request, name: str, default: float, high: float) -> float:
    raw = request.query_params.get(name, str(default))
    try:
        value = float(raw)
    except ValueError:
        raise InvalidCommand(f"{name} must be a number.", code=f"invalid_{name}") from None
    if not 0 <= value <= high:
        raise InvalidCommand(f"{name} must be between 0 and {high:g}.", code=f"invalid_{name}")
    return value


async def get_command(request: Request) -> Response:
    """A command; ``?wait=N`` (≤ 60 s) long-polls until it is terminal."""
    state = request.state
    client = state.api_keys.client_for(request)
    command_id = request.path_params["command_id"]
    wait_s = _number(request, "wait", 0, state.settings.wait_max_s)
    async with state.notifier.watch(command_id) as done:
        record = await _own_command(request, client, command_id)
        if not is_terminal(record["status"]) and wait_s > 0:
            # asyncio.timeout, not wait_for: wait_for runs the wait as a task of its own, so a wake-up takes
            # extra turns of the event loop, each behind whatever else is ready (the callback that woke us).
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await done.wait()
            # The announcement carries the record as it ended (whose owner was checked above); else read it.
            record = done.record or await _own_command(request, client, command_id)
    return JSONResponse(render.command_record(record))


async def call_commands(request: Request) -> Response:
    """A call's commands, in acceptance order."""
    state = request.state
    cc = await _own_call(request, state.api_keys.client_for(request))
    pipe = state.redis.pipeline(transaction=False)
    for cid in await state.redis.lrange(keys.call_commands_key(cc), 0, -1):
        pipe.hgetall(keys.command_key(cid))
    return JSONResponse({"items": [render.command_record(r) for r in await pipe.execute() if r]})


async def call_events(request: Request) -> Response:
    """A call's ACS events in arrival order, paged with ``?after=<seq>``."""
    state = request.state
    cc = await _own_call(request, state.api_keys.client_for(request))
    return JSONResponse(await event_page(request, keys.call_events_key(cc), f"/v1/calls/{cc}/events"))


async def index_page(request: Request, index: str, key_of: Callable[[str], str],
                     render: Callable[[dict[str, str]], dict[str, Any]], path: str, limit: int) -> dict[str, Any]:
    """One page of a client's resources listed in ``index`` (a zset of ids, all scored 0), by id after ``?after=``.

    An id whose record has expired is dropped from the index on the way.
    """
    after = request.query_params.get("after")
    r = request.state.redis
    ids = await r.zrangebylex(index, f"({after}" if after else "-", "+", start=0, num=limit + 1)
    pipe = r.pipeline(transaction=False)
    for resource_id in ids[:limit]:
        pipe.hgetall(key_of(resource_id))
    records = await pipe.execute()
    gone = [i for i, record in zip(ids, records, strict=False) if not record]
    if gone:
        await r.zrem(index, *gone)
    page: dict[str, Any] = {"items": [render(record) for record in records if record]}
    if len(ids) > limit:
        page["next"] = f"{path}?after={ids[limit - 1]}&limit={limit}"
    return page


SEQ = re.compile(r"^\d{1,20}-\d{1,20}$")


async def event_page(request: Request, stream: str, path: str) -> dict[str, Any]:
    """One page of a timeline (a stream of ``event`` JSON entries) after ``?after=<seq>``, with the next page's URL."""
    after = request.query_params.get("after")
    if after is not None and not SEQ.match(after):
        raise InvalidCommand("after must be the seq of an event from an earlier page.", code="invalid_after")
    entries = await request.state.redis.xrange(stream, min=f"({after}" if after else "-", count=EVENTS_PAGE)
    items = [{"seq": seq, **json.loads(fields["event"])} for seq, fields in entries]
    page: dict[str, Any] = {"items": items}
    if len(items) == EVENTS_PAGE:
        page["next"] = f"{path}?after={items[-1]['seq']}"
    return page


STREAM_HEARTBEAT_MS = 15_000


def _sse(seq: str, event: dict[str, Any]) -> bytes:
    kind = str(event.get("type", "")).rsplit(".", 1)[-1]
    return f"id: {seq}\nevent: {kind}\ndata: {json.dumps({'seq': seq, **event})}\n\n".encode()


async def call_event_stream(request: Request) -> Response:
    """Server-Sent Events: the call's timeline so far, then each event as it arrives.

    Resumable: a reconnecting client sends ``Last-Event-ID`` (or ``?after=``) and gets only what it
    missed. The stream ends after CallDisconnected, since ACS sends nothing for a call after it.
    """
    state = request.state
    cc = await _own_call(request, state.api_keys.client_for(request))
    last = request.headers.get("last-event-id") or request.query_params.get("after") or "0-0"
    stream_key = keys.call_events_key(cc)

    async def events() -> AsyncIterator[bytes]:
        cursor = last
        while not await request.is_disconnected():
            batch = await state.stream_redis.xread({stream_key: cursor}, count=100, block=STREAM_HEARTBEAT_MS)
            if not batch:
                yield b": keep-alive\n\n"  # proxies close idle connections; comments are ignored by clients
                continue
            for seq, fields in batch[0][1]:
                cursor = seq
                event = json.loads(fields["event"])
                yield _sse(seq, event)
                if str(event.get("type", "")).endswith("CallDisconnected"):
                    return

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _read(request: Request, fn: Any, *args: str) -> Response:
    return JSONResponse(await run_in_threadpool(fn, request.state.acs, *args))


async def get_call(request: Request) -> Response:
    """The call as ACS sees it now."""
    cc = await _own_call(request, request.state.api_keys.client_for(request))
    return await _read(request, reads.call, cc)


async def get_participants(request: Request) -> Response:
    cc = await _own_call(request, request.state.api_keys.client_for(request))
    return JSONResponse({"items": await run_in_threadpool(reads.participants, request.state.acs, cc)})


async def get_participant(request: Request) -> Response:
    cc = await _own_call(request, request.state.api_keys.client_for(request))
    return await _read(request, reads.participant, cc, request.path_params["raw_id"])


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def _primary_in_use(redis: aioredis.Redis) -> str:
    """The address this process's pool sends commands to: Sentinel's current answer, or the URL's host."""
    pool = redis.connection_pool
    address = getattr(pool, "master_address", None)  # a Sentinel pool's last discovered primary
    if address is None:
        address = (pool.connection_kwargs.get("host"), pool.connection_kwargs.get("port"))
    return f"{address[0]}:{address[1]}"


def replicas(replication: dict[str, Any]) -> list[dict[str, Any]]:
    """The primary's replicas from ``INFO replication`` (redis-py parses each ``slaveN`` line into a dict):
    address, state and lag (seconds since its last acknowledgement)."""
    return [{"address": f"{r.get('ip')}:{r.get('port')}", "state": r.get("state"), "lag_s": r.get("lag")}
            for name, r in sorted(replication.items()) if name.startswith("slave") and isinstance(r, dict)]


async def readyz(request: Request) -> Response:
    """200 only when Redis (which is also the broker) answers as a writable primary, has the replicas
    ``CALLQ_REDIS_MIN_REPLICAS`` asks for online (without them every write would answer 503 ``not_replicated``),
    and at least one worker is alive; says which primary is in use and how far behind its replicas are."""
    redis = request.state.redis
    checks: dict[str, str] = {}
    body: dict[str, Any] = {}
    alive = 0
    try:
        replication = await redis.info("replication")
        body["redis"] = {"primary": _primary_in_use(redis), "role": replication.get("role"),
                         "replicas": replicas(replication)}
        if replication.get("role") != "master":  # a managed endpoint still on the replica, mid-failover
            checks["redis"] = "read-only: the address in use is a replica"
        else:
            checks["redis"] = checks["broker"] = "ok"
        wanted = request.state.settings.redis_min_replicas
        if wanted:
            online = sum(1 for r in body["redis"]["replicas"] if r["state"] == "online")
            checks["replicas"] = "ok" if online >= wanted else f"{online} online, {wanted} required"
        alive = await redis.zcount(keys.WORKERS_ZSET, time.time() - WORKER_FRESH_S, "+inf")
        checks["workers"] = f"{alive} alive" if alive else "none alive"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ready = checks.get("redis") == "ok" and checks.get("replicas", "ok") == "ok" and alive > 0
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks, **body},
                        status_code=200 if ready else 503)


read_routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/v1/commands/{command_id}", get_command, methods=["GET"]),
    Route("/v1/calls/{call_connection_id}", get_call, methods=["GET"]),
    Route("/v1/calls/{call_connection_id}/commands", call_commands, methods=["GET"]),
    Route("/v1/calls/{call_connection_id}/events", call_events, methods=["GET"]),
    Route("/v1/calls/{call_connection_id}/events/stream", call_event_stream, methods=["GET"]),
    Route("/v1/calls/{call_connection_id}/participants", get_participants, methods=["GET"]),
    Route("/v1/calls/{call_connection_id}/participants/{raw_id}", get_participant, methods=["GET"]),
]
