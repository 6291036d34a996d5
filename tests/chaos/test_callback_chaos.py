"""ACS's callbacks misbehaving all at once, over many calls at the same time.

``tests/integration/test_callbacks.py`` takes each fault alone on one call (early, duplicates, reordered, dropped,
late, target down); here they come together — early delivery, 20 % duplicates, every batch reordered, 10 %
dropped — while calls run the room-call script side by side on two workers. Every command must end exactly
once, succeeded or failed only as a missing event explains (see :func:`honest`), with nothing executed twice
at ACS (the simulator's log) and no event stored twice.

Bounded form: 4 calls × 10 commands. Long form: 40 calls × 10 commands.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pytest
import redis

from tests.chaos.harness import call_ends, delivery_order, executions, honest, outcomes, record, unfinished
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.integration.conftest import ThreadServer
from tests.integration.test_callbacks import FAST, SCRIPT
from tests.integration.test_end_to_end import post, sim_log, sim_room_call
from tests.integration.test_runtime import faults
from workers import keys


@dataclass(frozen=True)
class Plan:
    calls: int
    timeout_s: int


PLAN = pick(bounded=Plan(calls=4, timeout_s=120), long=Plan(calls=40, timeout_s=600))
KNOBS = {"early_delivery": True, "duplicate_rate": 0.2, "reorder": True, "drop_rate": 0.1, "seed": 7}
ENV = {**FAST, "CALLQ_ACS_RATE_PER_SECOND": "500", "CALLQ_ACS_RATE_BURST": "50"}


@pytest.mark.timeout(PLAN.timeout_s)
def test_every_command_ends_once_as_acs_saw_it_under_every_callback_fault(
        simulator: ThreadServer, api: httpx.Client, start_worker: Callable, redis_url: str,  # type: ignore[type-arg]
        record_figures: Callable[[Figures], None]) -> None:
    for n in range(2):
        start_worker(f"w{n}", extra_env=ENV)
    faults(simulator, **KNOBS)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    answers = [post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect") for _ in range(PLAN.calls)]
    connects = [a.json()["id"] for a in answers]
    assert not unfinished(r, connects, timeout_s=PLAN.timeout_s / 3), "the calls did not all connect"
    ids: dict[str, list[str]] = defaultdict(list)
    for command_id in connects:
        connect = record(r, command_id)
        assert connect["status"] == "succeeded", connect
        ids[connect["call_connection_id"]].append(command_id)
    for path, body in SCRIPT:
        for cc in list(ids):  # interleaved, so every call's script is in flight at once
            resp = post(api, f"/v1/calls/{cc}/{path}", body)
            answers.append(resp)
            assert resp.status_code == 202, resp.text
            ids[cc].append(resp.json()["id"])
    every = [i for group in ids.values() for i in group]
    lost = unfinished(r, every, timeout_s=PLAN.timeout_s - 30)

    log = sim_log(simulator)
    executed = executions(log, every)
    callbacks = simulator.http.get("/_sim/callbacks").json()
    stored_twice = 0
    for cc in ids:
        timeline = cast(list[tuple[str, dict[str, str]]], r.xrange(keys.call_events_key(cc)))
        stored = [json.loads(fields["event"])["id"] for _, fields in timeline]
        stored_twice += len(stored) - len(set(stored))
    record_figures(Figures(
        "callback chaos", f"2 workers; {PLAN.calls} calls × {len(SCRIPT) + 1} commands side by side; callbacks "
        "early, 20 % duplicated, reordered, 10 % dropped; outcome deadline 1.5 s",
        commands=len(every),
        faults=f"{_events(callbacks, outcome='dropped_by_fault')} events dropped, "
               f"{_events(callbacks, duplicate=True)} delivered twice, batches reordered",
        lost=len(lost), duplicated=sum(1 for n in executed.values() if n > 1),
        http_5xx=sum(1 for a in answers if a.status_code >= 500),
        notes={"events stored twice": stored_twice,
               "callback POSTs answered 5xx": sum(1 for e in callbacks if (e["status"] or 0) >= 500),
               **outcomes(r, every)}))

    assert not lost, f"{len(lost)} commands never ended, e.g. {r.hgetall(keys.command_key(lost[0]))}"
    records = {i: record(r, i) for i in every}
    wrong = [(rec["type"], rec["error"], rec.get("resolved_by")) for rec in records.values()
             if not honest(rec, delivery_order(callbacks), call_ends(log), records=records, executed=executed,
                             log=log)]
    assert not wrong, f"{len(wrong)} commands failed although callq had what it needed to know better: {wrong[:3]}"
    assert all(n <= 1 for n in executed.values()), {i: n for i, n in executed.items() if n > 1}
    assert stored_twice == 0
    assert _events(callbacks, outcome="dropped_by_fault") and _events(callbacks, duplicate=True), \
        "the faults never fired: the scenario proved nothing"


def _events(callbacks: list[dict[str, Any]], **match: object) -> int:
    """Events in the simulator's callback log entries matching ``match`` (delivered once per entry)."""
    return sum(len(e["event_ids"]) for e in callbacks
               if all(e.get(k) == v for k, v in match.items()) and (e["outcome"] != "retrying"))
