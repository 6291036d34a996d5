"""The door: a new command past the call's or the client's pending limit, or the client's accept budget, is
refused with nothing recorded; one that ends frees its place. On fakeredis and on a real redis-server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import fakeredis
import pytest
import redis
from starlette.testclient import TestClient

from api.app import create_app
from tests import records
from tests.conftest import TEST_API_KEY
from workers import keys, ledger, scripts
from workers.command import Status
from workers.errors import ConfigError
from workers.ledger import Accepted, DoorLimits
from workers.settings import Settings


@pytest.fixture
def r(fake_and_real_redis: redis.Redis) -> redis.Redis:
    return fake_and_real_redis


def accept(r: redis.Redis, cid: str, *, call: str = "cc-1", client: str = "alice", limits: DoorLimits,
           key: str | None = None) -> Accepted:
    record = records.new_command(command_id=cid, client=client, type_="play", params={}, idempotency_key=key or cid)
    record["call_connection_id"] = call
    return scripts.run(r, ledger.accept(
        idempotency_key=keys.idempotency_key(client, key or cid), fingerprint="fp", command=record, queue="q",
        message=f"msg-{cid}", response_json="{}", idempotency_ttl_s=60, command_ttl_s=60, window=16,
        now_ms=int(time.time() * 1000), limits=limits))


def test_a_call_at_its_pending_limit_refuses_the_next_and_records_nothing(r: redis.Redis) -> None:
    limits = DoorLimits(per_call=2)
    assert not accept(r, "c1", limits=limits).refused and not accept(r, "c2", limits=limits).refused
    third = accept(r, "c3", limits=limits)
    assert (third.refused, third.refused_by, third.command_id) == ("too_many_pending", "call", "")
    assert third.retry_after_ms > 0
    assert not r.exists(keys.command_key("c3")) and not r.exists(keys.idempotency_key("alice", "c3"))
    # Only c1 is runnable (c2, a play, waits for it): c2 parked with its message, the refused c3 left nothing.
    assert r.lrange(keys.queue_key("q"), 0, -1) == ["msg-c1"]
    assert r.hget(keys.command_key("c2"), "msg") == "msg-c2"
    assert r.lrange(keys.call_commands_key("cc-1"), 0, -1) == ["c1", "c2"]
    assert not accept(r, "c4", call="cc-2", limits=limits).refused  # another call has room


def test_a_command_that_ends_frees_its_place_on_the_call_and_the_client(r: redis.Redis) -> None:
    limits = DoorLimits(per_call=1, per_client=5)
    accept(r, "c1", limits=limits)
    assert r.scard(keys.client_pending_key("alice")) == 1
    assert accept(r, "c2", limits=limits).refused == "too_many_pending"
    scripts.run(r, ledger.transition("c1", Status.SUCCEEDED, {}))
    assert r.scard(keys.call_pending_key("cc-1")) == 0 and r.scard(keys.client_pending_key("alice")) == 0
    assert accept(r, "c2", limits=limits).command_id == "c2"


def test_a_replay_is_answered_even_past_the_limit(r: redis.Redis) -> None:
    """A retry of an accepted request must get its command back, whatever the call's load now."""
    limits = DoorLimits(per_call=1)
    first = accept(r, "c1", limits=limits, key="k")
    again = accept(r, "c9", limits=limits, key="k")
    assert again.replayed and again.command_id == first.command_id == "c1"


def test_a_client_at_its_pending_limit_is_refused_on_any_call(r: redis.Redis) -> None:
    limits = DoorLimits(per_client=2)
    accept(r, "c1", call="cc-1", limits=limits)
    accept(r, "c2", call="cc-2", limits=limits)
    third = accept(r, "c3", call="cc-3", limits=limits)
    assert (third.refused, third.refused_by) == ("too_many_pending", "client")
    assert not accept(r, "b1", call="cc-3", client="bob", limits=limits).refused  # others are not held back


def test_a_client_past_its_accept_budget_is_told_when_to_come_back(r: redis.Redis) -> None:
    limits = DoorLimits(accept_rate_per_s=1, accept_burst=2)  # two at once, then one a second
    assert not accept(r, "c1", limits=limits).refused and not accept(r, "c2", limits=limits).refused
    third = accept(r, "c3", limits=limits)
    assert third.refused == "client_rate_limited" and 0 < third.retry_after_ms <= 1000
    assert not r.exists(keys.command_key("c3"))
    assert not accept(r, "b1", client="bob", limits=limits).refused


def test_scheduler_accepts_meet_no_limit_but_count_as_pending(r: redis.Redis) -> None:
    accept(r, "c1", limits=DoorLimits())
    accept(r, "c2", limits=DoorLimits())
    assert r.scard(keys.call_pending_key("cc-1")) == 2
    assert accept(r, "c3", limits=DoorLimits(per_call=2)).refused == "too_many_pending"


# --- the API's answer ---------------------------------------------------------------------------------------


@pytest.fixture
def api(server: fakeredis.FakeServer) -> Iterator[tuple[TestClient, fakeredis.FakeRedis]]:
    settings = Settings(api_keys={"alice": TEST_API_KEY}, acs_access_key="a2V5", max_pending_per_call=1)
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    r.hset(keys.call_key("cc-1"), mapping={"client": "alice", "state": "connected", "server_call_id": "scid-1"})
    with TestClient(create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))) as c:
        yield c, r


def _play(c: TestClient, key: str):  # type: ignore[no-untyped-def]
    return c.post("/v1/calls/cc-1/play", json={"text": "hold"},
                  headers={"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": key})


def test_the_api_answers_429_with_a_code_and_retry_after_and_the_key_stays_free(
        api: tuple[TestClient, fakeredis.FakeRedis]) -> None:
    c, r = api
    first = _play(c, "k1")
    assert first.status_code == 202
    refused = _play(c, "k2")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "too_many_pending" and "CALLQ_MAX_PENDING_PER_CALL" in error["message"]
    assert r.llen(keys.queue_key("callq")) == 1
    cancel = c.post("/v1/calls/cc-1/media/cancel", headers={"Authorization": f"Bearer {TEST_API_KEY}",
                                                             "Idempotency-Key": "k3"})
    assert cancel.status_code == 202  # an interrupt is never refused for pending work
    for done in (first.json()["id"], cancel.json()["id"]):
        scripts.run(r, ledger.transition(done, Status.FAILED, {}))
    again = _play(c, "k2")  # the same key, now that the call has room
    assert again.status_code == 202 and "Idempotent-Replayed" not in again.headers
    metrics_text = c.get("/metrics", headers={"Authorization": f"Bearer {TEST_API_KEY}"}).text
    assert 'callq_client_refused_total{client="alice",code="too_many_pending"} 1.0' in metrics_text
    assert 'callq_client_pending{client="alice"} 1.0' in metrics_text  # the play accepted last
    login = c.post("/ui/login", content=f"api_key={TEST_API_KEY}", follow_redirects=False,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert login.status_code == 303
    page = c.get("/ui/fragments/overview").text
    assert "Your pending commands" in page and "1 of 10000" in page
    assert "Refused at the door" in page and "1 too_many_pending" in page


def test_the_new_settings_are_read_and_checked() -> None:
    env = {"CALLQ_MAX_PENDING_PER_CALL": "0", "CALLQ_CLIENT_MAX_PENDING": "50",
           "CALLQ_CLIENT_ACCEPT_RATE_PER_SECOND": "20", "CALLQ_CLIENT_ACCEPT_BURST": "40"}
    s = Settings.from_env(env)
    assert (s.max_pending_per_call, s.client_max_pending, s.client_accept_rate_per_s, s.client_accept_burst) == (
        0, 50, 20, 40)
    with pytest.raises(ConfigError, match="CALLQ_MAX_PENDING_PER_CALL must be between 0"):
        Settings.from_env({"CALLQ_MAX_PENDING_PER_CALL": "-1"})
    assert Settings.from_env({}).max_pending_per_call == 100


def test_members_that_ended_without_leaving_are_dropped_when_the_limit_is_met(r: redis.Redis) -> None:
    """A command finished by a worker of an earlier release (no door) stays in the sets: at the limit it is
    dropped, not counted."""
    limits = DoorLimits(per_call=2, per_client=2)
    accept(r, "c1", limits=limits)
    accept(r, "c2", limits=limits)
    r.hset(keys.command_key("c1"), "status", "succeeded")  # ended the old way: still in both sets
    r.delete(keys.command_key("c2"))  # its record gone
    assert accept(r, "c3", limits=limits).command_id == "c3"
    assert r.smembers(keys.call_pending_key("cc-1")) == {"c3"}
    assert r.smembers(keys.client_pending_key("alice")) == {"c3"}


def test_a_full_call_first_drops_members_that_ended_without_leaving_its_pending_set(r: redis.Redis) -> None:
    limits = DoorLimits(per_call=2)
    accept(r, "c1", limits=limits)
    accept(r, "c2", limits=limits)
    # c1 ended without leaving the set (a worker of a release before the door), and c2's record is gone.
    r.hset(keys.command_key("c1"), "status", "succeeded")
    r.delete(keys.command_key("c2"))
    assert accept(r, "c3", limits=limits).command_id == "c3"
    assert r.smembers(keys.call_pending_key("cc-1")) == {"c3"}
