"""The occurrence driver on fakeredis with a fixed clock: claims, idempotent steps, missed, cancel, sweep.

Commands are created through the real accept script; their outcomes (what the runtime and the event
endpoint would write) are set directly on the command and call hashes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import fakeredis
import pytest

from workers import command, keys
from workers import schedules as s
from workers.occurrences import LATE_S, Occurrences
from workers.recurrence import Plan
from workers.settings import Settings

PLANNED = 1_800_000_000
ROOM = "room-1"


@dataclass
class FakeTimers:
    booked_at: set[tuple[str, int]] = field(default_factory=set)
    wakes: list[tuple[str, int, str | None, float]] = field(default_factory=list)

    def book(self, schedule_id: str, planned: int) -> None:
        self.booked_at.add((schedule_id, planned))

    def unbook(self, schedule_id: str, planned: int) -> None:
        self.booked_at.discard((schedule_id, planned))

    def booked(self, schedule_id: str, planned: int) -> bool:
        return (schedule_id, planned) in self.booked_at

    def wake(self, schedule_id: str, planned: int, token: str | None, at: float) -> None:
        self.wakes.append((schedule_id, planned, token, at))


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(PLANNED)


@pytest.fixture
def occ(settings: Settings, sync_redis: fakeredis.FakeRedis, clock: Clock) -> Occurrences:
    return Occurrences(settings.with_(schedule_grace_s=10), sync_redis, FakeTimers(), lambda t, c: f"msg {t} {c}",
                       clock=clock)


def schedule(r: fakeredis.FakeRedis, *, kind: str = "once", duration_s: int = 60, every_s: int | None = None,
             windows: list[tuple[int, int]] | None = None, sid: str = "rs_1") -> str:
    plan = Plan(kind=kind, duration_s=duration_s, start=PLANNED, every_s=every_s)  # type: ignore[arg-type]
    record = s.new_schedule(schedule_id=sid, client="alice", room_id=ROOM, plan=plan,
                            recording={"content": "audio", "channel": "mixed", "format": "wav"},
                            windows=windows or [], first=PLANNED, idempotency_key="k")
    r.hset(s.schedule_key(sid), mapping=dict(zip(*[iter(command.flatten(record))] * 2, strict=True)))
    r.sadd(s.ACTIVE_SCHEDULES, sid)
    return sid


def run(r: fakeredis.FakeRedis, sid: str = "rs_1", planned: int = PLANNED) -> dict[str, str]:
    return r.hgetall(s.run_key(sid, planned))


def resolve(r: fakeredis.FakeRedis, command_id: str, status: str = "succeeded", **fields: str) -> None:
    r.hset(keys.command_key(command_id), mapping={"status": status, **fields})


def live_call(r: fakeredis.FakeRedis, cc: str = "cc-1") -> str:
    r.set(keys.room_call_key(ROOM), cc)
    r.hset(keys.call_key(cc), mapping={"state": "connected", "client": "alice", "server_call_id": "srv-1"})
    return cc


def queued_types(r: fakeredis.FakeRedis) -> list[str]:
    return [r.hget(keys.command_key(cid), "type") for cid in r.lrange(s.run_commands_key("rs_1", PLANNED), 0, -1)]


def test_two_fires_of_one_occurrence_make_one_run_and_one_connect(occ: Occurrences,
                                                                  sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    assert occ.fire("rs_1", PLANNED, claim="beat-a") == "starting"
    assert occ.fire("rs_1", PLANNED, claim="beat-b") == "duplicate"
    assert queued_types(sync_redis) == ["connect"]
    assert sync_redis.llen(keys.queue_key("callq")) == 1  # one Celery message, from the accept script


def test_a_redelivered_fire_carries_on_without_repeating_a_step(occ: Occurrences,
                                                                sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    live_call(sync_redis)
    occ.fire("rs_1", PLANNED, claim="beat-a")
    assert occ.fire("rs_1", PLANNED, claim="beat-a") == "starting"  # same message again (worker died)
    assert queued_types(sync_redis) == ["start_recording"]


def test_the_one_off_is_finished_once_fired_and_nothing_more_is_booked(occ: Occurrences,
                                                                       sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    occ.fire("rs_1", PLANNED, claim="beat-a")
    assert sync_redis.hget(s.schedule_key("rs_1"), "status") == "finished"
    assert not sync_redis.sismember(s.ACTIVE_SCHEDULES, "rs_1")
    assert occ.timers.booked_at == set()  # type: ignore[attr-defined]


def test_a_recurring_fire_books_the_next_occurrence_once(occ: Occurrences, sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis, kind="every", every_s=300)
    occ.fire("rs_1", PLANNED, claim="a")
    occ.fire("rs_1", PLANNED, claim="b")
    assert sync_redis.hget(s.schedule_key("rs_1"), "next_planned") == str(PLANNED + 300)
    assert occ.timers.booked_at == {("rs_1", PLANNED + 300)}  # type: ignore[attr-defined]


def test_an_occurrence_connects_starts_pauses_resumes_and_stops_on_time(occ: Occurrences, clock: Clock,
                                                                         sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis, duration_s=60, windows=[(10, 5)])
    occ.fire("rs_1", PLANNED, claim="a")
    connect = run(sync_redis)["cmd:connect:1"]
    resolve(sync_redis, connect, call_connection_id=live_call(sync_redis))
    assert occ.advance("rs_1", PLANNED, None) == "starting"
    resolve(sync_redis, run(sync_redis)["cmd:start"], recording_id="rec-1")
    assert occ.advance("rs_1", PLANNED, None) == "recording"
    assert occ.timers.wakes[-1][3] == PLANNED + 10  # type: ignore[attr-defined]  # sleeps until the pause

    clock.now = PLANNED + 9  # an early wake-up (kombu #337): nothing is due yet
    occ.advance("rs_1", PLANNED, None)
    assert queued_types(sync_redis) == ["connect", "start_recording"]
    clock.now = PLANNED + 10
    assert occ.advance("rs_1", PLANNED, None) == "paused"
    assert occ.advance("rs_1", PLANNED, None) == "paused"  # again: still one pause
    clock.now = PLANNED + 15
    assert occ.advance("rs_1", PLANNED, None) == "recording"
    clock.now = PLANNED + 60
    assert occ.advance("rs_1", PLANNED, None) == "stopping"
    resolve(sync_redis, run(sync_redis)["cmd:stop"])
    assert occ.advance("rs_1", PLANNED, None) == "completed"
    assert queued_types(sync_redis) == ["connect", "start_recording", "pause_recording", "resume_recording",
                                        "stop_recording"]
    stop = sync_redis.hgetall(keys.command_key(run(sync_redis)["cmd:stop"]))
    assert stop["recording_id"] == "rec-1" and stop["call_connection_id"] == "cc-1"
    assert stop["idempotency_key"] == "sched:rs_1:2027-01-15T08:00:00Z:stop"


def test_a_stale_wake_up_does_nothing(occ: Occurrences, sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    live_call(sync_redis)
    occ.fire("rs_1", PLANNED, claim="a")
    assert occ.advance("rs_1", PLANNED, "an-old-token") == "stale"
    token = run(sync_redis)["wake_token"]
    assert occ.advance("rs_1", PLANNED, token) == "starting"


def test_no_room_call_within_the_grace_window_is_missed(occ: Occurrences, clock: Clock,
                                                        sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    occ.fire("rs_1", PLANNED, claim="a")
    for attempt in range(1, 10):
        cid = run(sync_redis).get(f"cmd:connect:{attempt}")
        if cid is None:
            break
        resolve(sync_redis, cid, "failed", error=json.dumps({"code": "acs_failed", "message": "not started"}))
        if occ.advance("rs_1", PLANNED, None) == "missed":  # notices the failure: retry or give up
            break
        clock.now = float(run(sync_redis)["connect_retry_at"])
        occ.advance("rs_1", PLANNED, None)
    final = run(sync_redis)
    assert final["state"] == "missed"
    error = json.loads(final["error"])
    assert error["code"] == "room_call_not_started" and error["cause"]["code"] == "acs_failed"
    assert queued_types(sync_redis) == ["connect"] * 4  # at +0, +1, +3, +7 s; the next would be past +10
    assert clock.now < PLANNED + 10


def test_a_late_fire_after_the_session_is_missed_without_commands(occ: Occurrences, clock: Clock,
                                                                  sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis, duration_s=60)
    clock.now = PLANNED + 61  # beat was down through the whole session
    assert occ.fire("rs_1", PLANNED, claim="a") == "missed"
    assert queued_types(sync_redis) == []


def test_a_call_that_ends_early_completes_early(occ: Occurrences, sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    live_call(sync_redis)
    occ.fire("rs_1", PLANNED, claim="a")
    resolve(sync_redis, run(sync_redis)["cmd:start"], recording_id="rec-1")
    occ.advance("rs_1", PLANNED, None)
    sync_redis.hset(keys.call_key("cc-1"), "state", "disconnected")
    assert occ.advance("rs_1", PLANNED, None) == "completed_early"
    assert "stop_recording" not in queued_types(sync_redis)


def test_cancelling_stops_the_running_recording_and_books_nothing(occ: Occurrences,
                                                                  sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis, kind="every", every_s=300)
    live_call(sync_redis)
    occ.fire("rs_1", PLANNED, claim="a")
    resolve(sync_redis, run(sync_redis)["cmd:start"], recording_id="rec-1")
    occ.advance("rs_1", PLANNED, None)
    sync_redis.hset(s.schedule_key("rs_1"), mapping={"status": "cancelled", "cancelled_next": str(PLANNED + 300)})
    assert occ.cancel("rs_1") == 1
    assert occ.timers.booked_at == set()  # type: ignore[attr-defined]
    assert occ.advance("rs_1", PLANNED, None) == "stopping"
    resolve(sync_redis, run(sync_redis)["cmd:stop"])
    assert occ.advance("rs_1", PLANNED, None) == "cancelled"
    assert occ.fire("rs_1", PLANNED + 300, claim="late") == "cancelled"  # an entry that fired anyway


def test_the_sweep_resends_lost_wake_ups_and_rebooks_lost_fires(occ: Occurrences, clock: Clock,
                                                               sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis, kind="every", every_s=300)
    live_call(sync_redis)
    occ.fire("rs_1", PLANNED, claim="a")
    timers: FakeTimers = occ.timers  # type: ignore[assignment]
    timers.wakes.clear()
    clock.now = PLANNED + 300 + LATE_S + 1  # the run's wake-up and the next fire are both long overdue
    assert occ.sweep() == (1, 1)
    assert timers.wakes == [("rs_1", PLANNED, None, clock.now)]
    assert ("rs_1", PLANNED + 300) in timers.booked_at


@pytest.fixture
def occ_eventgrid(settings: Settings, sync_redis: fakeredis.FakeRedis, clock: Clock) -> Occurrences:
    """Occurrences where Event Grid's room-call events reach callq."""
    configured = settings.with_(schedule_grace_s=10, eventgrid_query_tokens=("q" * 32,))
    return Occurrences(configured, sync_redis, FakeTimers(), lambda t, c: f"msg {t} {c}", clock=clock)


def test_with_event_grid_an_occurrence_waits_for_call_started_before_connecting(
        occ_eventgrid: Occurrences, clock: Clock, sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    assert occ_eventgrid.fire("rs_1", PLANNED, claim="a") == "starting"
    clock.now = PLANNED + 5
    occ_eventgrid.advance("rs_1", PLANNED, None)
    assert queued_types(sync_redis) == []  # no connect to a call that has not started
    sync_redis.set(keys.room_live_key(ROOM), "srv-1")  # what room_event.lua writes on CallStarted
    occ_eventgrid.advance("rs_1", PLANNED, None)
    assert queued_types(sync_redis) == ["connect"]


def test_with_event_grid_no_call_started_within_the_grace_is_missed_without_a_connect(
        occ_eventgrid: Occurrences, clock: Clock, sync_redis: fakeredis.FakeRedis) -> None:
    schedule(sync_redis)
    occ_eventgrid.fire("rs_1", PLANNED, claim="a")
    clock.now = PLANNED + 10
    assert occ_eventgrid.advance("rs_1", PLANNED, None) == "missed"
    error = json.loads(run(sync_redis)["error"])
    assert error["code"] == "room_call_not_started" and "CallStarted" in error["message"]
    assert queued_types(sync_redis) == []
