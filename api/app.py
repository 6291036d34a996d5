"""The API application factory and its error → HTTP status table.

Serve with ``uvicorn --factory api.app:create_app``. Clients (Redis, HTTP, Celery message builder)
are built in the lifespan and yielded as its :class:`State`, which handlers read as ``request.state``;
nothing is global.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
from collections.abc import AsyncIterator
from typing import Any, TypedDict

import httpx
import redis.asyncio as aioredis
from azure.communication.callautomation import CallAutomationClient
from celery import Celery
from redis.exceptions import MasterDownError, TryAgainError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from api import openapi
from api.auth import ApiKeys
from api.automations import automation_routes
from api.callbacks import AcsTokenVerifier, acs_events
from api.eventgrid import eventgrid_routes
from api.eventgrid_auth import EventGridVerifier
from api.intake import ClientIntake
from api.metrics import CALLBACK_PATH, EVENTGRID_PATH, Flusher, RequestMetrics, flushing, metrics_routes, record_error
from api.notify import Notifier
from api.reads import read_routes
from api.recordings import recording_routes
from api.rooms import room_routes
from api.routes import command_routes
from api.schedules import schedule_routes
from api.ui import ui_routes
from api.webhooks import webhook_routes
from tasks.app import create_celery
from workers import logs, redis_clients
from workers.acs import create_client
from workers.errors import (
    AcsError,
    CallEnded,
    CallqError,
    CommandNotFound,
    ConfigError,
    Conflict,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    InvalidCommand,
    Refused,
    RoomNotFound,
    ScheduleNotFound,
    Unauthorized,
    WebhookNotFound,
)
from workers.heap import freeze_startup_heap
from workers.ratelimit import RateLimited, RateLimiter
from workers.replication import NotReplicated, Replication
from workers.rooms import RoomsAcs, create_rooms_client
from workers.scripts import AutoPipeline
from workers.settings import Settings

REDIS_POOL_WAIT_S = 10.0
log = logging.getLogger("callq.api")

STATUS: dict[type[CallqError], int] = {
    Unauthorized: 401,
    IdempotencyKeyMissing: 400,
    IdempotencyKeyInvalid: 400,
    IdempotencyKeyReused: 422,
    RateLimited: 429,
    Refused: 429,
    InvalidCommand: 422,
    CommandNotFound: 404,
    ScheduleNotFound: 404,
    RoomNotFound: 404,
    WebhookNotFound: 404,
    Conflict: 409,
    CallEnded: 409,
}
# Some validation codes are about the envelope rather than the content.
CODE_STATUS = {"invalid_json": 400, "body_too_large": 413, "unsupported_media_type": 415, "invalid_event": 400,
               # Event Grid: 503 is retried (a 401 would drop the delivery for a fault of ours); see api/eventgrid_*.py
               "signing_keys_unavailable": 503, "validation_mixed": 400, "too_many_events": 413,
               "bad_webhook_origin": 400}


def _error(status: int, code: str, message: str, details: list[dict[str, object]] | None = None,
           headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": code, "message": message, "details": details or []}}
    headers = {**(headers or {}), **({"WWW-Authenticate": "Bearer"} if status == 401 else {})}
    return JSONResponse(body, status_code=status, headers=headers)


def _acs_status(exc: AcsError) -> int:
    """ACS's own 4xx pass through (404 unknown call, 400 bad state); ACS failures and outages are 502."""
    if exc.status is not None and 400 <= exc.status < 500:
        return exc.status
    return 502


async def callq_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CallqError)
    record_error(request, exc)
    if isinstance(exc, AcsError):
        return _error(_acs_status(exc), "acs_error", exc.message,
                      [{"acs_status": exc.status, "acs_code": exc.acs_code, "acs_subcode": exc.acs_subcode}])
    status = CODE_STATUS.get(exc.code) or next((s for cls, s in STATUS.items() if isinstance(exc, cls)), 500)
    if status >= 500:
        log.error("unhandled callq error %s on %s", exc.code, request.url.path)
    headers = {"Retry-After": retry_after(exc.retry_after_s)} if isinstance(exc, RateLimited | Refused) else None
    return _error(status, exc.code, exc.message, exc.details, headers=headers)


def retry_after(seconds: float) -> str:
    """Retry-After in whole seconds (RFC 9110 delay-seconds), rounded up and at least 1."""
    return str(max(1, math.ceil(seconds)))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return _error(exc.status_code, code, str(exc.detail), headers=dict(exc.headers or {}))  # e.g. 405's Allow


# Redis answers, but cannot take writes now: a replica not yet promoted (READONLY), a replica that lost its
# primary (MASTERDOWN), a primary short of replicas (NOREPLICAS), a server loading its data (LOADING). All of them
# pass with a failover or a restart; the client retries with the same Idempotency-Key.
# (LOADING is a ConnectionError already; redis-py strips the codes it has classes for from the message.)
_NOT_WRITABLE = (aioredis.ReadOnlyError, MasterDownError, TryAgainError)
REDIS_RETRY_AFTER_S = 1


async def redis_down(request: Request, exc: Exception) -> Response:
    log.error("Redis unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return _error(503, "unavailable", "callq's store is unavailable right now; retry with the same Idempotency-Key.",
                  headers={"Retry-After": str(REDIS_RETRY_AFTER_S)})


async def not_replicated(request: Request, exc: Exception) -> Response:
    log.warning("writes not confirmed by the replicas on %s %s: %s", request.method, request.url.path, exc)
    return _error(503, "not_replicated", "callq's store did not confirm this write on its replicas in time; retry "
                  "with the same Idempotency-Key (the retry neither repeats nor loses it).",
                  headers={"Retry-After": str(REDIS_RETRY_AFTER_S)})


async def redis_refused(request: Request, exc: Exception) -> Response:
    """An error answer from Redis: a store that cannot take writes now is a 503; anything else is ours (500)."""
    if isinstance(exc, _NOT_WRITABLE) or str(exc).startswith("NOREPLICAS"):
        return await redis_down(request, exc)
    return await internal_error(request, exc)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return _error(500, "internal", "Something went wrong inside callq; the request may be retried.")


class State(TypedDict):
    """What the lifespan builds; Starlette hands a copy to every request, read as ``request.state.<name>``."""

    settings: Settings
    redis: aioredis.Redis
    stream_redis: aioredis.Redis  # a pool of its own for SSE streams (see lifespan)
    http: httpx.AsyncClient
    api_keys: ApiKeys
    celery: Celery
    scripts: AutoPipeline
    replication: Replication
    acs: CallAutomationClient
    rooms: RoomsAcs  # blocking: called through run_in_threadpool
    verifier: AcsTokenVerifier
    eventgrid: EventGridVerifier
    notifier: Notifier
    metrics: Flusher  # the one way this process writes its metrics to Redis (a scrape waits for a write in flight)


def _redis_pool(settings: Settings, max_connections: int) -> aioredis.Redis:
    # Blocking pool: under a burst a request waits (up to REDIS_POOL_WAIT_S) for a connection instead of failing
    # with "too many connections", which would be a 503 for a store that is perfectly up.
    return redis_clients.async_client(settings, max_connections=max_connections, pool_wait_s=REDIS_POOL_WAIT_S)


@contextlib.asynccontextmanager
async def lifespan(app: Starlette, *, settings: Settings, redis: aioredis.Redis | None = None,
                   rooms: RoomsAcs | None = None) -> AsyncIterator[State]:
    """Build the clients every request uses, and close them at shutdown; ``redis`` replaces both Redis pools,
    ``rooms`` the Rooms client."""
    logs.setup(settings, process="api")
    if not settings.api_keys:
        raise ConfigError("CALLQ_API_KEYS is empty: set name:key pairs (callq up generates a dev key)")
    commands = redis if redis is not None else _redis_pool(settings, settings.redis_max_connections)
    # An SSE stream holds its connection in a blocking XREAD for as long as it is open: in their own pool, many
    # open streams wait for each other there, never for the connections command requests and reads need.
    streams = redis if redis is not None else _redis_pool(settings, settings.redis_stream_max_connections)
    http = httpx.AsyncClient(timeout=10.0)
    # Reads pay the same shared ACS budget as the workers' commands (sync client: run in a threadpool).
    sync_redis = redis_clients.sync_client(settings)
    acs = create_client(settings, RateLimiter.for_endpoint(
        sync_redis, settings.acs_endpoint, rate_per_s=settings.acs_rate_per_s, burst=settings.acs_rate_burst))
    notifier = Notifier(commands)
    rooms = rooms or RoomsAcs(create_rooms_client(settings))
    # Every client is closed at shutdown even when closing an earlier one fails (Redis gone): a client left
    # open leaks its sockets until the garbage collector finds them.
    async with contextlib.AsyncExitStack() as closing:
        closing.callback(sync_redis.close)
        closing.callback(acs.close)
        closing.callback(rooms.close)
        if streams is not commands:
            closing.push_async_callback(streams.aclose)
        closing.push_async_callback(commands.aclose)
        closing.push_async_callback(http.aclose)
        closing.push_async_callback(notifier.stop)
        await notifier.start()
        replication = Replication.from_settings(settings)
        freeze_startup_heap()
        async with flushing(commands) as flusher:
            yield State(settings=settings, redis=commands, stream_redis=streams, http=http,
                        api_keys=ApiKeys(settings.api_keys), celery=create_celery(settings),
                        # every hot-path script call: accept, ingest, kick (it WAITs in the same round trip)
                        scripts=AutoPipeline(commands, replication), replication=replication,
                        acs=acs, rooms=rooms, verifier=AcsTokenVerifier(settings, http),
                        eventgrid=EventGridVerifier(settings, http), notifier=notifier, metrics=flusher)


def _merged(routes: list[BaseRoute]) -> list[BaseRoute]:
    """One Route per path, dispatching on the method, so a 405 names every allowed method (RFC 9110 Allow)."""
    by_path: dict[str, list[Route]] = {}
    for route in routes:
        if isinstance(route, Route):
            by_path.setdefault(route.path, []).append(route)
    merged: list[BaseRoute] = []
    for route in routes:
        same = by_path.get(route.path, []) if isinstance(route, Route) else []
        if len(same) <= 1:
            merged.append(route)
        elif route is same[0]:
            table = {m: r.endpoint for r in same for m in (r.methods or ()) if m != "HEAD"}

            async def dispatch(request: Request, table: dict[str, Any] = table) -> Response:
                return await table[request.method](request)  # type: ignore[no-any-return]  # route handlers return Response

            merged.append(Route(route.path, dispatch, methods=list(table), name=route.name))
    return merged


# Writes on these paths all go through the script pipeline, which confirms them with the replicas itself.
SELF_CONFIRMING = frozenset({"/v1/acs/events", "/v1/eventgrid/events", *(route.path for route in command_routes)})
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _acknowledged(routes: list[BaseRoute]) -> list[BaseRoute]:
    """Each route that writes answers a success only once the replicas confirmed its writes (replication.py).

    Its own writes may have gone over several pooled connections, in transactions or through the script
    pipeline; one barrier and ``WAIT`` after the handler covers them all. A failed request acknowledged nothing.
    """
    wrapped: list[BaseRoute] = []
    for route in routes:
        if (not isinstance(route, Route) or route.path in SELF_CONFIRMING
                or not WRITE_METHODS & set(route.methods or ())):
            wrapped.append(route)
            continue

        @functools.wraps(route.endpoint)  # its name and docstring, which the OpenAPI document reads
        async def confirmed(request: Request, endpoint: Any = route.endpoint) -> Response:
            response: Response = await endpoint(request)
            if response.status_code < 400:
                await request.state.replication.confirm_async(request.state.redis)
            return response

        wrapped.append(Route(route.path, confirmed, methods=list(route.methods or ()), name=route.name,
                             include_in_schema=route.include_in_schema))
    return wrapped


def create_app(settings: Settings | None = None, *, redis: aioredis.Redis | None = None,
               rooms: RoomsAcs | None = None) -> Starlette:
    """Build the API; ``redis`` and ``rooms`` let tests hand in (fake) clients instead of ones from settings."""
    if settings is None:  # served by `uvicorn --factory`: log in callq's format from uvicorn's first line on
        settings = Settings.from_env()
        logs.setup(settings, process="api")
    routes: list[BaseRoute] = [
        # First: ACS posts here most, and Starlette tries routes in order.
        Route("/v1/acs/events", acs_events, methods=["POST"]),
        *command_routes,  # before reads: `participants/remove` must not be taken for `participants/{raw_id}`
        *room_routes,
        *automation_routes,
        *webhook_routes,
        *eventgrid_routes,
        *read_routes,
        *recording_routes,
        *schedule_routes,
        Route("/openapi.json", openapi.openapi, methods=["GET"], include_in_schema=False),
        Route("/docs", openapi.docs, methods=["GET"], include_in_schema=False),
        *metrics_routes,
        *ui_routes,
    ]
    return Starlette(
        routes=_merged(_acknowledged(routes) if settings.redis_min_replicas else routes),
        lifespan=functools.partial(lifespan, settings=settings, redis=redis, rooms=rooms),
        # Metrics outside: a request's recorded time includes its wait for a turn at the intake.
        middleware=[Middleware(RequestMetrics),
                    Middleware(ClientIntake, limit=settings.client_max_in_flight,
                               api_keys=settings.api_keys.values(),
                               exempt_paths=frozenset({CALLBACK_PATH, EVENTGRID_PATH}))],
        exception_handlers={CallqError: callq_error, HTTPException: http_error,
                            aioredis.ConnectionError: redis_down, aioredis.TimeoutError: redis_down,
                            aioredis.ResponseError: redis_refused, NotReplicated: not_replicated,
                            Exception: internal_error},
    )
