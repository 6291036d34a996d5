"""One command through the runtime: the claim pays the shared budget, ACS's answer is recorded in one step.

ACS is a stand-in here (the real SDK against the simulator is tested in tests/integration); Redis runs both
fake and real, since the scripts are where the guarantees live.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis

from api.notify import Notifier
from tests import records
from workers import command, correlation, keys, ledger, scripts
from workers.command import Status
from workers.ratelimit import RateLimited, RateLimiter, RateLimitPolicy, prepaid
from workers.runtime import RetryLater, Runtime
from workers.settings import Settings


class Scheduler:
    def __init__(self) -> None:
        self.commands: list[tuple[str, str, float]] = []

    def message(self, command_type: str, command_id: str) -> str:
        return f"msg:{command_type}:{command_id}"

    def command(self, command_type: str, command_id: str, countdown_s: float) -> None:
        self.commands.append((command_type, command_id, countdown_s))

    def check(self, command_id: str, countdown_s: float) -> None:
        raise AssertionError("a wait needs no message of its own: its deadline is indexed (Runtime.check_due)")


class Acs:
    """Answers connect at once, as ACS does; ``on_connect`` plays what happens meanwhile (an early event)."""

    def __init__(self, on_connect: Any = None) -> None:
        self.connects: list[str] = []
        self._on_connect = on_connect

    def connect_call(self, *, callback_url: str, room_id: str, operation_context: str) -> SimpleNamespace:
        self.connects.append(operation_context)
        if self._on_connect:
            self._on_connect(operation_context)
        return SimpleNamespace(call_connection_id=f"cc-{operation_context}")


@pytest.fixture
def r(fake_and_real_redis: redis.Redis) -> redis.Redis:
    return fake_and_real_redis


def put(r: redis.Redis, cid: str, type_: str = "connect", **fields: Any) -> None:
    record = records.new_command(command_id=cid, client="alice", type_=type_, params={}, idempotency_key=cid,
                                room_id="room-1" if type_ == "connect" else "")
    flat = command.flatten(record | fields)
    r.hset(keys.command_key(cid), mapping=dict(zip(flat[::2], flat[1::2], strict=True)))


def runtime(r: redis.Redis, acs: Acs, **settings: Any) -> Runtime:
    return Runtime(Settings(acs_endpoint="http://acs.test", **settings), r, client=acs,  # type: ignore[arg-type]
                   scheduler=Scheduler(), rng=random.Random(1))


def test_a_connect_is_sent_once_then_waits_listed_under_its_deadline(r: redis.Redis) -> None:
    put(r, "c1")
    rt = runtime(r, acs := Acs(), outcome_timeout_s=60)
    assert rt.run("c1") == "waiting"
    assert acs.connects == ["c1"]
    cmd = r.hgetall(keys.command_key("c1"))
    assert (cmd["status"], cmd["attempts"], cmd["call_connection_id"]) == ("waiting", "1", "cc-c1")
    assert cmd["sent_at"] and int(cmd["wait_deadline"]) > time.time() * 1000
    assert r.hgetall(keys.call_key("cc-c1")) == {"state": "connecting", "client": "alice", "room_id": "room-1",
                                                 "connect_command": "c1"}
    assert r.lrange(keys.call_commands_key("cc-c1"), 0, -1) == ["c1"]
    assert r.get(keys.room_call_key("room-1")) == "cc-c1"
    assert r.zscore(keys.WAIT_DEADLINES, "c1") == float(cmd["wait_deadline"])
    assert r.llen(keys.queue_key(rt.settings.queue)) == 0  # nothing queued for the wait itself
    assert r.get(keys.rate_tat_key("acs.test")) is not None  # the claim paid for the request


def test_an_answer_after_the_event_is_recorded_but_starts_no_wait(r: redis.Redis) -> None:
    def early_event(cid: str) -> None:  # CallConnected beat the HTTP response
        scripts.run(r, ledger.transition(cid, Status("succeeded"), {}))

    put(r, "c1")
    rt = runtime(r, Acs(on_connect=early_event))
    assert rt.run("c1") == "succeeded"
    cmd = r.hgetall(keys.command_key("c1"))
    assert cmd["status"] == "succeeded" and cmd["sent_at"] and cmd["call_connection_id"] == "cc-c1"
    assert r.zscore(keys.WAIT_DEADLINES, "c1") is None
    assert r.llen(keys.queue_key(rt.settings.queue)) == 0


def test_a_spent_budget_leaves_the_command_unclaimed_for_a_later_try(r: redis.Redis) -> None:
    put(r, "c1")
    put(r, "c2")
    rt = runtime(r, acs := Acs(), acs_rate_per_s=0.5, acs_rate_burst=1, rate_wait_max_s=0.0)
    rt.run("c1")
    with pytest.raises(RetryLater) as later:
        rt.run("c2")
    assert 0 < later.value.delay_s <= 2.0
    assert acs.connects == ["c1"]
    cmd = r.hgetall(keys.command_key("c2"))
    assert (cmd["status"], cmd["attempts"]) == ("queued", "0")  # not an attempt: it never went
    assert cmd["throttled"].startswith("ACS rate limit reached")


def test_a_command_whose_turn_has_not_come_parks_without_a_message_and_pays_nothing(r: redis.Redis) -> None:
    put(r, "first", type_="play", call_connection_id="cc-1")  # accepted earlier, not sent yet
    put(r, "second", type_="play", call_connection_id="cc-1")
    r.rpush(keys.call_lane_key("cc-1"), "first", "second")
    rt = runtime(r, Acs())
    assert rt.run("second") == "queued"  # no RetryLater: no countdown message waits for its turn
    assert rt.scheduler.commands == []  # type: ignore[attr-defined]  # the test's Scheduler
    assert r.hmget(keys.command_key("second"), "status", "parked") == ["queued", "1"]
    assert r.get(keys.rate_tat_key("acs.test")) is None


def test_a_prepaid_block_lets_exactly_one_request_through_free(r: redis.Redis) -> None:
    limiter = RateLimiter(r, "acs.test", rate_per_s=0.5, burst=1)
    policy = RateLimitPolicy(limiter, max_wait_s=0.0)
    with prepaid():
        policy.on_request(None)  # type: ignore[arg-type]  # paid by the claim
        assert r.get(keys.rate_tat_key("acs.test")) is None
        policy.on_request(None)  # type: ignore[arg-type]  # a second request pays
        assert r.get(keys.rate_tat_key("acs.test")) is not None
    with pytest.raises(RateLimited):
        policy.on_request(None)  # type: ignore[arg-type]


def test_a_terminal_transition_announces_the_record_with_its_id(r: redis.Redis) -> None:
    put(r, "c1", status="waiting")
    pubsub = r.pubsub()
    pubsub.subscribe(keys.COMMAND_DONE_CHANNEL)
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    scripts.run(r, ledger.transition("c1", Status("succeeded"), {"result": {}}))
    message = pubsub.get_message(timeout=5)
    assert message is not None
    command_id, record = ledger.announced(message["data"])
    assert command_id == "c1"
    assert record == r.hgetall(keys.command_key("c1")) and record["status"] == "succeeded"
    pubsub.close()


def test_a_long_poll_is_handed_the_announced_record() -> None:
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeRedis(server=server, decode_responses=True)
    put(sync, "c1", status="waiting")

    async def poll() -> dict[str, str] | None:
        notifier = Notifier(fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
        await notifier.start()
        try:
            async with notifier.watch("c1") as done:
                await asyncio.to_thread(scripts.run, sync, ledger.transition(
                    "c1", Status.FAILED, {"error": {"code": "acs_failed"}}))
                async with asyncio.timeout(10):
                    await done.wait()
                return done.record
        finally:
            await notifier.stop()

    record = asyncio.run(poll())
    assert record is not None and record["status"] == "failed" and record["client"] == "alice"


def test_an_announcement_without_a_usable_record_asks_for_a_read() -> None:
    assert ledger.announced("c1") == ("c1", None)  # what a callq from before records were announced sends
    assert ledger.announced("c1 {not json") == ("c1", None)


class RecordingAcs:
    """Starts a recording the way the simulator fails one: StartRecordingFailed reaches callq before the answer."""

    def __init__(self, r: redis.Redis) -> None:
        self._r = r

    def start_recording(self, **kwargs: Any) -> SimpleNamespace:
        failed = {"id": "e-srf", "type": "Microsoft.Communication.StartRecordingFailed", "time": "2026-11-25T10:00:00Z",
                  "data": {"recordingId": "rec-1", "callConnectionId": "cc-1", "serverCallId": "scid-1",
                           "resultInformation": {"code": 500, "subCode": 8589, "message": "Record throttled."}}}
        scripts.run(self._r, correlation.ingest_call(correlation.clean(failed), dedup_ttl_s=60, ttl_s=60,
                                                     retention_s=3600))
        return SimpleNamespace(recording_id="rec-1")


def test_a_start_whose_failure_beat_its_answer_fails_once_the_answer_names_the_recording(r: redis.Redis) -> None:
    put(r, "s1", type_="start_recording", call_connection_id="cc-1",
        params={"server_call_id": "scid-1", "content": "audio", "channel": "mixed", "format": "wav"})
    rt = runtime(r, RecordingAcs(r))  # type: ignore[arg-type]  # a stand-in for the SDK client
    assert rt.run("s1") == "failed"
    cmd = r.hgetall(keys.command_key("s1"))
    assert json.loads(cmd["error"]) == {"code": "acs_failed", "message": "Record throttled.", "acs_code": 500,
                                        "acs_subcode": 8589}
    assert json.loads(cmd["resolved_by"])["type"] == "StartRecordingFailed"
    assert cmd["recording_id"] == "rec-1" and r.zscore(keys.WAIT_DEADLINES, "s1") is None


def test_a_send_waits_in_place_through_a_quiet_window_then_goes_having_paid_once(
        r: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    put(r, "c1")
    r.set(keys.QUIET_WINDOW, "1", px=60_000)  # another client's sparse command went first (lib.lua's dispatch)
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the window ends while the send waits for it
        waits.append(seconds)
        r.delete(keys.QUIET_WINDOW)
        assert r.get(keys.rate_tat_key("acs.test")) is None  # a yielded claim pays nothing

    monkeypatch.setattr("workers.runtime.time.sleep", sleep)
    rt = runtime(r, acs := Acs(), outcome_timeout_s=60, rate_wait_max_s=120)
    assert rt.run("c1") == "waiting"
    assert acs.connects == ["c1"] and len(waits) == 1 and 0 < waits[0] <= 60
    assert r.hget(keys.command_key("c1"), "attempts") == "1"


def test_a_send_held_longer_than_its_wait_allows_is_put_back_unclaimed(r: redis.Redis) -> None:
    put(r, "c1")
    r.set(keys.QUIET_WINDOW, "1", px=60_000)  # held open by hand: no dispatch opens one this long
    rt = runtime(r, acs := Acs(), outcome_timeout_s=60, rate_wait_max_s=0.5)
    with pytest.raises(RetryLater):
        rt.run("c1")
    assert acs.connects == []
    cmd = r.hgetall(keys.command_key("c1"))
    assert (cmd["status"], cmd.get("attempts", "0")) == ("queued", "0")
