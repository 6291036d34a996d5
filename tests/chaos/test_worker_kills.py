"""Workers SIGKILLed again and again under load: nothing lost, nothing executed twice, order kept.

Bounded form (``make test``): 2 worker processes, 20 calls × 6 commands, 250 ms of ACS latency, a worker
killed every second and replaced, five times. ``callq chaos`` runs longer forms of the same scenario.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from tests.integration.test_runtime import CALLER, PHONE, all_terminal, faults
from workers import keys
from workers.acs import repeatability_id

ENV = {"CALLQ_VISIBILITY_TIMEOUT_SECONDS": "4", "CALLQ_ACS_RATE_PER_SECOND": "500", "CALLQ_ACS_RATE_BURST": "50",
       "CALLQ_OUTCOME_TIMEOUT_SECONDS": "10"}
SCRIPT: list[tuple[str, dict[str, Any], str]] = [
    ("participants", {"phone_number": PHONE, "source_caller_id": CALLER}, "addParticipant"),
    ("dtmf", {"phone_number": PHONE, "tones": "1"}, "sendDtmfTones"),
    ("play", {"text": "one moment"}, "play"),
    ("dtmf", {"phone_number": PHONE, "tones": "2"}, "sendDtmfTones"),
    ("participants/remove", {"phone_number": PHONE}, "removeParticipant"),
    ("hang-up", {"for_everyone": True}, "terminate"),
]


class Killer:
    """Kills a random worker every ``every_s`` and starts a replacement, ``times`` times."""

    def __init__(self, start_worker: Callable[..., Any], workers: list[Any], times: int, every_s: float,
                 in_flight: Callable[[], set[str]]) -> None:
        self.start_worker, self.workers, self.times, self.every_s = start_worker, workers, times, every_s
        self.in_flight = in_flight
        self.hit: set[str] = set()  # commands some worker was sending when a kill landed
        self.kills = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(5)
        while self.kills < self.times and not self.stop.wait(self.every_s):  # load pacing, not synchronisation
            victim = self.workers.pop(rng.randrange(len(self.workers)))
            self.hit |= self.in_flight()
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            self.kills += 1
            self.workers.append(self.start_worker(f"r{self.kills}", extra_env=ENV, wait=False))


@pytest.mark.timeout(300)
def test_sigkilled_workers_lose_nothing_and_execute_nothing_twice(simulator: ThreadServer, api: httpx.Client,
                                                                  start_worker: Callable, redis_url: str) -> None:  # type: ignore[type-arg]
    workers = [start_worker(f"w{n}", extra_env=ENV) for n in range(2)]
    calls = [wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
             for _ in range(20)]
    assert all(c["status"] == "succeeded" for c in calls)
    faults(simulator, latency_ms=250)  # requests stay in flight long enough for kills to land mid-send
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ids: dict[str, list[str]] = defaultdict(list)

    def in_flight() -> set[str]:
        return {i for group in list(ids.values()) for i in list(group)
                if r.hget(keys.command_key(i), "status") == "running"}

    killer = Killer(start_worker, workers, times=5, every_s=1.0, in_flight=in_flight)
    killer.thread.start()
    for step, (path, body, _) in enumerate(SCRIPT):
        for c in calls:  # interleave calls so every kill lands in the middle of many calls' scripts
            resp = post(api, f"/v1/calls/{c['call_connection_id']}/{path}", body, key=f"{c['id']}-{step}")
            assert resp.status_code == 202, resp.text
            ids[c["call_connection_id"]].append(resp.json()["id"])
    every = [i for group in ids.values() for i in group]
    wait_until(lambda: all_terminal(r, every), timeout_s=200, what="every command to end despite the kills")
    killer.stop.set()
    killer.thread.join(timeout=30)
    assert killer.kills >= 3, "the scenario must actually kill workers"

    records = {i: r.hgetall(keys.command_key(i)) for i in every}
    outcomes = Counter(rec["status"] if rec["status"] == "succeeded" else json.loads(rec["error"])["code"]
                       for rec in records.values())
    # Nothing lost: every command ended. The only honest non-success is a non-repeatable command whose
    # worker died mid-send and whose effect ACS cannot be asked about.
    print(f"kills={killer.kills} outcomes={dict(outcomes)} mid-send at a kill={len(killer.hit)}")  # on -s/failure
    assert killer.hit, "no kill landed while a command was being sent: the scenario proved nothing"
    assert set(outcomes) <= {"succeeded", "outcome_unknown"}, outcomes
    log = sim_log(simulator)
    by_context = Counter(e["operation_context"] for e in log if e.get("operation_context"))
    by_repeat = Counter(e["repeatability_id"] for e in log if e["operation"] == "terminate")
    for cc, group in ids.items():
        for command_id, (_, _, operation) in zip(group, SCRIPT, strict=True):
            executed = by_repeat[repeatability_id(command_id)] if operation == "terminate" else \
                by_context[command_id]
            assert executed <= 1, f"{operation} {command_id} executed {executed} times"
            if records[command_id]["status"] == "succeeded":
                assert executed == 1, f"{operation} {command_id} succeeded but ACS never executed it"
        # Per-call order: what ACS executed for this call, it executed in acceptance order.
        seen = sorted((e["t"], e["operation"]) for e in log if e.get("call_connection_id") == cc
                      and e["operation"] != "connect")
        assert [op for _, op in seen] == [op for (_, _, op), cid in zip(SCRIPT, group, strict=True)
                                          if by_context[cid] or by_repeat[repeatability_id(cid)]], cc
