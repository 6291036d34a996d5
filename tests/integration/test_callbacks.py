"""Every command resolves exactly once, whatever ACS's callbacks do: early, twice, reordered, late, lost.

Each scenario runs the same room-call script through the real stack with one simulator fault set, then
compares every command's single terminal state with the simulator's truth (its execution log):
a command ACS executed is ``succeeded`` — or, only for operations whose effect ACS cannot be asked
about (DTMF, play), honestly ``failed``/``callback_timeout`` when its event never came.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.conftest import wait_until
from tests.integration.conftest import ThreadServer, post_all
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from tests.integration.test_runtime import CALLER, PHONE, all_terminal, faults
from workers import keys
from workers.command import Status
from workers.operations import OPERATIONS

FAST = {"CALLQ_OUTCOME_TIMEOUT_SECONDS": "1.5"}  # lost events are noticed quickly
SCRIPT: list[tuple[str, dict[str, Any]]] = [
    ("participants", {"phone_number": PHONE, "source_caller_id": CALLER, "invitation_timeout": 10}),
    ("dtmf", {"phone_number": PHONE, "tones": "12#"}),
    ("recordings", {}),
    ("recording/pause", {}),
    ("recording/resume", {}),
    ("recording/stop", {}),
    ("play", {"text": "bye"}),
    ("participants/remove", {"phone_number": PHONE}),
    ("hang-up", {"for_everyone": True}),
]


def run_script(api: httpx.Client, sim: ThreadServer, r: redis.Redis) -> list[dict[str, str]]:
    """Connect, then send the whole script back to back; returns every command's final record."""
    connect_id = post(api, f"/v1/rooms/{sim_room_call(sim)}/connect").json()["id"]
    connect = wait(api, connect_id)
    assert connect["status"] == "succeeded", connect
    cc = connect["call_connection_id"]
    ids = [connect_id]
    for path, body in SCRIPT:
        resp = post(api, f"/v1/calls/{cc}/{path}", body)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    wait_until(lambda: all_terminal(r, ids), timeout_s=90, what="the script to finish")
    return [r.hgetall(keys.command_key(i)) for i in ids]


def assert_matches_truth(records: list[dict[str, str]], sim: ThreadServer) -> None:
    executed = sim_log(sim)
    for rec in records:
        op = OPERATIONS[rec["type"]]
        assert rec["status"] in Status.TERMINAL
        if rec["status"] == "succeeded":
            continue
        error = json.loads(rec["error"])
        # ACS cannot be asked about it, or the call it ran in is gone: both are said, neither is a wrong answer. A
        # media operation the hang-up overtook unsent ended ``interrupted``: ACS never saw it.
        unsent = error["code"] == "interrupted" and op.media and not any(
            e.get("operation_context") == rec["id"] for e in executed)
        honest_unknown = ((error["code"] == "callback_timeout" and op.reconcile is None)
                          or error["code"] == "call_ended" or unsent)
        assert honest_unknown, f"{rec['type']} failed ({error}) but ACS executed it: {len(executed)} log entries"


@pytest.fixture
def r(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


@pytest.mark.parametrize("knobs", [
    {"early_delivery": True},
    {"duplicate_rate": 0.2, "seed": 7},
    {"reorder": True},
    {"drop_rate": 0.1, "seed": 11},
], ids=["early", "duplicates", "reorder", "drops"])
def test_every_command_ends_once_and_matches_the_simulator(knobs, simulator, api, start_worker, r) -> None:  # type: ignore[no-untyped-def]
    start_worker(extra_env=FAST)
    faults(simulator, **knobs)
    records = run_script(api, simulator, r)
    assert_matches_truth(records, simulator)
    if "drop_rate" in knobs:
        dropped = simulator.http.get("/_sim/callbacks", params={"outcome": "dropped_by_fault"}).json()
        assert dropped, "the drop scenario dropped nothing: it would prove nothing"
    else:
        assert all(rec["status"] == "succeeded" for rec in records), [rec["type"] for rec in records
                                                                     if rec["status"] != "succeeded"]
    # Each stored event appears once in the call's timeline, duplicates or not.
    cc = records[0]["call_connection_id"]
    ids = [json.loads(f["event"])["id"] for _, f in r.xrange(keys.call_events_key(cc))]
    assert len(ids) == len(set(ids))


def test_events_later_than_the_deadline_are_reconciled_and_kept_not_applied(simulator, api, start_worker,  # type: ignore[no-untyped-def]
                                                                            r) -> None:
    start_worker(extra_env=FAST)
    room = sim_room_call(simulator)
    faults(simulator, delay_ms=4000)
    command_id = post(api, f"/v1/rooms/{room}/connect").json()["id"]
    done = wait(api, command_id)
    assert done["status"] == "succeeded" and done["resolved_by"]["type"] == "reconciled", done
    # The real CallConnected arrives afterwards: recorded on the command and in the timeline, nothing moves.
    wait_until(lambda: r.hget(keys.command_key(command_id), "late_event"), timeout_s=20, what="the late event")
    assert json.loads(r.hget(keys.command_key(command_id), "late_event"))["type"] == "CallConnected"
    assert r.hget(keys.command_key(command_id), "resolved_at") == done["resolved_at"]


def test_lost_events_are_reconciled_else_fail_callback_timeout_or_call_ended(simulator, api, start_worker,  # type: ignore[no-untyped-def]
                                                                           r) -> None:
    start_worker(extra_env=FAST)
    connect = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
    cc = connect["call_connection_id"]
    add = wait(api, post(api, f"/v1/calls/{cc}/participants", SCRIPT[0][1]).json()["id"])
    assert add["status"] == "succeeded"
    faults(simulator, callback_target_down=True)  # every callback from now on is lost
    dtmf = wait(api, post(api, f"/v1/calls/{cc}/dtmf", SCRIPT[1][1]).json()["id"])
    assert dtmf["status"] == "failed" and dtmf["error"]["code"] == "callback_timeout", dtmf
    remove = wait(api, post(api, f"/v1/calls/{cc}/participants/remove", {"phone_number": PHONE}).json()["id"])
    assert remove["status"] == "succeeded" and remove["resolved_by"]["type"] == "reconciled", remove
    # A play needs only to be sent before the hang-up may go; its deadline passes with the call gone.
    play = post(api, f"/v1/calls/{cc}/play", {"text": "goodbye"}).json()["id"]
    hang_up = wait(api, post(api, f"/v1/calls/{cc}/hang-up", {"for_everyone": True}).json()["id"])
    assert hang_up["status"] == "succeeded" and hang_up["resolved_by"]["type"] == "reconciled", hang_up
    ended = wait(api, play)
    assert ended["status"] == "failed" and ended["error"]["code"] == "call_ended", ended
    assert ended["resolved_by"] == {"type": "reconciled", "how": "read call"}


@pytest.mark.timeout(120)
def test_the_event_resolves_the_command_even_with_no_worker_alive(simulator, api, start_worker, r) -> None:  # type: ignore[no-untyped-def]
    worker = start_worker()
    room = sim_room_call(simulator)
    faults(simulator, delay_ms=1500)
    command_id = post(api, f"/v1/rooms/{room}/connect").json()["id"]
    wait_until(lambda: r.hget(keys.command_key(command_id), "status") == "waiting", timeout_s=30,
               what="connect to be sent")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    done = wait(api, command_id)
    assert done["status"] == "succeeded" and done["resolved_by"]["type"] == "CallConnected", done


def _token(key: Any, **overrides: Any) -> str:
    claims = {"iss": "https://acscallautomation.communication.azure.com", "aud": "00000000-0000-4000-8000-00000000ca11",
              "iat": int(time.time()), "exp": int(time.time()) + 300, **overrides}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "forged"})


@pytest.mark.parametrize("make_token", [
    lambda k: _token(k),                                               # signed by a key ACS never published
    lambda k: "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0." + jwt.utils.base64url_encode(  # alg: none
        json.dumps({"iss": "x", "aud": "y", "exp": int(time.time()) + 60}).encode()).decode() + ".",
    lambda k: "not-a-jwt",
], ids=["unknown-key", "alg-none", "garbage"])
def test_forged_callbacks_are_401_and_store_nothing(make_token: Callable[[Any], str], simulator: ThreadServer,
                                                     api: httpx.Client, r: redis.Redis) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    event = [{"id": "evil-1", "type": "Microsoft.Communication.CallDisconnected", "source": "x",
              "data": {"callConnectionId": "cc-victim"}}]
    resp = httpx.post(f"{api.base_url}/v1/acs/events", json=event,
                      headers={"Authorization": f"Bearer {make_token(key)}"})
    assert resp.status_code == 401, resp.text
    assert not r.exists(keys.event_seen_key("evil-1")) and not r.exists(keys.call_events_key("cc-victim"))


@pytest.mark.timeout(240)
def test_hundreds_of_commands_pend_on_one_worker_with_four_threads(simulator_process, api_process,  # type: ignore[no-untyped-def]
                                                                   start_worker, r) -> None:
    """Waiting for ACS holds no worker slot: 400 plays on 400 calls all pend on 4 threads (100 per thread)."""
    simulator = simulator_process  # simulator and API in their own processes: not slowed by this one's requests
    n = 400
    start_worker(concurrency=4, extra_env={"CALLQ_ACS_RATE_PER_SECOND": "100000", "CALLQ_ACS_RATE_BURST": "1000",
                                           "CALLQ_OUTCOME_TIMEOUT_SECONDS": "300"})
    rooms = [sim_room_call(simulator) for _ in range(n)]

    def submit(paths: list[str], body: dict[str, Any] | None) -> list[str]:
        answers = asyncio.run(post_all(api_process.url, paths, body))
        assert {a.status_code for a in answers} == {202}, [a.text for a in answers if a.status_code != 202][:2]
        return [a.json()["id"] for a in answers]

    def all_are(ids: list[str], status: str) -> bool:
        pipe = r.pipeline(transaction=False)
        for i in ids:
            pipe.hget(keys.command_key(i), "status")
        return set(pipe.execute()) == {status}

    connects = submit([f"/v1/rooms/{room}/connect" for room in rooms], None)
    wait_until(lambda: all_are(connects, "succeeded"), timeout_s=90, what=f"{n} connects")
    faults(simulator, delay_ms=120_000)  # every outcome from now on is two minutes away
    calls = [r.hget(keys.command_key(i), "call_connection_id") for i in connects]
    plays = submit([f"/v1/calls/{cc}/play" for cc in calls], {"text": "please hold"})
    wait_until(lambda: all_are(plays, "waiting"), timeout_s=90, what=f"{n} plays to be sent and pending",
               interval_s=0.5)
    assert len([e for e in sim_log(simulator) if e["operation"] == "play"]) == n
