"""Fair intake on the real stack (uvicorn, real Redis): two clients bursting at once, each held to its limit while
the other is there, get every request answered once, as their own. The order of service is asserted in
tests/unit/test_intake.py, where it can be asserted without a clock."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import redis

from tests.conftest import OTHER_API_KEY, TEST_API_KEY
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import sim_room_call
from workers import keys

BURST = 30


async def _burst(base_url: str, api_key: str, rooms: list[str]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=base_url, timeout=60, headers={"Authorization": f"Bearer {api_key}"},
                                 limits=httpx.Limits(max_connections=BURST)) as c:
        return list(await asyncio.gather(*(
            c.post(f"/v1/rooms/{room}/connect", json={}, headers={"Idempotency-Key": str(uuid.uuid4())})
            for room in rooms)))


def test_two_clients_bursting_at_once_each_get_every_request_accepted_once(
        simulator: ThreadServer, stack_env: dict[str, str], redis_url: str, monkeypatch: pytest.MonkeyPatch,
        request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("CALLQ_API_KEYS", f"alice:{TEST_API_KEY},bob:{OTHER_API_KEY}")
    monkeypatch.setenv("CALLQ_CLIENT_MAX_IN_FLIGHT", "2")
    api_server: ThreadServer = request.getfixturevalue("api_server")  # started now: it reads the two above
    rooms = {name: [sim_room_call(simulator) for _ in range(BURST)] for name in ("alice", "bob")}

    async def both() -> tuple[list[httpx.Response], list[httpx.Response]]:
        a, b = await asyncio.gather(_burst(api_server.url, TEST_API_KEY, rooms["alice"]),
                                    _burst(api_server.url, OTHER_API_KEY, rooms["bob"]))
        return a, b

    alice, bob = asyncio.run(both())
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    for name, answers in (("alice", alice), ("bob", bob)):
        assert [a.status_code for a in answers] == [202] * BURST, [a.text for a in answers if a.status_code != 202]
        ids = {a.json()["id"] for a in answers}
        assert len(ids) == BURST
        assert {r.hget(keys.command_key(i), "client") for i in ids} == {name}
