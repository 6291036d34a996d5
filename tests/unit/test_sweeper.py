"""The sweeper and the deadline checker: work is revived and waits reconciled from the records alone."""

from __future__ import annotations

import json
import random
import time
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from tests import records
from workers import command, keys, ledger, scripts
from workers.command import Status
from workers.runtime import Runtime
from workers.settings import Settings


class Recorder:
    def __init__(self) -> None:
        self.commands: list[tuple[str, str]] = []
        self.checks: list[str] = []

    def message(self, command_type: str, command_id: str) -> str:
        return f"msg:{command_type}:{command_id}"

    def command(self, command_type: str, command_id: str, countdown_s: float) -> None:
        self.commands.append((command_type, command_id))

    def check(self, command_id: str, countdown_s: float) -> None:
        self.checks.append(command_id)


@pytest.fixture
def r(fake_and_real_redis: redis.Redis) -> redis.Redis:
    return fake_and_real_redis


def put(r: redis.Redis, cid: str, **fields: Any) -> None:
    record = records.new_command(command_id=cid, client="alice", type_="play", params={}, idempotency_key=cid)
    flat = command.flatten(record | fields)
    r.hset(keys.command_key(cid), mapping=dict(zip(flat[::2], flat[1::2], strict=True)))
    r.zadd(keys.ACTIVE_ZSET, {cid: 0})  # due now


def test_lost_work_is_revived_and_finished_work_forgotten(r: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    put(r, "stranded", status="running", lease_until=now_ms - 1)      # its worker died, its retry was lost
    put(r, "in-line", status="queued", in_ready="1")                  # its message waits its client's turn
    put(r, "busy", status="running", lease_until=now_ms + 60_000)     # someone holds it: leave alone
    put(r, "unheard", status="waiting", wait_deadline=now_ms - 60_000)  # deadline long past, no check ran
    put(r, "listening", status="waiting", wait_deadline=now_ms + 60_000)
    put(r, "done", status="succeeded")
    r.zadd(keys.ACTIVE_ZSET, {"expired": 0})                           # its record is gone
    scheduler = Recorder()
    runtime = Runtime(Settings(), r, client=None, scheduler=scheduler, rng=random.Random(1))  # type: ignore[arg-type]
    assert runtime.sweep() == 2
    # Revived through the fair dispatch (its client's ready list, then the command queue), not with a countdown.
    assert r.lrange(keys.queue_key(Settings().queue), 0, -1) == ["msg:play:stranded"]
    assert scheduler.commands == []
    assert scheduler.checks == ["unheard"]
    active = dict(r.zrange(keys.ACTIVE_ZSET, 0, -1, withscores=True))
    assert "done" not in active and "expired" not in active
    assert active["listening"] > now_ms + 60_000  # next look: after its deadline
    assert runtime.sweep() == 0  # nothing is due again right away


def test_accepting_and_ending_a_command_maintains_the_index(r: redis.Redis) -> None:
    record = records.new_command(command_id="c1", client="alice", type_="play", params={}, idempotency_key="k")
    scripts.run(r, ledger.accept(idempotency_key="idem", fingerprint="fp", command=record, queue="q", message="msg",
                                 response_json="{}", idempotency_ttl_s=60, command_ttl_s=60, window=16,
                                 now_ms=int(time.time() * 1000)))
    assert r.zscore(keys.ACTIVE_ZSET, "c1") is not None
    scripts.run(r, ledger.transition("c1", Status("failed"), {}))
    assert r.zscore(keys.ACTIVE_ZSET, "c1") is None


def waiting(r: redis.Redis, cid: str, deadline_ms: int) -> None:
    put(r, cid, status="waiting", wait_deadline=deadline_ms)
    r.zadd(keys.WAIT_DEADLINES, {cid: deadline_ms})  # as sent.lua lists a wait


def test_each_passed_deadline_is_handed_out_once_then_again_if_its_reconcile_was_lost(r: redis.Redis) -> None:
    now_ms = int(time.time() * 1000)
    waiting(r, "overdue", now_ms - 1)
    waiting(r, "later", now_ms + 60_000)
    waiting(r, "resolved", now_ms - 1)
    r.hset(keys.command_key("resolved"), "status", "succeeded")  # its event came; the index kept a stale entry
    checker, other = Recorder(), Recorder()
    runtime = Runtime(Settings(), r, client=None, scheduler=checker, rng=random.Random(1))  # type: ignore[arg-type]
    second = Runtime(Settings(), r, client=None, scheduler=other, rng=random.Random(2))  # type: ignore[arg-type]
    assert runtime.check_due() == ["overdue"]
    assert second.check_due() == []  # another worker scanning meanwhile does not get it too
    assert checker.checks == ["overdue"] and other.checks == []
    assert r.zscore(keys.WAIT_DEADLINES, "resolved") is None
    assert r.zscore(keys.WAIT_DEADLINES, "later") == now_ms + 60_000
    # Its reconcile never ran (a lost message): once the re-arm time passes it is handed out again.
    assert r.zscore(keys.WAIT_DEADLINES, "overdue") >= now_ms + 30_000
    r.zadd(keys.WAIT_DEADLINES, {"overdue": now_ms - 1})
    assert second.check_due() == ["overdue"]


def test_a_terminal_transition_takes_the_command_off_the_deadline_index(r: redis.Redis) -> None:
    waiting(r, "c1", int(time.time() * 1000) + 60_000)
    scripts.run(r, ledger.transition("c1", Status("succeeded"), {}))
    assert r.zscore(keys.WAIT_DEADLINES, "c1") is None


class _NobodyInTheCall:
    """The reads an add participant's reconcile makes: a connected call whose participant list is empty."""

    def get_call_connection(self, call_connection_id: str) -> Any:
        return SimpleNamespace(list_participants=lambda: [],
                               get_call_properties=lambda: SimpleNamespace(call_connection_state="connected"))


def _add_then_remove(r: redis.Redis, *, remove_claimed: bool) -> Runtime:
    """An add waiting past its deadline on call cc-1, and a remove accepted after it."""
    party = {"participant": "4:+16045550100"}
    for cid, type_ in (("add", "add_participant"), ("remove", "remove_participant")):
        record = records.new_command(command_id=cid, client="alice", type_=type_, params=party, idempotency_key=cid)
        flat = command.flatten(record | {"call_connection_id": "cc-1"})
        r.hset(keys.command_key(cid), mapping=dict(zip(flat[::2], flat[1::2], strict=True)))
        r.rpush(keys.call_commands_key("cc-1"), cid)
    r.hset(keys.command_key("add"), mapping={"status": "waiting", "attempts": 1,
                                             "wait_deadline": int(time.time() * 1000) - 1})
    if remove_claimed:
        r.hset(keys.command_key("remove"), mapping={"status": "waiting", "attempts": 1})
    return Runtime(Settings(), r, client=_NobodyInTheCall(), scheduler=Recorder(),  # type: ignore[arg-type]
                   rng=random.Random(1))


def test_an_absent_participant_fails_the_add_when_nothing_later_touched_the_participants(r: redis.Redis) -> None:
    assert _add_then_remove(r, remove_claimed=False).reconcile("add") == "failed"
    assert json.loads(r.hget(keys.command_key("add"), "error"))["code"] == "participant_not_added"


def test_an_absent_participant_cannot_tell_once_a_later_remove_may_have_reached_acs(r: redis.Redis) -> None:
    """The remove may have taken out the participant the add brought in: the read is no evidence either way."""
    assert _add_then_remove(r, remove_claimed=True).reconcile("add") == "failed"
    error = json.loads(r.hget(keys.command_key("add"), "error"))
    assert error["code"] == "callback_timeout" and "remove" in error["message"]
    assert json.loads(r.hget(keys.command_key("add"), "resolved_by")) == {"type": "timeout", "after": "remove"}


class Calls:
    """ACS's call connections as the SDK reads them: a state per call, or gone (404)."""

    def __init__(self, states: dict[str, str]) -> None:
        self.states = states
        self.asked: list[str] = []

    def get_call_connection(self, cc: str) -> Any:
        def props() -> Any:
            from azure.core.exceptions import ResourceNotFoundError

            self.asked.append(cc)
            if cc not in self.states:
                raise ResourceNotFoundError("no such call")
            return SimpleNamespace(call_connection_state=self.states[cc])
        return SimpleNamespace(get_call_properties=props)


def test_calls_silent_for_long_are_asked_about_and_closed_when_acs_has_them_no_more(r: redis.Redis) -> None:
    old = int(time.time() * 1000) - 3_600_000
    for cc in ("gone", "alive", "recent"):
        r.hset(keys.call_key(cc), mapping={"state": "connected", "client": "alice"})
        r.rpush(keys.call_commands_key(cc), f"play-{cc}")
        put(r, f"play-{cc}", status="waiting", call_connection_id=cc)
    r.zadd(keys.LIVE_CALLS, {"gone": old, "alive": old, "recent": int(time.time() * 1000)})
    acs = Calls({"alive": "connected"})
    runtime = Runtime(Settings(stale_call_s=600), r, client=acs, scheduler=Recorder(),  # type: ignore[arg-type]
                      rng=random.Random(1))
    assert runtime.sweep_calls() == ["gone"]
    assert sorted(acs.asked) == ["alive", "gone"]  # the recent one is not asked about
    assert r.hget(keys.call_key("gone"), "state") == "disconnected"
    failed = json.loads(r.hget(keys.command_key("play-gone"), "error") or "{}")
    assert r.hget(keys.command_key("play-gone"), "status") == "failed" and failed["code"] == "call_ended"
    assert json.loads(r.hget(keys.command_key("play-gone"), "resolved_by") or "{}")["id"] == "callq-stale-gone"
    assert r.hget(keys.command_key("play-alive"), "status") == "waiting"
    assert set(r.zrange(keys.LIVE_CALLS, 0, -1)) == {"alive", "recent"}
    assert r.zscore(keys.LIVE_CALLS, "alive") > old  # heard of now: not asked again next round
    assert runtime.sweep_calls() == []
