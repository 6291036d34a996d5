"""``GET /metrics`` and what the API itself records: requests, accepted and rejected commands, callback outcomes.

The figures live in Redis (see ``workers/metrics.py``), so any API process — of any replica, under any number of
uvicorn workers — renders the same numbers. ``/metrics`` needs ``Authorization: Bearer <CALLQ_METRICS_TOKEN>``
(a read-only credential for Prometheus, so its scrape config cannot send commands) or any API key; it is never
open, unlike Flower's.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import prometheus
from api.reads import WORKER_FRESH_S
from api.routes import COMMANDS
from workers import keys, metrics
from workers.correlation import IngestReport
from workers.errors import CallqError, Unauthorized

log = logging.getLogger("callq.api")
COMMAND_TYPES = frozenset(spec.type for spec in COMMANDS)
EVENTGRID_PATH = "/v1/eventgrid/events"
CALLBACK_PATH = "/v1/acs/events"
FLUSH_EVERY_S = 1.0
WEBHOOK_STATES = ("healthy", "failing", "disabled")


def _command_route(scope: Scope) -> str | None:
    """The command type when this request was routed to a command endpoint (POST), else None."""
    route = scope.get("route")
    name = getattr(route, "name", None)
    return name if scope.get("method") == "POST" and name in COMMAND_TYPES else None


class RequestMetrics:
    """Pure ASGI middleware: counts every request by route template and status, and each accepted command.

    Routing happens inside the app, so the route is read from the scope after the response started.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started: dict[str, Any] = {}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                started["status"] = message["status"]
                started["headers"] = {k.decode("latin-1").lower(): v.decode("latin-1")
                                      for k, v in message.get("headers", [])}
                _observe(scope, started["status"], started["headers"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            if "status" not in started:
                _observe(scope, 500, {})
            raise


def _observe(scope: Scope, status: int, headers: dict[str, str]) -> None:
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    metrics.RECORDER.inc("callq_http_requests", scope.get("method", ""), route, str(status))
    type_ = _command_route(scope)
    if type_ is None or status != 202:
        return
    command_id = headers.get("location", "").rsplit("/", 1)[-1]
    replayed = headers.get("idempotent-replayed") == "true"
    if not replayed:
        metrics.RECORDER.inc("callq_commands_accepted", type_)
    cc = (scope.get("path_params") or {}).get("call_connection_id")
    log.info("command %s (%s) %s", command_id, type_, "replayed (same Idempotency-Key)" if replayed else "accepted",
             extra={"command_id": command_id, "call_connection_id": cc})


def record_error(request: Request, exc: CallqError) -> None:
    """Count what an error response says about callq's clients and callbacks (called by the error handler)."""
    if isinstance(exc, Unauthorized) and request.url.path == EVENTGRID_PATH:
        metrics.RECORDER.inc("callq_eventgrid_auth_failures", exc.code)
    elif isinstance(exc, Unauthorized):
        name = "callq_callback_auth_failures" if request.url.path == CALLBACK_PATH else "callq_api_auth_failures"
        metrics.RECORDER.inc(name)
    type_ = _command_route(request.scope)
    if type_ is not None:
        metrics.RECORDER.inc("callq_commands_rejected", type_, exc.code)


def callbacks_ingested(report: IngestReport) -> None:
    """After a callback batch: duplicates dropped (the commands its events resolved were counted as they ended)."""
    if report.duplicates:
        metrics.RECORDER.inc("callq_callback_duplicates", by=report.duplicates)


class Flusher:
    """Writes this process's buffered metrics to Redis, one write at a time.

    A scrape flushes before it reads Redis. Without the lock, a scrape that came while the periodic flush was on the
    wire found the buffer already drained and read Redis before that write landed: the figures were in neither
    place, and the scrape missed them (the CI saw an accepted command uncounted). With it, the scrape waits for the
    write in flight.
    """

    def __init__(self, r: aioredis.Redis, recorder: metrics.Recorder = metrics.RECORDER) -> None:
        self._r = r
        self._recorder = recorder
        self._lock = asyncio.Lock()

    async def flush(self) -> None:
        async with self._lock:
            await metrics.flush_async(self._r, self._recorder)


@contextlib.asynccontextmanager
async def flushing(r: aioredis.Redis, every_s: float = FLUSH_EVERY_S) -> AsyncIterator[Flusher]:
    """Write this process's buffered metrics to Redis every ``every_s`` while the app runs, and once at the end."""
    flusher = Flusher(r)

    async def loop() -> None:
        failing = False
        while True:
            await asyncio.sleep(every_s)  # sleep-ok: the flush period, not synchronisation
            try:
                await flusher.flush()
                failing = False
            except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                if not failing:
                    log.warning("could not write metrics to Redis (%s); keeping them buffered", type(exc).__name__)
                failing = True

    task = asyncio.create_task(loop())
    try:
        yield flusher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(aioredis.ConnectionError, aioredis.TimeoutError):
            await flusher.flush()


class _Snapshot(Collector):
    """Families read from Redis for one scrape, handed to prometheus-client's exposition."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        yield from self._families


@dataclass(frozen=True)
class Health:
    """What the gauges say right now (also shown at the top of the operator page)."""

    queue_depth: int
    steps_depth: int
    unacked: int
    waiting: int
    waiting_overdue: int
    workers_alive: int
    acs_pause_s: float


async def read_health(r: aioredis.Redis, *, queue: str, acs_endpoint: str) -> Health:
    now = time.time()
    now_ms = int(now * 1000)
    pipe = r.pipeline(transaction=False)
    pipe.llen(keys.queue_key(queue))
    pipe.llen(keys.queue_key(keys.steps_queue(queue)))
    pipe.hlen(metrics.KOMBU_UNACKED)
    # One index of waiting commands (the reconciler's): scored by the outcome deadline, re-armed as a worker
    # takes a due one, so "overdue" is a wait past its deadline that no worker has taken up for a minute.
    pipe.zcard(keys.WAIT_DEADLINES)
    pipe.zcount(keys.WAIT_DEADLINES, "-inf", now_ms - prometheus.OVERDUE_GRACE_MS)
    pipe.zcount(keys.WORKERS_ZSET, now - WORKER_FRESH_S, "+inf")
    pipe.get(prometheus.pause_key(acs_endpoint))
    depth, steps, unacked, waiting, overdue, workers, paused_until = await pipe.execute()
    return Health(int(depth), int(steps), int(unacked), int(waiting), int(overdue), int(workers),
                  max(0.0, (int(paused_until or 0) - now_ms) / 1000))


async def webhook_states(r: aioredis.Redis, clients: Sequence[str]) -> dict[str, int]:
    """How many of these clients' webhook endpoints are in each state (every state present, 0 included).

    Two round trips whatever the number of endpoints (at most CALLQ_WEBHOOK_MAX_ENDPOINTS per client): their ids,
    then their states.
    """
    pipe = r.pipeline(transaction=False)
    for client in clients:
        pipe.zrange(keys.client_webhooks_all_key(client), 0, -1)
    ids = [ep for found in (await pipe.execute() if clients else []) for ep in found]
    pipe = r.pipeline(transaction=False)
    for ep in ids:
        pipe.hmget(keys.webhook_key(ep), "id", "state")
    counts = dict.fromkeys(WEBHOOK_STATES, 0)
    for exists, state in await pipe.execute() if ids else []:
        state = state or "healthy"  # as the API reads an endpoint that has no state yet
        if exists is not None and state in counts:  # one deleted between the two reads is not counted
            counts[state] += 1
    return counts


async def snapshot(r: aioredis.Redis, flusher: Flusher, *, queue: str, acs_endpoint: str,
                   clients: Sequence[str] = ()) -> list[Metric]:
    """Every metric family (including this process's own unflushed figures); ``clients``: whose pending to show."""
    await flusher.flush()
    names = list(metrics.SPECS)
    pipe = r.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(metrics.PREFIX + name)
    for client in clients:
        pipe.scard(keys.client_pending_key(client))
        pipe.llen(keys.client_ready_key(client))
    replies = await pipe.execute()
    hashes = dict(zip(names, replies[:len(names)], strict=True))
    per_client = replies[len(names):]
    pending = dict(zip(clients, per_client[::2], strict=True))
    ready = dict(zip(clients, per_client[1::2], strict=True))
    health = await read_health(r, queue=queue, acs_endpoint=acs_endpoint)
    gauges: dict[str, list[tuple[dict[str, str], float]]] = {
        "callq_queue_depth": [({"queue": queue}, float(health.queue_depth)),
                              ({"queue": keys.steps_queue(queue)}, float(health.steps_depth))],
        "callq_broker_unacked": [({}, float(health.unacked))],
        "callq_commands_waiting": [({}, float(health.waiting))],
        "callq_commands_waiting_overdue": [({}, float(health.waiting_overdue))],
        "callq_workers_alive": [({}, float(health.workers_alive))],
        "callq_acs_pause_seconds": [({}, health.acs_pause_s)],
        "callq_client_pending": [({"client": c}, float(n)) for c, n in pending.items()],
        "callq_client_ready": [({"client": c}, float(n)) for c, n in ready.items()],
        "callq_webhook_endpoints": [({"state": state}, float(n))
                                    for state, n in (await webhook_states(r, clients)).items()],
    }
    return prometheus.families(hashes, gauges)


def _authorize(request: Request) -> None:
    settings = request.state.settings
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if settings.metrics_token and scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), settings.metrics_token.encode()):
        return
    request.state.api_keys.client_for(request)  # raises Unauthorized


async def metrics_endpoint(request: Request) -> Response:
    """Prometheus text exposition of every callq figure."""
    _authorize(request)
    state = request.state
    families = await snapshot(state.redis, state.metrics, queue=state.settings.queue,
                              acs_endpoint=state.settings.acs_endpoint, clients=sorted(state.settings.api_keys))
    return Response(generate_latest(_Snapshot(families)), media_type=CONTENT_TYPE_LATEST)


metrics_routes = [Route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)]
