"""The door on the real stack: a call holding its limit of unfinished commands refuses the next one with 429 and
records nothing; an interrupt still gets through, and once the call's commands end the same request is accepted."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
import pytest
import redis

from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from workers import keys


def test_a_full_call_refuses_then_accepts_once_its_commands_end(
        simulator: ThreadServer, start_worker: Callable, redis_url: str,  # type: ignore[type-arg]
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    monkeypatch.setenv("CALLQ_MAX_PENDING_PER_CALL", "1")
    api: httpx.Client = request.getfixturevalue("api")  # started now, so it reads the limit above
    start_worker()
    cc = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])["call_connection_id"]
    looping = post(api, f"/v1/calls/{cc}/play", {"file_url": "https://example.org/hold.wav", "loop": True}).json()

    key = str(uuid.uuid4())
    refused = post(api, f"/v1/calls/{cc}/play", {"text": "one too many"}, key=key)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "too_many_pending"
    assert int(refused.headers["Retry-After"]) >= 1
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert not r.exists(keys.idempotency_key("alice", key))
    assert r.lrange(keys.call_commands_key(cc), 1, -1) == [looping["id"]]  # after the connect
    assert r.smembers(keys.call_pending_key(cc)) == {looping["id"]}

    cancel = post(api, f"/v1/calls/{cc}/media/cancel")  # an interrupt: never refused for pending work
    assert cancel.status_code == 202, cancel.text
    assert wait(api, looping["id"])["resolved_by"]["type"] == "PlayCanceled"
    assert wait(api, cancel.json()["id"])["status"] == "succeeded"

    accepted = post(api, f"/v1/calls/{cc}/play", {"text": "one too many"}, key=key)
    assert accepted.status_code == 202 and "Idempotent-Replayed" not in accepted.headers
    assert wait(api, accepted.json()["id"])["status"] == "succeeded"
