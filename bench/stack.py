"""callq's own processes for a scenario: Redis, the ACS simulator, the API and Celery workers.

Everything runs as separate processes on free loopback ports, started by a scenario's :class:`Children`
(which stops them). The simulator's admin API creates the rooms whose calls commands connect to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from bench.load import Connection, post_bytes
from bench.procs import BenchError, Children, Server, free_port
from workers import keys

API_KEY = "bench-key-0123456789abcdef"
ACS_KEY = base64.b64encode(b"callq-bench-access-key-32-bytes!").decode()
AUTH = {"Authorization": f"Bearer {API_KEY}"}
FAST = "100000"  # CALLQ_ACS_RATE_PER_SECOND where the scenario is not about rate limiting


def callq_env(redis_url: str, *, api_port: int, sim_port: int,
              extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """CALLQ_* variables shared by the API, the simulator and the workers of one scenario."""
    return {
        "CALLQ_REDIS_URL": redis_url,
        "CALLQ_API_PORT": str(api_port),
        "CALLQ_SIM_PORT": str(sim_port),
        "CALLQ_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "CALLQ_ACS_ENDPOINT": f"http://127.0.0.1:{sim_port}",
        "CALLQ_ACS_ACCESS_KEY": ACS_KEY,
        "CALLQ_API_KEYS": f"bench:{API_KEY}",
        "CALLQ_ACS_RATE_PER_SECOND": FAST,
        # The door's pending limits stay on (their checks are part of every accept measured) but out of reach:
        # the accept scenario leaves tens of thousands of commands pending, and none may be refused.
        "CALLQ_MAX_PENDING_PER_CALL": "1000000000",
        "CALLQ_CLIENT_MAX_PENDING": "1000000000",
        "CALLQ_LOG_FORMAT": "text",
        **(extra or {}),
    }


@dataclass
class Stack:
    redis_url: str
    env: dict[str, str]
    api: Server | None = None
    sim: Server | None = None
    workers: list[Any] = field(default_factory=list)

    @property
    def api_url(self) -> str:
        assert self.api is not None, "this stack has no API"
        return self.api.url

    @property
    def sim_url(self) -> str:
        assert self.sim is not None, "this stack has no simulator"
        return self.sim.url

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, decode_responses=True)


def live_callq_workers(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.zcard(keys.WORKERS_ZSET))
    finally:
        client.close()


def start(children: Children, *, api: bool = True, sim: bool = True, workers: int = 0, concurrency: int = 8,
          extra_env: Mapping[str, str] | None = None) -> Stack:
    """Start Redis, then the simulator, API and workers together (start-up is mostly imports: overlap it)."""
    redis_url = children.redis()
    api_port, sim_port = free_port(), free_port()
    env = callq_env(redis_url, api_port=api_port, sim_port=sim_port, extra=extra_env)
    stack = Stack(redis_url, env)
    if sim:
        stack.sim = children.uvicorn("simulator", "simulator.app:create_app", env, health="/_sim/health",
                                     wait=False, port=sim_port)
    if api:
        stack.api = children.uvicorn("api", "api.app:create_app", env, wait=False, port=api_port)
    if workers:
        stack.workers = children.celery_workers("callq-w", "tasks.app", env, count=workers, concurrency=concurrency,
                                                queue="callq", live=lambda: live_callq_workers(redis_url))
    for server in (stack.sim, stack.api):
        if server is not None:
            server.ready()
    return stack


def create_rooms(sim_url: str, count: int) -> list[str]:
    """Rooms whose call has started (connect needs a running room call)."""
    rooms = []
    with httpx.Client(base_url=sim_url, trust_env=False, timeout=10) as sim:
        for i in range(count):
            resp = sim.post("/_sim/rooms", json={"pstn_dial_out_enabled": True})
            _check(resp, "create a simulator room")
            room_id = resp.json()["room_id"]
            _check(sim.post(f"/_sim/rooms/{room_id}/call", json={"participants": [f"8:acs:bench{i}"]}),
                   "start a room call")
            rooms.append(room_id)
    return rooms


def _check(resp: httpx.Response, what: str) -> None:
    if resp.status_code >= 300:
        raise BenchError(f"could not {what}: HTTP {resp.status_code} {resp.text[:200]}")


def sim_admin(sim_url: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    with httpx.Client(base_url=sim_url, trust_env=False, timeout=30) as sim:
        resp = sim.request(method, path, json=body)
        _check(resp, f"{method} {path}")
        return resp.json()


def connect_once(api: httpx.Client, room_id: str) -> dict[str, Any]:
    """POST connect with a fresh Idempotency-Key; the 202 body."""
    resp = api.post(f"/v1/rooms/{room_id}/connect", json={}, headers={"Idempotency-Key": str(uuid.uuid4())})
    _check(resp, "accept a connect command")
    body: dict[str, Any] = resp.json()
    return body


async def connect_many(api_url: str, rooms: list[str], count: int, *, concurrency: int = 16,
                       ids: list[str] | None = None) -> list[str]:
    """Accept ``count`` connect commands (spread over ``rooms``) as fast as the API takes them; their ids.

    Raw keep-alive connections rather than an HTTP client library: on two cores a heavy client would
    slow the API down. Ids are appended to ``ids`` (when given) as they come.
    """
    ids = [] if ids is None else ids
    parts = urlsplit(api_url)
    todo = iter(range(count))
    headers = {**AUTH, "Content-Type": "application/json"}

    async def post_some() -> None:
        conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
        await conn.open()
        try:
            for i in todo:
                path = f"/v1/rooms/{rooms[i % len(rooms)]}/connect"
                status, body = await conn.send(post_bytes(parts.netloc, path, {
                    **headers, "Idempotency-Key": str(uuid.uuid4())}, b"{}"))
                if status != 202:
                    raise BenchError(f"could not accept a connect command: HTTP {status} {body[:200]!r}")
                ids.append(json.loads(body)["id"])
        finally:
            conn.close()

    await asyncio.gather(*(post_some() for _ in range(concurrency)))
    return ids


def statuses(r: redis.Redis, command_ids: list[str]) -> list[str | None]:
    """Each command's status, in one pipelined round trip."""
    pipe = r.pipeline(transaction=False)
    for cid in command_ids:
        pipe.hget(keys.command_key(cid), "status")
    return list(pipe.execute())


def create_webhooks(api_url: str, urls: list[str], *, auth: Mapping[str, str] = AUTH,
                    events: tuple[str, ...] = ("command.succeeded",)) -> list[dict[str, Any]]:
    """Subscribe an endpoint per URL through ``POST /v1/webhooks``; the 201 bodies (each with its ``secret``)."""
    made = []
    with httpx.Client(base_url=api_url, headers=dict(auth), trust_env=False, timeout=30) as api:
        for url in urls:
            resp = api.post("/v1/webhooks", json={"url": url, "events": list(events)},
                            headers={"Idempotency-Key": str(uuid.uuid4())})
            _check(resp, "create a webhook endpoint")
            made.append(resp.json())
    return made
