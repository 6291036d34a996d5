"""room_event.lua and the automation runner, on fakeredis and on the suite's real redis-server: one run per room
call whatever the deliveries, Event Grid's missing order, calls that end, and the order steps are accepted in."""

from __future__ import annotations

import json
from typing import Any

import pytest
import redis

from workers import command, keys, scripts
from workers.automations import Runs
from workers.room_events import RoomEvent, record
from workers.settings import Settings

ROOM, SCID, STEPS = "99199690362660524", "c2VydmVyLWNhbGw", "callq.steps"
AUTOMATION = {"on_call_started": [
    {"type": "connect", "body": {}, "params": {}},
    {"type": "start_recording", "body": {"content": "audio"}, "params": {"content": "audio"}},
    {"type": "play", "body": {"text": "Welcome"}, "params": {"text": "Welcome"}}]}


def event(kind: str, event_id: str, scid: str = SCID, room: str = ROOM) -> RoomEvent:
    doc = {"id": event_id, "type": f"Microsoft.Communication.{kind}", "data": {"serverCallId": scid}}
    return RoomEvent(id=event_id, type=doc["type"], room_id=room, server_call_id=scid, correlation_id="corr",
                     time="2026-12-03T10:00:00.000Z", document=doc)


def deliver(r: redis.Redis, ev: RoomEvent, run_id: str = "run_1") -> Any:
    return scripts.run(r, record(ev, run_id=run_id, advance_message=f"advance {ev.id}", steps_queue=STEPS,
                                 dedup_ttl_s=600, ttl_s=3600, retention_s=3600))


def manage(r: redis.Redis, client: str = "alice", automation: dict[str, Any] | None = AUTOMATION) -> None:
    r.hset(keys.room_key(ROOM), mapping={"id": ROOM, "client": client})
    if automation is not None:
        r.hset(keys.room_key(ROOM), "automation", json.dumps(automation))


def queued(r: redis.Redis) -> list[str]:
    return list(reversed(r.lrange(keys.queue_key(STEPS), 0, -1)))


def test_call_started_opens_one_run_however_often_it_is_delivered(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    manage(r)
    first = deliver(r, event("CallStarted", "e1"))
    assert first.run == "created" and first.client == "alice"
    assert deliver(r, event("CallStarted", "e1")).duplicate  # Event Grid's redelivery
    # The same call reported again under another id (a second subscription, a replay): still one run.
    again = deliver(r, event("CallStarted", "e1-replayed"), run_id="run_2")
    assert not again.duplicate and again.run == ""
    assert queued(r) == ["advance e1"]
    run = r.hgetall(keys.room_run_key(ROOM, SCID))
    assert run["id"] == "run_1" and run["state"] == "starting" and run["source"] == "room"
    assert json.loads(run["automation"]) == AUTOMATION
    room = r.hgetall(keys.room_key(ROOM))
    assert room["server_call_id"] == SCID and room["call_state"] == "active"
    assert r.get(keys.room_live_key(ROOM)) == SCID and r.get(keys.server_call_room_key(SCID)) == ROOM
    assert [json.loads(f["event"])["id"] for _, f in r.xrange(keys.room_events_key(ROOM))] == ["e1", "e1-replayed"]


def test_a_call_started_before_the_automation_was_set_runs_nothing(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    manage(r, automation=None)
    assert deliver(r, event("CallStarted", "e1")).run == ""
    manage(r)  # set afterwards: the call already started without it
    assert deliver(r, event("CallStarted", "e1")).duplicate
    assert not r.exists(keys.room_run_key(ROOM, SCID)) and queued(r) == []


def test_the_clients_default_automation_serves_rooms_without_one(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    manage(r, automation=None)
    r.set(keys.client_automation_key("alice"), json.dumps(AUTOMATION))
    assert deliver(r, event("CallStarted", "e1")).run == "created"
    assert r.hget(keys.room_run_key(ROOM, SCID), "source") == "client"


def test_a_call_ended_delivered_before_its_call_started_keeps_it_ended(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    manage(r)
    assert deliver(r, event("CallEnded", "e2")).run == ""
    late = deliver(r, event("CallStarted", "e1"))
    assert late.run == "" and not r.exists(keys.room_run_key(ROOM, SCID))
    assert r.get(keys.room_live_key(ROOM)) is None and r.hget(keys.room_key(ROOM), "call_state") == "ended"


def test_a_room_no_client_manages_keeps_a_timeline_and_runs_nothing(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    found = deliver(r, event("CallStarted", "e1"))
    assert found.client == "" and found.run == ""
    assert r.get(keys.room_live_key(ROOM)) == SCID and r.xlen(keys.room_events_key(ROOM)) == 1


def test_call_ended_names_callqs_connection_and_wakes_the_run(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    manage(r)
    deliver(r, event("CallStarted", "e1"))
    r.set(keys.room_call_key(ROOM), "cc-1")
    r.hset(keys.call_key("cc-1"), mapping={"state": "connected", "server_call_id": SCID})
    added = deliver(r, event("CallParticipantAdded", "e3"))
    assert added.call_connection_id == "cc-1" and added.end_call == ""
    ended = deliver(r, event("CallEnded", "e2"))
    assert ended.end_call == "cc-1" and ended.run == "woken"
    assert r.hget(keys.room_run_key(ROOM, SCID), "call_ended") == "1"
    assert [json.loads(f["event"])["id"] for _, f in r.xrange(keys.call_events_key("cc-1"))] == ["e3", "e2"]
    # Another call of the same room (a later class) is not callq's connection: nothing to end there.
    r.hset(keys.call_key("cc-1"), "state", "disconnected")
    other = deliver(r, event("CallEnded", "e4", scid="b3RoZXI"))
    assert other.end_call == "" and other.call_connection_id == ""


class Waker:
    def __init__(self) -> None:
        self.wakes: list[tuple[str, str, str | None]] = []

    def wake(self, room_id: str, server_call_id: str, token: str | None, at: float) -> None:
        self.wakes.append((room_id, server_call_id, token))


@pytest.fixture
def runs(fake_and_real_redis: redis.Redis, settings: Settings) -> Runs:
    return Runs(settings, fake_and_real_redis, Waker(), lambda type_, cid: json.dumps({"task": type_, "id": cid}))


def commands_of(r: redis.Redis) -> list[dict[str, str]]:
    return [r.hgetall(keys.command_key(c)) for c in r.lrange(keys.room_run_commands_key(ROOM, SCID), 0, -1)]


def finish(r: redis.Redis, command_id: str, status: str, **fields: str) -> None:
    r.hset(keys.command_key(command_id), mapping={"status": status, "updated_at": command.now_iso(), **fields})


def test_a_run_connects_once_then_queues_its_steps_in_order(runs: Runs) -> None:
    r = runs.redis
    manage(r)
    deliver(r, event("CallStarted", "e1"))
    assert runs.advance(ROOM, SCID, None) == "starting"
    assert runs.advance(ROOM, SCID, None) == "starting"  # a second look: the same connect, not another
    (connect,) = commands_of(r)
    assert connect["type"] == "connect" and json.loads(connect["params"])["room_id"] == ROOM
    assert connect["idempotency_key"] == f"auto:{ROOM}:{SCID}:0" and connect["client"] == "alice"
    finish(r, connect["id"], "succeeded", call_connection_id="cc-1")
    r.hset(keys.call_key("cc-1"), mapping={"state": "connected", "server_call_id": SCID, "client": "alice"})
    assert runs.advance(ROOM, SCID, None) == "running"
    cmds = commands_of(r)
    assert [c["type"] for c in cmds] == ["connect", "start_recording", "play"]
    assert [c["call_connection_id"] for c in cmds[1:]] == ["cc-1", "cc-1"]
    assert json.loads(cmds[1]["params"])["server_call_id"] == SCID
    assert r.lrange(keys.call_lane_key("cc-1"), 0, -1) == [cmds[1]["id"], cmds[2]["id"]]  # per-call order
    assert r.hget(keys.room_key(ROOM), "call_connection_id") == "cc-1"
    for c in cmds[1:]:
        finish(r, c["id"], "succeeded")
    assert runs.advance(ROOM, SCID, None) == "succeeded"
    assert len(commands_of(r)) == 3


def test_a_run_whose_call_ends_first_ends_ended(runs: Runs) -> None:
    r = runs.redis
    recording, play = _running_with_steps(runs)
    finish(r, recording["id"], "succeeded")
    finish(r, play["id"], "failed", error=json.dumps({"code": "call_ended", "message": "The call ended."}))
    assert runs.advance(ROOM, SCID, None) == "ended"
    assert json.loads(r.hget(keys.room_run_key(ROOM, SCID), "error") or "{}")["code"] == "call_ended"


def test_a_failed_connect_fails_the_run_and_queues_nothing_more(runs: Runs) -> None:
    r = runs.redis
    manage(r)
    deliver(r, event("CallStarted", "e1"))
    runs.advance(ROOM, SCID, None)
    (connect,) = commands_of(r)
    finish(r, connect["id"], "failed", error=json.dumps({"code": "acs_error", "message": "no"}))
    assert runs.advance(ROOM, SCID, None) == "failed"
    assert len(commands_of(r)) == 1
    assert json.loads(r.hget(keys.room_run_key(ROOM, SCID), "error") or "{}")["code"] == "connect_failed"


def test_only_the_latest_wake_up_of_a_run_is_honoured(runs: Runs) -> None:
    r = runs.redis
    manage(r)
    deliver(r, event("CallStarted", "e1"))
    runs.advance(ROOM, SCID, None)
    token = r.hget(keys.room_run_key(ROOM, SCID), "wake_token")
    assert token and runs.advance(ROOM, SCID, "an-old-token") == "stale"


def _running_with_steps(runs: Runs) -> list[dict[str, str]]:
    r = runs.redis
    manage(r)
    deliver(r, event("CallStarted", "e1"))
    runs.advance(ROOM, SCID, None)
    (connect,) = commands_of(r)
    finish(r, connect["id"], "succeeded", call_connection_id="cc-1")
    r.hset(keys.call_key("cc-1"), mapping={"state": "connected", "server_call_id": SCID, "client": "alice"})
    runs.advance(ROOM, SCID, None)
    return commands_of(r)[1:]


def test_a_step_cut_off_as_the_call_ends_is_an_ended_run_whichever_news_comes_first(runs: Runs) -> None:
    r = runs.redis
    recording, play = _running_with_steps(runs)
    finish(r, recording["id"], "succeeded")
    finish(r, play["id"], "failed", error=json.dumps({"code": "acs_failed", "message": "PlayFailed"}))
    assert runs.advance(ROOM, SCID, None) == "running"  # the call's end may be on its way
    r.hset(keys.call_key("cc-1"), "state", "disconnected")  # CallDisconnected came
    assert runs.advance(ROOM, SCID, None) == "ended"


def test_a_step_that_fails_in_a_live_call_fails_the_run(runs: Runs) -> None:
    r = runs.redis
    now = [1_000.0]
    runs.clock = lambda: now[0]
    recording, play = _running_with_steps(runs)
    finish(r, recording["id"], "succeeded")
    finish(r, play["id"], "failed", error=json.dumps({"code": "acs_failed", "message": "PlayFailed 8535"}))
    assert runs.advance(ROOM, SCID, None) == "running"
    now[0] += 6.0  # past the grace: no news of the call ending
    assert runs.advance(ROOM, SCID, None) == "failed"
    error = json.loads(r.hget(keys.room_run_key(ROOM, SCID), "error") or "{}")
    assert error["code"] == "step_failed" and error["cause"]["code"] == "acs_failed"
