"""The API process SIGKILLed and SIGTERMed and restarted on the same port while clients keep posting.

Clients do what a well-behaved client does: on no answer or a 5xx, send the same request again with the same
Idempotency-Key until a 2xx. Whatever the API was doing when it died — mid-script in Redis, mid-response —
every command answered 2xx ends, each key has exactly one command (a retry gets the original back), and ACS
executes nothing twice. ACS's callbacks also land on the API: those sent while it is down are lost after the
simulator's retries, so their commands resolve from a read of ACS at their outcome deadline, or — DTMF and
play, which ACS cannot be asked about — end ``callback_timeout``. The figures show how many.

Bounded form: 2 workers, 8 calls × 15 mixed commands from 4 client threads, 4 restarts. Long form: 20 calls × 50
commands (1,000) from 5 threads, 12 restarts.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

from tests.chaos.harness import (
    AofRedis,
    ApiProcess,
    RetryingClient,
    call_ends,
    delivery_order,
    executions,
    honest,
    outcomes,
    record,
    second_commands,
    unfinished,
)
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.chaos.test_worker_kills import script
from tests.conftest import TEST_API_KEY, wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from workers import keys


@dataclass(frozen=True)
class Plan:
    calls: int
    commands_per_call: int
    clients: int
    restarts: int
    timeout_s: int


PLAN = pick(bounded=Plan(calls=6, commands_per_call=15, clients=3, restarts=4, timeout_s=150),
            long=Plan(calls=20, commands_per_call=50, clients=5, restarts=12, timeout_s=600))
ENV = {"CALLQ_ACS_RATE_PER_SECOND": "500", "CALLQ_ACS_RATE_BURST": "50",
       "CALLQ_OUTCOME_TIMEOUT_SECONDS": "3"}  # callbacks lost while the API is down are given up on quickly


@pytest.mark.timeout(PLAN.timeout_s)
def test_api_restarts_lose_nothing_and_retries_get_the_original(
        aof: AofRedis, simulator: ThreadServer, stack_env: dict[str, str], start_worker: Callable,  # type: ignore[type-arg]
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, record_figures: Callable[[Figures], None]) -> None:
    env = {**stack_env, **ENV, "CALLQ_REDIS_URL": aof.url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for n in range(2):
        start_worker(f"w{n}", extra_env=env, wait=False)  # they heartbeat to this test's Redis, not the session's
    wait_until(lambda: redis.Redis.from_url(aof.url).zcard(keys.WORKERS_ZSET) >= 2, timeout_s=30, what="2 workers")
    api = ApiProcess(env, int(env["CALLQ_API_PORT"]), tmp_path / "api.log")
    api.start()
    client = RetryingClient(api.url, deadline_s=60, retry_every_s=0.05)
    try:
        with httpx.Client(base_url=api.url, timeout=30, headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as c:
            calls = [wait(c, post(c, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
                     ["call_connection_id"] for _ in range(PLAN.calls)]
        steps = script(PLAN.commands_per_call)
        ids: dict[str, list[str]] = defaultdict(list)

        def load(mine: list[str]) -> None:
            # A call's commands go one after another (each retried until accepted), so acceptance order is known.
            for step, (path, body, _) in enumerate(steps):
                for cc in mine:
                    ids[cc].append(client.submit(f"/v1/calls/{cc}/{path}", body, key=f"{cc}-{step}"))

        loaders = [threading.Thread(target=load, args=(calls[t::PLAN.clients],)) for t in range(PLAN.clients)]
        for loader in loaders:
            loader.start()
        total, signals = PLAN.calls * len(steps), Counter[str]()
        for n in range(1, PLAN.restarts + 1):
            # Each restart lands at its share of the load, so every one of them hits clients mid-request.
            wait_until(lambda n=n: len(client.answers) >= n * total // (PLAN.restarts + 1)
                       or not any(t.is_alive() for t in loaders), timeout_s=120, what="load to be under way")
            sig = signal.SIGKILL if n % 2 else signal.SIGTERM
            api.stop(sig)
            signals[sig.name] += 1
            api.start()
        for loader in loaders:
            loader.join(timeout=PLAN.timeout_s / 2)
        assert not any(t.is_alive() for t in loaders), "the clients did not get every request accepted"
        seen = client.counts.copy()

        r = redis.Redis.from_url(aof.url, decode_responses=True)
        every = [i for group in ids.values() for i in group]
        lost = unfinished(r, every, timeout_s=PLAN.timeout_s / 3)
        log = sim_log(simulator)
        executed = executions(log, every)
        twice = sum(1 for n in executed.values() if n > 1)
        seconds = second_commands(r, client.answers)
        ended = outcomes(r, every)
        callbacks = simulator.http.get("/_sim/callbacks").json()
        undelivered = sum(len(e["event_ids"]) for e in callbacks if e["outcome"] == "dropped")
        callback_5xx = sum(1 for e in callbacks if (e["status"] or 0) >= 500)
        record_figures(Figures(
            "API restarts", f"2 workers; {PLAN.calls} calls × {PLAN.commands_per_call} mixed commands from "
            f"{PLAN.clients} client threads retrying on no answer or 5xx; API a separate uvicorn process",
            commands=len(every), faults=" + ".join(f"{n} {name}" for name, n in signals.items()) + " of the API",
            lost=len(lost), duplicated=twice + seconds + client.answered_other_ids(), http_5xx=seen["5xx"],
            notes={"longest outage": f"{max(api.outages_s):.1f} s", "requests cut mid-flight": seen["cut"],
                   "refused while down": seen["refused"],
                   "retries answered with the original": seen["replayed"],
                   "callbacks ACS could not deliver": undelivered, "callback POSTs answered 5xx": callback_5xx,
                   **ended}))

        assert not lost, f"{len(lost)} accepted commands never ended, e.g. {r.hgetall(keys.command_key(lost[0]))}"
        assert client.answered_other_ids() == 0, "a retry was answered with another command than the first answer"
        assert seconds == 0, f"{seconds} Idempotency-Keys got a second command"
        assert len(set(every)) == len(every) == total
        assert seen["cut"] + seen["refused"], "no request ever went unanswered: the restarts proved nothing"
        delivered, ended_at = delivery_order(callbacks), call_ends(log)
        records = {i: record(r, i) for i in every}
        for cc, group in ids.items():
            for command_id, (_, _, operation) in zip(group, steps, strict=True):
                stored = record(r, command_id)
                assert executed[command_id] <= 1, f"{operation} {command_id} executed {executed[command_id]} times"
                if stored["status"] == "succeeded":
                    assert executed[command_id] == 1, f"{operation} {command_id} succeeded but ACS never executed it"
                else:  # an event that found no API is the only excuse
                    assert honest(stored, delivered, ended_at, records=records, executed=executed, log=log), stored
            # Per-call order: what ACS executed for this call, it executed in acceptance order.
            order = sorted((e["t"], e["operation"]) for e in log if e.get("call_connection_id") == cc
                           and e["operation"] != "connect")
            assert [op for _, op in order] == [op for (_, _, op), cid in zip(steps, group, strict=True)
                                               if executed[cid]], cc
    finally:
        client.close()
        api.stop(signal.SIGTERM)
