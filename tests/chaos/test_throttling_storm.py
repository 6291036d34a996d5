"""ACS enforces a real 10 requests/s with 429 + Retry-After while clients push far faster.

Everything must still succeed, and 429s must stay a small fraction: callq's shared limiter keeps every
worker under the budget, and the rare 429 (clock edges between the two limiters) pauses all of them.

Bounded form: 60 connects at once per variant. Long form: 300.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
import redis

from tests.chaos.harness import executions, outcomes, unfinished
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.conftest import TEST_API_KEY
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import sim_log, sim_room_call
from tests.integration.test_runtime import faults
from workers import keys


@dataclass(frozen=True)
class Plan:
    commands: int
    timeout_s: int


PLAN = pick(bounded=Plan(commands=40, timeout_s=180), long=Plan(commands=300, timeout_s=400))


@pytest.mark.timeout(PLAN.timeout_s)
@pytest.mark.parametrize(("callq_rate", "max_throttled"), [(10, 0.1), (25, 0.5)], ids=["matched", "overconfigured"])
def test_everything_succeeds_under_a_real_acs_rate_limit(callq_rate: int, max_throttled: float,
                                                         simulator: ThreadServer, api_server: ThreadServer,
                                                         start_worker: Callable, redis_url: str,  # type: ignore[type-arg]
                                                         record_figures: Callable[[Figures], None]) -> None:
    """Matched: callq's budget equals ACS's. Overconfigured: callq believes 25/s; only 429s teach it."""
    env = {"CALLQ_ACS_RATE_PER_SECOND": str(callq_rate), "CALLQ_ACS_RATE_BURST": "3"}
    for n in range(2):
        start_worker(f"w{n}", extra_env=env)
    rooms = [sim_room_call(simulator) for _ in range(PLAN.commands)]
    faults(simulator, rate_limit_per_s=10, retry_after_s=1)

    answers_5xx: list[str] = []

    async def connect(c: httpx.AsyncClient, room: str) -> httpx.Response:
        key = str(uuid.uuid4())
        for _ in range(100):  # a well-behaved client retries a 5xx with the same key
            resp = await c.post(f"/v1/rooms/{room}/connect", headers={"Idempotency-Key": key})
            if resp.status_code < 500:
                return resp
            answers_5xx.append(resp.text)
            await asyncio.sleep(0.1)  # sleep-ok: the client's back-off between retries
        return resp

    async def storm() -> list[httpx.Response]:  # every command as fast as the API takes them (~50/s and more)
        async with httpx.AsyncClient(base_url=api_server.url, timeout=60,
                                     headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as c:
            return await asyncio.gather(*(connect(c, room) for room in rooms))

    answers = asyncio.run(storm())
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers if a.status_code != 202][:2]
    ids = [a.json()["id"] for a in answers]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    lost = unfinished(r, ids, timeout_s=PLAN.timeout_s - 60)
    arrivals = simulator.http.get("/_sim/arrivals").json()
    throttled = sum(1 for a in arrivals if a["rejected"] == 429)
    executed = executions(sim_log(simulator), ids)
    record_figures(Figures(
        f"throttling storm ({'matched' if callq_rate == 10 else 'over-configured'})",
        f"2 workers, callq budget {callq_rate}/s (burst 3) against ACS enforcing 10/s with 429 + Retry-After 1 s; "
        f"{len(ids)} connects at once", commands=len(ids), faults=f"{throttled} 429s from ACS",
        lost=len(lost), duplicated=sum(1 for n in executed.values() if n > 1),
        http_5xx=len(answers_5xx),
        notes={"ACS requests": len(arrivals), "429 fraction": f"{throttled / max(1, len(arrivals)):.1%}",
               **{f"5xx {code}": n for code, n in Counter(_code(text) for text in answers_5xx).items()},
               **outcomes(r, ids)}))

    assert not lost, f"{len(lost)} commands never ended"
    assert len(set(ids)) == len(ids), "a retried key got a second command"
    assert all(r.hget(keys.command_key(i), "status") == "succeeded" for i in ids)
    assert all(n == 1 for n in executed.values()), "a connect was executed twice, or never"
    assert throttled <= max_throttled * len(arrivals), f"{throttled} of {len(arrivals)} requests were throttled"


def _code(body: str) -> str:
    try:
        return str(json.loads(body)["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "unreadable"
