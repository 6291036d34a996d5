"""Workers SIGKILLed again and again under load: nothing lost, nothing executed twice, order kept.

Bounded form (``make test``): 2 worker processes, 20 calls × 6 commands, 250 ms of ACS latency, a worker
killed every second and replaced, five times. Long form (``callq chaos``): 20 calls × 50 mixed commands
(1,000), a worker killed every 3 s until every command has ended.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import redis

from tests.chaos.harness import Killer, executions, outcomes, unfinished
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from tests.integration.test_runtime import CALLER, PHONE, faults
from workers import keys

ENV = {"CALLQ_VISIBILITY_TIMEOUT_SECONDS": "4", "CALLQ_ACS_RATE_PER_SECOND": "500", "CALLQ_ACS_RATE_BURST": "50",
       "CALLQ_OUTCOME_TIMEOUT_SECONDS": "10"}
Step = tuple[str, dict[str, Any], str]  # route under /v1/calls/{cc}/, body, the operation ACS logs


@dataclass(frozen=True)
class Plan:
    calls: int
    commands_per_call: int
    kill_every_s: float
    kills: int | None  # None: keep killing until every command has ended
    timeout_s: int


PLAN = pick(bounded=Plan(calls=20, commands_per_call=6, kill_every_s=1.0, kills=5, timeout_s=300),
            long=Plan(calls=20, commands_per_call=50, kill_every_s=3.0, kills=None, timeout_s=900))


def script(length: int) -> list[Step]:
    """A call's commands: add a participant, then DTMF, plays and other participants coming and going, then
    remove the first and hang up. ``script(6)`` is the bounded form's classic add-dtmf-play-dtmf-remove-hang-up."""
    def add(phone: str) -> Step:
        # A short invitation timeout: an add's outcome deadline is it plus the outcome timeout (60 s by default).
        return "participants", {"phone_number": phone, "source_caller_id": CALLER, "invitation_timeout": 5}, \
            "addParticipant"

    def dtmf(phone: str, tones: str) -> Step:
        return "dtmf", {"phone_number": phone, "tones": tones}, "sendDtmfTones"

    def remove(phone: str) -> Step:
        return "participants/remove", {"phone_number": phone}, "removeParticipant"

    middle: list[Step] = []
    guest = 0
    while len(middle) < length - 3:
        guest += 1
        other = f"+1425555{guest:04d}"
        middle += [dtmf(PHONE, "1"), ("play", {"text": "one moment"}, "play"), dtmf(PHONE, "2"),
                   add(other), dtmf(other, "3"), remove(other)]
    return [add(PHONE), *middle[:length - 3], remove(PHONE), ("hang-up", {"for_everyone": True}, "terminate")]


@pytest.mark.timeout(PLAN.timeout_s)
def test_sigkilled_workers_lose_nothing_and_execute_nothing_twice(
        simulator: ThreadServer, api: httpx.Client, start_worker: Callable, redis_url: str,  # type: ignore[type-arg]
        record_figures: Callable[[Figures], None]) -> None:
    steps = script(PLAN.commands_per_call)
    workers = [start_worker(f"w{n}", extra_env=ENV) for n in range(2)]
    calls = [wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
             for _ in range(PLAN.calls)]
    assert all(c["status"] == "succeeded" for c in calls)
    faults(simulator, latency_ms=250)  # requests stay in flight long enough for kills to land mid-send
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ids: dict[str, list[str]] = defaultdict(list)

    def in_flight() -> set[str]:
        return {i for group in list(ids.values()) for i in list(group)
                if r.hget(keys.command_key(i), "status") == "running"}

    killer = Killer(start_worker, workers, env=ENV, times=PLAN.kills, every_s=PLAN.kill_every_s,
                    in_flight=in_flight)
    killer.thread.start()
    answers_5xx = 0
    for step, (path, body, _) in enumerate(steps):
        for c in calls:  # interleave calls so every kill lands in the middle of many calls' scripts
            resp = post(api, f"/v1/calls/{c['call_connection_id']}/{path}", body, key=f"{c['id']}-{step}")
            answers_5xx += resp.status_code >= 500
            assert resp.status_code == 202, resp.text
            ids[c["call_connection_id"]].append(resp.json()["id"])
    every = [i for group in ids.values() for i in group]
    lost = unfinished(r, every, timeout_s=PLAN.timeout_s - 60)
    killer.stop.set()
    killer.thread.join(timeout=30)

    records = {i: r.hgetall(keys.command_key(i)) for i in every}
    ended = outcomes(r, every)
    log = sim_log(simulator)
    executed = executions(log, every)
    record_figures(Figures(
        "worker kills", f"2 workers; {PLAN.calls} calls × {PLAN.commands_per_call} commands; 250 ms ACS latency; "
        f"a worker SIGKILLed every {PLAN.kill_every_s:g} s" + (f", {PLAN.kills} times" if PLAN.kills else ""),
        commands=len(every), faults=f"{killer.kills} worker SIGKILLs", lost=len(lost),
        duplicated=sum(1 for n in executed.values() if n > 1), http_5xx=answers_5xx,
        notes={"mid-send at a kill": len(killer.hit), **ended}))

    assert not lost, f"{len(lost)} commands never ended, e.g. {[records[i] for i in lost[:2]]}"
    assert killer.kills >= 3, "the scenario must actually kill workers"
    # Nothing lost: every command ended. The only honest non-success is a non-repeatable command whose
    # worker died mid-send and whose effect ACS cannot be asked about.
    assert killer.hit, "no kill landed while a command was being sent: the scenario proved nothing"
    assert set(ended) <= {"succeeded", "succeeded, reconciled", "outcome_unknown"}, ended
    for cc, group in ids.items():
        for command_id, (_, _, operation) in zip(group, steps, strict=True):
            assert executed[command_id] <= 1, f"{operation} {command_id} executed {executed[command_id]} times"
            if records[command_id]["status"] == "succeeded":
                assert executed[command_id] == 1, f"{operation} {command_id} succeeded but ACS never executed it"
        # Per-call order: what ACS executed for this call, it executed in acceptance order.
        seen = sorted((e["t"], e["operation"]) for e in log if e.get("call_connection_id") == cc
                      and e["operation"] != "connect")
        assert [op for _, op in seen] == [op for (_, _, op), cid in zip(steps, group, strict=True)
                                          if executed[cid]], cc
