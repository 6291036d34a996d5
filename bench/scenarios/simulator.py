"""simulator: how many ACS requests (and callbacks) per second the simulator sustains, via ``sim_capacity``.

The same signed request mix is then sent to a stub ACS endpoint that answers at once and sends nothing
(uvicorn + Starlette, the simulator's own stack): the HTTP ceiling on this machine. No target: the figure
says how far the other scenarios are from the simulator's limit.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import Coroutine
from typing import Any, TypeVar

from bench import sim_capacity
from bench.results import Row, ScenarioResult, compare
from bench.scenarios import Context

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:  # the simulator runs on uvloop via uvicorn; give the load generator the same footing
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run(ctx: Context) -> ScenarioResult:
    requests, concurrency, calls = int(ctx.pick(20_000, 1_000)), int(ctx.pick(32, 16)), int(ctx.pick(32, 8))
    with ctx.children("simulator") as ch:
        def spawn(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
            return ch.spawn("simulator", argv, env)

        sim = _run(sim_capacity.measure(requests=requests, concurrency=concurrency, calls=calls,
                                        max_seconds=ctx.pick(30, 2), spawn=spawn))
        stub = ch.uvicorn("stub-acs", "bench.baselines:stub_acs", {})
        fake_calls = [str(uuid.uuid4()) for _ in range(calls)]
        statuses, _, sent_s = _run(sim_capacity.drive(stub.port, fake_calls, requests=requests,
                                                      concurrency=concurrency, max_seconds=ctx.pick(30, 2)))
    stub_rps = sum(statuses.values()) / sent_s
    res = ScenarioResult("simulator")
    res.rows = [
        compare("ACS requests", "req/s", sim.requests_per_s, stub_rps, "stub ACS"),
        Row("callbacks delivered", "events/s", sim.callbacks_per_s, None, "—"),
    ]
    res.details = {"simulator": {"requests": sim.requests, "requests_per_s": sim.requests_per_s,
                                 "statuses": dict(sim.statuses), "callbacks_per_s": sim.callbacks_per_s,
                                 "events": sim.events, "expected_events": sim.expected_events, "posts": sim.posts,
                                 "events_dropped": sim.sim_events_dropped},
                   "stub": {"requests": sum(statuses.values()), "requests_per_s": stub_rps,
                            "statuses": dict(statuses)}}
    res.notes = [
        f"`bench/sim_capacity.py` as a library: {requests:,} HMAC-signed ACS requests (sendDtmfTones, get call, "
        f"stopContinuousDtmfRecognition in turn) over {concurrency} keep-alive connections to {calls} connected "
        "calls, callbacks counted by a minimal sink; then the same mix to a stub ACS endpoint (uvicorn + Starlette "
        f"answering at once, no callbacks). {sim.events} of {sim.expected_events} expected events arrived in "
        f"{sim.posts} POSTs.",
    ]
    return res
