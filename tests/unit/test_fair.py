"""Fair dispatch and call lanes: only runnable work reaches the broker, clients take turns filling it, a parked
command is queued when its turn comes, interrupts overtake unsent commands and cut them. Order of service is
asserted, never time. On fakeredis and on a real redis-server."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import redis

from tests import records
from workers import command, keys, ledger, scripts
from workers.command import Status

QUEUE = "q"
WINDOW = 2


@pytest.fixture
def r(fake_and_real_redis: redis.Redis) -> redis.Redis:
    return fake_and_real_redis


def accept(r: redis.Redis, cid: str, *, client: str = "alice", type_: str = "connect", call: str = "",
           window: int = WINDOW) -> None:
    record = records.new_command(command_id=cid, client=client, type_=type_, params={}, idempotency_key=cid)
    record["call_connection_id"] = call
    found = scripts.run(r, ledger.accept(
        idempotency_key=keys.idempotency_key(client, cid), fingerprint="fp", command=record, queue=QUEUE,
        message=f"msg-{cid}", response_json="{}", idempotency_ttl_s=60, command_ttl_s=60, window=window,
        now_ms=int(time.time() * 1000)))
    assert not found.refused and not found.replayed


def queued(r: redis.Redis) -> list[str]:
    """The commands of the broker queue's messages, in the order a worker takes them (kombu LPUSHes, BRPOPs)."""
    return [str(m).removeprefix("msg-") for m in reversed(r.lrange(keys.queue_key(QUEUE), 0, -1))]


def serve_all(r: redis.Redis) -> list[str]:
    """Take messages as workers do, each followed by the refill a claim runs; the order they were served in."""
    served = []
    while (message := r.rpop(keys.queue_key(QUEUE))) is not None:
        served.append(str(message).removeprefix("msg-"))
        scripts.run(r, ledger.dispatch(queue=QUEUE, window=WINDOW))
    return served


def set_status(r: redis.Redis, cid: str, status: str, **fields: str | int) -> None:
    r.hset(keys.command_key(cid), mapping={"status": status, **{k: str(v) for k, v in fields.items()}})


def kick(r: redis.Redis, call: str) -> list[ledger.Kicked]:
    return scripts.run(r, ledger.kick(call, now_ms=int(time.time() * 1000), queue=QUEUE, window=WINDOW))


def test_a_client_with_one_command_is_served_in_turn_with_a_flooding_client(r: redis.Redis) -> None:
    for i in range(1, 7):
        accept(r, f"a{i}", client="flood")
    for i in range(1, 4):
        accept(r, f"b{i}", client="quiet")
    # The broker holds only the window: the rest wait in their client's ready list, not in one FIFO.
    assert queued(r) == ["a1", "a2"]
    assert r.llen(keys.client_ready_key("flood")) == 4 and r.llen(keys.client_ready_key("quiet")) == 3
    # Once the window's first goes, the clients alternate; quiet's first (a sparse flow: nothing of it dispatched
    # lately) goes ahead of the window, so b1 is served third, not after all of a's.
    assert serve_all(r) == ["a1", "a2", "b1", "a3", "a4", "b2", "a5", "b3", "a6"]
    assert r.llen(keys.FAIR_RING) == 0


def test_a_quiet_clients_message_goes_ahead_of_a_floods_window_and_a_flood_never_does(r: redis.Redis) -> None:
    for i in range(1, 5):
        accept(r, f"a{i}", client="flood", window=4)
    assert queued(r) == ["a1", "a2", "a3", "a4"]  # the flood's first is sparse too, then it queues behind it
    r.rpop(keys.queue_key(QUEUE))  # a1 served: room for one
    accept(r, "b1", client="quiet", window=4)
    assert queued(r) == ["b1", "a2", "a3", "a4"]  # next, not fourth
    r.rpop(keys.queue_key(QUEUE))
    accept(r, "b2", client="quiet", window=4)  # quiet's second, at once: it is a flow now, and queues
    assert queued(r) == ["a2", "a3", "a4", "b2"]
    assert r.pttl(keys.client_dispatched_key("quiet")) > 0


def test_a_message_waiting_its_turn_is_marked_for_the_sweeper_until_dispatched(r: redis.Redis) -> None:
    accept(r, "a1")
    accept(r, "a2")
    accept(r, "a3")
    assert [r.hget(keys.command_key(c), "in_ready") for c in ("a1", "a2", "a3")] == [None, None, "1"]
    serve_all(r)
    assert r.hget(keys.command_key("a3"), "in_ready") is None


def test_a_command_behind_a_busy_call_parks_and_is_queued_when_its_turn_comes(r: redis.Redis) -> None:
    accept(r, "p1", type_="play", call="cc-1")
    accept(r, "p2", type_="play", call="cc-1")  # ACS runs one media operation at a time: p2 waits for p1
    accept(r, "p3", type_="play", call="cc-1")
    assert queued(r) == ["p1"]
    assert r.hmget(keys.command_key("p2"), "parked", "msg") == ["1", "msg-p2"]
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "p1", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)  # sent, playing
    assert kick(r, "cc-1") == [] and queued(r) == []  # still playing: nothing is runnable
    scripts.run(r, ledger.transition("p1", Status.SUCCEEDED, {}))
    assert kick(r, "cc-1") == []  # p2 had its message kept: queued by the script itself
    assert queued(r) == ["p2"]  # and only p2: p3 waits for it
    assert r.hmget(keys.command_key("p2"), "parked", "msg") == ["", None]
    assert r.hget(keys.command_key("p3"), "parked") == "1"


def test_a_command_behind_a_waiting_connect_parks(r: redis.Redis) -> None:
    accept(r, "conn")
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "conn", "running")
    # ACS answered the connect with its call; the connect now waits for CallConnected, heading the call's lane.
    deadline = int(time.time() * 1000) + 60_000
    conn = {str(k): str(v) for k, v in r.hgetall(keys.command_key("conn")).items()}
    scripts.run(r, ledger.sent(command.Command.from_hash(conn), Status.WAITING,
                               {"call_connection_id": "cc-9", "wait_deadline": deadline},
                               made=ledger.SentTo(call_made="cc-9"), ttl_s=60, wait_deadline_ms=deadline))
    accept(r, "dtmf", type_="send_dtmf", call="cc-9")
    assert queued(r) == [] and r.hget(keys.command_key("dtmf"), "parked") == "1"
    scripts.run(r, ledger.transition("conn", Status.SUCCEEDED, {}))
    kick(r, "cc-9")
    assert queued(r) == ["dtmf"]


def test_a_command_that_parked_after_its_message_ran_is_handed_back_for_a_new_one(r: redis.Redis) -> None:
    accept(r, "p1", type_="play", call="cc-1")
    r.rpop(keys.queue_key(QUEUE))
    # Parked by a claim (its message was consumed), not by the accept: nothing kept to queue.
    r.rpush(keys.call_lane_key("cc-1"), "late")
    r.hset(keys.command_key("late"), mapping={"id": "late", "status": "queued", "type": "play", "client": "bob",
                                              "parked": "1"})
    scripts.run(r, ledger.transition("p1", Status.SUCCEEDED, {}))
    assert kick(r, "cc-1") == [ledger.Kicked("late", "play", "bob")]
    assert r.hget(keys.command_key("late"), "parked") == ""


def playing(r: redis.Redis, cid: str, *, loop: bool = True) -> None:
    """Sent and playing (a looping play never ends by itself)."""
    set_status(r, cid, "waiting", wait_deadline=int(time.time() * 1000) + 60_000, attempts=1,
               params=json.dumps({"loop": loop}, separators=(",", ":"), sort_keys=True))


def looping_play_then(r: redis.Redis, *commands: tuple[str, str]) -> None:
    """On cc-1: play p1, sent and playing; then ``commands`` (id, type) accepted behind it."""
    accept(r, "p1", type_="play", call="cc-1")
    r.rpop(keys.queue_key(QUEUE))
    playing(r, "p1")
    for cid, type_ in commands:
        accept(r, cid, type_=type_, call="cc-1")


def error(r: redis.Redis, cid: str) -> dict[str, Any]:
    found = json.loads(r.hget(keys.command_key(cid), "error") or "{}")
    return found if isinstance(found, dict) else {}


def test_cancel_media_fails_the_unsent_media_operations_before_it_and_lets_the_rest_go(r: redis.Redis) -> None:
    # dtmf is not media, but it is behind p2, which holds everything back.
    looping_play_then(r, ("p2", "play"), ("r3", "recognize"), ("dtmf", "send_dtmf"))
    assert queued(r) == [] and r.hget(keys.command_key("dtmf"), "parked") == "1"
    accept(r, "cancel", type_="cancel_media", call="cc-1")
    for cid in ("p2", "r3"):
        rec = r.hgetall(keys.command_key(cid))
        assert rec["status"] == "failed" and "msg" not in rec
        assert (error(r, cid)["code"], error(r, cid)["by"]) == ("interrupted", "cancel")
        assert not r.sismember(keys.call_pending_key("cc-1"), cid)  # ended: its place under the door is free
    assert r.hget(keys.command_key("p1"), "status") == "waiting"  # sent already: ACS cancels it, its event says
    # With p2 gone, dtmf's turn came at once; the cancel waits for dtmf to be sent (it was accepted before it).
    assert queued(r) == ["dtmf"]
    assert r.hget(keys.command_key("cancel"), "parked") == "1"
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "dtmf", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)
    kick(r, "cc-1")
    assert queued(r) == ["cancel"]  # it does not wait for p1's end: it is there to cut it short


def test_hang_up_cuts_unsent_media_and_waits_for_other_commands_to_be_sent(r: redis.Redis) -> None:
    looping_play_then(r, ("p2", "play"), ("add", "add_participant"), ("bye", "hang_up"))
    assert error(r, "p2")["code"] == "interrupted"
    assert r.hget(keys.command_key("add"), "status") == "queued"  # not media: sent, in its turn, before the hang up
    assert queued(r) == ["add"] and r.hget(keys.command_key("bye"), "parked") == "1"


def test_a_media_operation_that_may_have_reached_acs_is_not_cut(r: redis.Redis) -> None:
    accept(r, "p1", type_="play", call="cc-1")
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "p1", "queued", attempts=1)  # its send failed in a way it may have taken: queued for a retry
    accept(r, "cancel", type_="cancel_media", call="cc-1")
    assert r.hget(keys.command_key("p1"), "status") == "queued" and error(r, "p1") == {}
    assert queued(r) == [] and r.hget(keys.command_key("cancel"), "parked") == "1"  # after p1's resend, then
    playing(r, "p1")
    kick(r, "cc-1")
    assert queued(r) == ["cancel"]


def test_hang_up_behind_a_play_that_ends_by_itself_cuts_nothing(r: redis.Redis) -> None:
    accept(r, "p1", type_="play", call="cc-1")
    r.rpop(keys.queue_key(QUEUE))
    playing(r, "p1", loop=False)
    accept(r, "p2", type_="play", call="cc-1")
    accept(r, "bye", type_="hang_up", call="cc-1")
    assert r.hget(keys.command_key("p2"), "status") == "queued" and error(r, "p2") == {}
    assert r.hget(keys.command_key("bye"), "parked") == "1"  # after p2 is sent, once p1 has ended


def test_play_then_hang_up_plays_when_no_media_operation_holds_the_play_back(r: redis.Redis) -> None:
    accept(r, "add", type_="add_participant", call="cc-1")
    accept(r, "bye", type_="play", call="cc-1")  # waits for the add's outcome, not for another media operation
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "add", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)
    accept(r, "hang", type_="hang_up", call="cc-1")
    assert r.hget(keys.command_key("bye"), "status") == "queued" and error(r, "bye") == {}
    assert r.hget(keys.command_key("hang"), "parked") == "1"
    scripts.run(r, ledger.transition("add", Status.SUCCEEDED, {}))
    kick(r, "cc-1")
    assert queued(r) == ["bye"]  # the play goes first; the hang up after it is sent


def test_cancelling_an_invitation_does_not_wait_for_a_command_parked_behind_it(r: redis.Redis) -> None:
    accept(r, "add", type_="add_participant", call="cc-1")
    accept(r, "p1", type_="play", call="cc-1")  # waits for the add's outcome
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "add", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)  # ringing
    accept(r, "cancel", type_="cancel_add_participant", call="cc-1")
    assert r.hget(keys.command_key("p1"), "status") == "queued"  # cancelling an invitation cuts nothing
    # p1 is unsent, but waits for the very invitation the cancel ends: the cancel goes first.
    assert queued(r) == ["cancel"] and r.hget(keys.command_key("p1"), "parked") == "1"


def test_hang_up_waits_for_a_command_parked_before_it_to_be_sent(r: redis.Redis) -> None:
    accept(r, "add", type_="add_participant", call="cc-1")
    accept(r, "dtmf", type_="send_dtmf", call="cc-1")  # to the participant the add brings in: waits for it
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "add", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)
    accept(r, "bye", type_="hang_up", call="cc-1")
    assert queued(r) == [] and r.hget(keys.command_key("bye"), "parked") == "1"  # "add, DTMF, hang up" holds
    scripts.run(r, ledger.transition("add", Status.SUCCEEDED, {}))
    kick(r, "cc-1")
    assert queued(r) == ["dtmf"]


def test_the_backlog_list_is_as_long_as_the_ready_lists_together(r: redis.Redis) -> None:
    for i in range(5):
        accept(r, f"a{i}", client="flood")
    accept(r, "b0", client="quiet")
    assert r.llen(keys.FAIR_BACKLOG) == 4  # six accepted, the window's two dispatched
    serve_all(r)
    assert r.llen(keys.FAIR_BACKLOG) == 0


def test_a_calls_lane_holds_its_commands_not_yet_ended_in_order(r: redis.Redis) -> None:
    for cid in ("p1", "p2", "p3"):
        accept(r, cid, type_="play", call="cc-1")
    assert r.lrange(keys.call_lane_key("cc-1"), 0, -1) == ["p1", "p2", "p3"]
    scripts.run(r, ledger.transition("p2", Status.FAILED, {}))
    scripts.run(r, ledger.transition("p1", Status.SUCCEEDED, {}))
    # What per-call order walks shrinks as commands end; the call's list keeps them all for reads.
    assert r.lrange(keys.call_lane_key("cc-1"), 0, -1) == ["p3"]
    assert r.lrange(keys.call_commands_key("cc-1"), 0, -1) == ["p1", "p2", "p3"]


def _calls(r: redis.Redis, command: str) -> int:
    """How many times Redis ran ``command`` since the last CONFIG RESETSTAT (scripts' calls included)."""
    return int(r.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0))


def test_a_kick_or_an_accept_reads_only_the_head_of_a_call_with_a_backlog_of_plays(redis_url: str) -> None:
    # On the real server only: fakeredis keeps no command statistics.
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    accept(r, "p0", type_="play", call="cc-1")
    set_status(r, "p0", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)  # playing
    for i in range(1, 51):
        accept(r, f"p{i}", type_="play", call="cc-1")  # parked behind it
    r.config_resetstat()
    assert kick(r, "cc-1") == []
    # p0, p1 and p1's check against p0: not the 50 parked plays behind them.
    assert _calls(r, "hmget") <= 4
    r.config_resetstat()
    accept(r, "p51", type_="play", call="cc-1")
    assert r.hget(keys.command_key("p51"), "parked") == "1"
    assert _calls(r, "smembers") == 0 and _calls(r, "hmget") <= 2  # held back by p50, the one accepted before it


def test_a_cancel_behind_a_backlog_is_still_found_by_the_kick_and_overtakes_the_parked_plays(r: redis.Redis) -> None:
    accept(r, "add", type_="add_participant", call="cc-1")
    for i in range(1, 31):
        accept(r, f"p{i}", type_="play", call="cc-1")
    accept(r, "cancel", type_="cancel_add_participant", call="cc-1")
    # The add's message is still on the broker's queue (not sent): the cancel waits for it to be sent.
    assert r.hget(keys.command_key("cancel"), "parked") == "1"
    assert r.smembers(keys.call_interrupts_key("cc-1")) == {"cancel"}
    r.rpop(keys.queue_key(QUEUE))
    set_status(r, "add", "waiting", wait_deadline=int(time.time() * 1000) + 60_000)  # sent: ringing
    kick(r, "cc-1")
    # Past p1 (unsent, held back by the add) only interrupts can go, and the call has one pending: the walk goes on
    # to the end of the lane for it.
    assert queued(r) == ["cancel"] and r.hget(keys.command_key("p30"), "parked") == "1"
    scripts.run(r, ledger.transition("cancel", Status.SUCCEEDED, {}))
    assert r.smembers(keys.call_interrupts_key("cc-1")) == set()


def claim(r: redis.Redis, cid: str) -> ledger.Claim:
    return scripts.run(r, ledger.claim(cid, lease_ms=1000, budget_keys=["tat", "pause"], budget_args=[1, 1000],
                                       now_ms=int(time.time() * 1000), queue=QUEUE, window=WINDOW))


def test_a_quiet_clients_command_opens_a_window_in_which_only_sparse_commands_are_claimed(r: redis.Redis) -> None:
    for i in range(1, 4):
        accept(r, f"a{i}", client="flood", window=4)
    r.delete(keys.QUIET_WINDOW, keys.QUIET_ARMED)  # the flood's own first command was sparse too: start afresh
    accept(r, "b1", client="quiet", window=4)
    assert 0 < r.pttl(keys.QUIET_WINDOW) <= keys.QUIET_WINDOW_MS or not r.exists(keys.QUIET_WINDOW)  # short-lived
    r.pexpire(keys.QUIET_WINDOW, 60_000)  # held open for the rest of the test, however slow the machine
    assert r.hget(keys.command_key("b1"), keys.QUIET_MARK) == "1"
    held = claim(r, "a2")
    assert held.kind == "yielded" and 0 < held.wait_s <= 60
    assert r.get("tat") is None  # a yielded claim pays nothing
    assert r.hget(keys.command_key("a2"), "status") == "queued"
    went = claim(r, "b1")
    assert went.kind == "claimed" and r.hget(keys.command_key("b1"), keys.QUIET_MARK) is None
    r.delete(keys.QUIET_WINDOW)  # the window over, the flood goes on
    assert claim(r, "a2").kind == "claimed"


def test_a_quiet_window_opens_at_most_once_per_interval_however_many_quiet_clients_come(r: redis.Redis) -> None:
    accept(r, "x1", client="quiet-x")
    r.delete(keys.QUIET_WINDOW)
    r.set(keys.QUIET_ARMED, "1", px=60_000)  # a window opened a moment ago
    accept(r, "y1", client="quiet-y")
    assert not r.exists(keys.QUIET_WINDOW)  # no new one yet: the others keep at least the rest of the time
    assert r.hget(keys.command_key("y1"), keys.QUIET_MARK) == "1"  # y1 still goes through any open window
    assert 0 < keys.QUIET_WINDOW_MS <= keys.QUIET_EVERY_MS // 2


def test_a_flooding_clients_commands_are_not_marked_quiet_and_open_no_window(r: redis.Redis) -> None:
    accept(r, "a1", client="flood", window=8)
    r.delete(keys.QUIET_WINDOW, keys.QUIET_ARMED)
    for i in range(2, 6):
        accept(r, f"a{i}", client="flood", window=8)  # dispatched within SPARSE_MS of a1: not a sparse flow
    assert not r.exists(keys.QUIET_WINDOW) and not r.exists(keys.QUIET_ARMED)
    assert [r.hget(keys.command_key(f"a{i}"), keys.QUIET_MARK) for i in range(1, 6)] == ["1", None, None, None, None]


def test_a_quiet_command_that_parks_at_its_claim_loses_its_mark(r: redis.Redis) -> None:
    accept(r, "a1", client="quiet", call="cc")
    accept(r, "a2", client="quiet", call="cc")  # parked behind a1
    r.hset(keys.command_key("a2"), keys.QUIET_MARK, "1")  # as if its message had gone out as a sparse flow's
    assert claim(r, "a2").kind == "blocked"
    # When its turn comes it is dispatched again, and marked only if its client is still quiet then.
    assert r.hget(keys.command_key("a2"), keys.QUIET_MARK) is None
