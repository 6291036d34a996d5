"""Barge-in in a call's lane: a play (or recognize) with interrupt_call_media_operation does not wait for the media
operation it cuts short at ACS; the media operations callq has not sent end ``interrupted`` (each would otherwise be
sent while the barge-in plays); the media operations accepted after it wait for it. Order asserted, never time; on
fakeredis and on a real redis-server."""

from __future__ import annotations

import time

import pytest
import redis

from tests.unit.test_fair import QUEUE, accept, error, kick, looping_play_then, playing, queued, set_status
from workers import keys, ledger, scripts
from workers.command import Status


@pytest.fixture
def r(fake_and_real_redis: redis.Redis) -> redis.Redis:
    return fake_and_real_redis


def sent(r: redis.Redis, cid: str) -> None:
    """Its message taken and its request answered: waiting for its event."""
    r.lrem(keys.queue_key(QUEUE), 1, f"msg-{cid}")
    set_status(r, cid, "waiting", wait_deadline=int(time.time() * 1000) + 60_000, attempts=1)
    kick(r, "cc-1")


def ended(r: redis.Redis, cid: str, status: Status = Status.SUCCEEDED) -> None:
    scripts.run(r, ledger.transition(cid, status, {}))
    kick(r, "cc-1")


@pytest.mark.parametrize("barge_in", ["play_barge_in", "recognize_barge_in"])
def test_a_barge_in_goes_at_once_and_ends_the_media_callq_has_not_sent(r: redis.Redis, barge_in: str) -> None:
    looping_play_then(r, ("p2", "play"), ("r3", "recognize"), ("b", barge_in))
    assert queued(r) == ["b"]  # not behind p1's outcome: at ACS it cuts p1 short
    for cut in ("p2", "r3"):
        assert r.hget(keys.command_key(cut), "status") == "failed"
        assert (error(r, cut)["code"], error(r, cut)["by"]) == ("interrupted", "b")
    assert r.hget(keys.command_key("p1"), "status") == "waiting"  # ACS ends it: PlayCanceled


def test_a_barge_in_waits_for_a_media_operation_callq_is_sending(r: redis.Redis) -> None:
    accept(r, "p1", type_="play", call="cc-1")
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "p1", "running", attempts=1)  # claimed: its request may be on its way to ACS
    accept(r, "b", type_="play_barge_in", call="cc-1")
    assert error(r, "p1") == {} and r.hget(keys.command_key("b"), "parked") == "1"
    playing(r, "p1")
    kick(r, "cc-1")
    assert queued(r) == ["b"]  # sent: the barge-in cuts it short at ACS instead of waiting for its end


def test_a_barge_in_overtakes_a_command_parked_behind_another(r: redis.Redis) -> None:
    accept(r, "add", type_="add_participant", call="cc-1")
    accept(r, "dtmf", type_="send_dtmf", call="cc-1")  # waits for the add's outcome
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "add", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)  # ringing
    accept(r, "b", type_="play_barge_in", call="cc-1")
    assert queued(r) == ["b"] and r.hget(keys.command_key("dtmf"), "status") == "queued"  # not media: not cut


def test_media_accepted_after_a_barge_in_waits_for_it_and_other_commands_do_not(r: redis.Redis) -> None:
    looping_play_then(r, ("b", "play_barge_in"), ("p3", "play"), ("dtmf", "send_dtmf"))
    assert queued(r) == ["b"]
    sent(r, "b")
    ended(r, "p1", Status.FAILED)  # PlayCanceled
    assert r.hget(keys.command_key("p3"), "parked") == "1"
    # dtmf was accepted after p3, which holds every later command back until it is sent (per-call order).
    assert r.hget(keys.command_key("dtmf"), "parked") == "1"
    ended(r, "b")
    assert queued(r) == ["p3"]
    sent(r, "p3")
    assert queued(r) == ["dtmf"]  # a sent play holds back only the next media operation
