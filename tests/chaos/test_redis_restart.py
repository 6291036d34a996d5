"""Redis killed (SIGKILL) or stopped (SIGTERM) and restarted under load, AOF with appendfsync everysec.

The trade-off, documented in the README: Redis write()s the AOF before it answers a client, so killing
the *process* loses nothing that was acknowledged; `everysec` only risks the last second on a machine
crash or power loss (`always` closes that at a large throughput cost). The test holds callq to that:
no command whose 202 was returned is lost, and a client retrying with the same Idempotency-Key gets the
original command, never a second one.

Bounded form: 60 plays over 6 calls, one restart. Long form: 600 plays over 30 calls, three restarts.
"""

from __future__ import annotations

import signal
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
import redis

from tests.chaos.harness import (
    AofRedis,
    RetryingClient,
    Supervisor,
    executions,
    outcomes,
    second_commands,
    unfinished,
)
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.conftest import TEST_API_KEY, wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from workers import keys


@dataclass(frozen=True)
class Plan:
    calls: int
    commands: int
    restarts: int
    timeout_s: int


PLAN = pick(bounded=Plan(calls=4, commands=40, restarts=1, timeout_s=240),
            long=Plan(calls=30, commands=600, restarts=3, timeout_s=600))


@pytest.mark.timeout(PLAN.timeout_s)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_redis_restart_loses_no_accepted_command(sig: signal.Signals, aof: AofRedis, simulator: ThreadServer,
                                                 stack_env: dict[str, str], start_worker: Callable,  # type: ignore[type-arg]
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 record_figures: Callable[[Figures], None]) -> None:
    env = {**stack_env, "CALLQ_REDIS_URL": aof.url, "CALLQ_VISIBILITY_TIMEOUT_SECONDS": "6"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    api_server = ThreadServer("api.app:create_app", env, int(env["CALLQ_API_PORT"])).start()
    client = RetryingClient(api_server.url, deadline_s=60, retry_every_s=0.2)
    workers = Supervisor(start_worker, env, count=1)  # it heartbeats to this test's Redis, not the session's
    try:
        wait_until(lambda: redis.Redis.from_url(aof.url).zcard(keys.WORKERS_ZSET), timeout_s=30, what="the worker")
        with httpx.Client(base_url=api_server.url, timeout=30,
                          headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as api:
            calls = [wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
                     ["call_connection_id"] for _ in range(PLAN.calls)]
        accepted: dict[str, str] = {}
        plan = [(f"/v1/calls/{calls[n % len(calls)]}/play", f"k-{n}-{uuid.uuid4().hex[:6]}")
                for n in range(PLAN.commands)]

        def load() -> None:
            for path, key in plan:
                accepted[key] = client.submit(path, {"text": "hold"}, key)

        loader = threading.Thread(target=load)
        loader.start()
        for n in range(1, PLAN.restarts + 1):
            # Each restart lands at its share of the load: some requests in flight, some clients about to retry.
            wait_until(lambda n=n: len(accepted) >= n * len(plan) // (PLAN.restarts + 1) or not loader.is_alive(),
                       timeout_s=120, what="load to be under way")
            aof.stop(sig)
            aof.start()
        loader.join(timeout=PLAN.timeout_s / 2)
        assert not loader.is_alive() and len(accepted) == len(plan)
        seen = client.counts.copy()  # what the load saw, before the checks below replay keys on purpose

        r = redis.Redis.from_url(aof.url, decode_responses=True)
        ids = list(accepted.values())
        lost = unfinished(r, ids, timeout_s=120)
        # Retrying keys gives the original command back, never a second one.
        for path, key in plan[:20]:
            assert client.submit(path, {"text": "hold"}, key) == accepted[key]
        executed = executions(sim_log(simulator), ids)
        twice = sum(1 for n in executed.values() if n > 1)
        seconds = second_commands(r, accepted)
        record_figures(Figures(
            f"Redis restart ({sig.name})", f"1 worker, restarted if it exits; {len(plan)} plays over {PLAN.calls} "
            "calls from a client retrying with its keys; AOF, appendfsync everysec", commands=len(plan),
            faults=f"{PLAN.restarts} Redis {sig.name} + restart", lost=len(lost), duplicated=twice + seconds,
            http_5xx=seen["5xx"],
            notes={"worker exits (restarted)": workers.restarts,
                   "retries answered with the original": seen["replayed"],
                   "no answer (connection)": seen["refused"] + seen["cut"],
                   **outcomes(r, ids)}))

        stuck = [r.hgetall(keys.command_key(c)) for c in lost]
        assert not lost, f"{len(lost)} accepted commands never ended, e.g. {stuck[:2]}"
        assert client.answered_other_ids() == 0 and seconds == 0
        assert len(set(ids)) == len(plan)
        assert twice == 0, f"{twice} plays executed more than once"
    finally:
        workers.close()
        client.close()
        api_server.stop()
