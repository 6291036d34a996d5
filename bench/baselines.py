"""Baseline servers, each a Starlette app served by uvicorn in its own process just like callq's API.

``uvicorn --factory bench.baselines:<name>``; configuration comes from ``BENCH_REDIS_URL``.

* ``naive_accept``: ``await run_in_threadpool(task.apply_async, ...)`` on a plain Celery app: what most
  projects write, and what callq's accept is held against.
* ``raw_lpush``: one ``redis.asyncio`` LPUSH per request: the ceiling for "accept into a Redis queue".
* ``raw_xadd``: one XADD per callback POST, no JWT, no parsing: the ceiling for event ingest.
* ``callback_sink``: receives the simulator's callbacks for the naive blocking-wait baseline and wakes
  the task waiting for that call (an LPUSH its BLPOP sees).
* ``stub_acs``: answers every ACS request at once with no work and no callbacks: the HTTP ceiling the
  simulator's capacity is compared with.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

RAW_QUEUE = "bench:raw"
RAW_STREAM = "bench:events"


@contextlib.asynccontextmanager
async def _with_redis(app: Starlette) -> AsyncIterator[None]:
    app.state.redis = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    try:
        yield
    finally:
        await app.state.redis.aclose()


async def _ok(request: Request) -> Response:
    return Response(b"ok")


def _app(path: str, endpoint: object, *, lifespan: object = _with_redis) -> Starlette:
    return Starlette(routes=[Route("/healthz", _ok), Route(path, endpoint, methods=["POST"])],  # type: ignore[arg-type]
                     lifespan=lifespan)  # type: ignore[arg-type]


async def _naive_accept(request: Request) -> Response:
    await request.body()
    result = await run_in_threadpool(request.app.state.task.apply_async, args=[str(uuid.uuid4())])
    return JSONResponse({"id": result.id, "status": "queued"}, status_code=202)


def naive_accept() -> Starlette:
    from bench.naive import noop  # only in this server process: it builds a Celery app from the environment

    app = _app("/accept", _naive_accept, lifespan=None)
    app.state.task = noop
    return app


async def _raw_lpush(request: Request) -> Response:
    body = await request.body()
    await request.app.state.redis.lpush(RAW_QUEUE, body)
    return JSONResponse({"status": "queued"}, status_code=202)


def raw_lpush() -> Starlette:
    return _app("/accept", _raw_lpush)


async def _raw_xadd(request: Request) -> Response:
    body = await request.body()
    await request.app.state.redis.xadd(RAW_STREAM, {"event": body})
    return JSONResponse({"stored": 1})


def raw_xadd() -> Starlette:
    return _app("/events", _raw_xadd)


async def _callback_sink(request: Request) -> Response:
    events = json.loads(await request.body())
    pipe = request.app.state.redis.pipeline(transaction=False)
    for event in events if isinstance(events, list) else [events]:
        if str(event.get("type", "")).endswith("CallConnected"):
            pipe.lpush(f"bench:cb:{event['data']['callConnectionId']}", "1")
    await pipe.execute()
    return Response(status_code=200)


def callback_sink() -> Starlette:
    return _app("/callbacks", _callback_sink)


async def _stub(request: Request) -> Response:
    await request.body()
    return JSONResponse({}, status_code=202 if request.method == "POST" else 200)


def stub_acs() -> Starlette:
    return Starlette(routes=[Route("/healthz", _ok), Route("/{path:path}", _stub, methods=["GET", "POST"])])
