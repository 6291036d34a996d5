"""Idempotency on a real Redis: concurrency, atomicity under injected failure, and Redis outages."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis

from tests.conftest import TEST_API_KEY, free_port
from tests.integration.conftest import ThreadServer
from workers import keys


def _counts(r: redis.Redis) -> tuple[int, int, int]:
    """(idempotency keys, commands, queued task messages: in the broker, or waiting their client's turn)."""
    return (len(list(r.scan_iter("callq:idem:*"))), len([k for k in r.scan_iter("callq:cmd:*")]),
            int(r.llen(keys.queue_key("callq"))) + int(r.llen(keys.FAIR_BACKLOG)))


def test_many_concurrent_requests_with_one_key_make_one_command_and_one_task(api_server: ThreadServer,
                                                                              redis_url: str) -> None:
    key = str(uuid.uuid4())

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(base_url=api_server.url, limits=limits, timeout=30,
                                     headers={"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": key}) as c:
            return await asyncio.gather(*(c.post("/v1/rooms/room-1/connect") for _ in range(50)))

    answers = asyncio.run(burst())
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1
    assert sum(1 for a in answers if "Idempotent-Replayed" not in a.headers) == 1
    assert _counts(redis.Redis.from_url(redis_url)) == (1, 1, 1)


def test_a_burst_larger_than_the_redis_pool_waits_for_connections_instead_of_failing(
        stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("CALLQ_REDIS_MAX_CONNECTIONS", "2")
    server = ThreadServer("api.app:create_app", stack_env, int(stack_env["CALLQ_API_PORT"])).start()
    try:
        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=server.url, limits=httpx.Limits(max_connections=40), timeout=30,
                                         headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as c:
                posts = (c.post(f"/v1/rooms/room-{i}/connect", headers={"Idempotency-Key": f"b{i}"})
                         for i in range(40))
                return await asyncio.gather(*posts)

        assert sorted({a.status_code for a in asyncio.run(burst())}) == [202]
        assert _counts(redis.Redis.from_url(redis_url)) == (40, 40, 40)
    finally:
        server.stop()


def test_a_failing_accept_leaves_nothing_and_the_retry_succeeds(api_server: ThreadServer, redis_url: str) -> None:
    """Inject a Redis error inside the accept script (the broker list is the wrong type)."""
    r = redis.Redis.from_url(redis_url)
    r.set(keys.queue_key("callq"), "not a list")
    headers = {"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": "k-atomic"}
    failed = httpx.post(f"{api_server.url}/v1/rooms/room-1/connect", headers=headers, timeout=30)
    assert failed.status_code == 500 and failed.json()["error"]["code"] == "internal"
    assert r.keys("callq:idem:*") == [] and r.keys("callq:cmd:*") == []

    r.delete(keys.queue_key("callq"))
    retried = httpx.post(f"{api_server.url}/v1/rooms/room-1/connect", headers=headers, timeout=30)
    assert retried.status_code == 202 and "Idempotent-Replayed" not in retried.headers
    assert _counts(r) == (1, 1, 1)


def test_redis_down_is_503_and_readyz_says_not_ready(stack_env: dict[str, str],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    server = ThreadServer("api.app:create_app", stack_env, int(stack_env["CALLQ_API_PORT"])).start()
    try:
        resp = httpx.post(f"{server.url}/v1/rooms/room-1/connect", timeout=30,
                          headers={"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": "k"})
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable"
        ready = httpx.get(f"{server.url}/readyz", timeout=30)
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")
    finally:
        server.stop()
