"""rate: how exactly 4 worker processes keep one shared ACS limit of 50 requests/s.

callq: ``CALLQ_ACS_RATE_PER_SECOND=50``, 4 worker processes, a backlog of connect commands; the achieved
rate is read from the simulator's arrival times. Baseline: a Celery task with ``rate_limit="50/s"`` on 4
worker processes recording its start times (Celery's limit is a token bucket per worker process). Both
report achieved rate / limit over the steady middle of the run. Target: callq within ±2 %.
"""

from __future__ import annotations

import asyncio
import time

import redis

from bench import naive, stack
from bench.procs import BenchError, Children, wait_for
from bench.results import Row, ScenarioResult
from bench.scenarios import Context
from bench.stats import steady_rate

LIMIT = 50.0
WORKERS = 4
STAMPS = "bench:rate:stamps"


def _callq_times(ch: Children, n: int) -> list[float]:
    """Arrival times at the simulator of ``n`` connects sent by 4 rate-limited callq workers."""
    st = stack.start(ch, workers=WORKERS, concurrency=8, extra_env={"CALLQ_ACS_RATE_PER_SECOND": f"{LIMIT:g}"})
    rooms = stack.create_rooms(st.sim_url, 10)
    ids = asyncio.run(stack.connect_many(st.api_url, rooms, n))
    r = st.redis()
    ch.on_close(r.close)
    wait_for(lambda: all(s in ("waiting", "succeeded", "failed") for s in stack.statuses(r, ids)),
             timeout_s=n / LIMIT + 60, what=f"{n} rate-limited commands to be sent", interval_s=0.2)
    arrivals = stack.sim_admin(st.sim_url, "GET", "/_sim/arrivals")
    times = [a["t"] for a in arrivals if a["method"] == "POST" and a["path"].split("?")[0].endswith(":connect")]
    if len(times) < n:
        raise BenchError(f"the simulator saw {len(times)} of {n} connects")
    return times


def _celery_times(ch: Children, redis_url: str, n: int, max_s: float) -> list[float]:
    """Start times of up to ``n`` tasks with ``rate_limit="50/s"`` run by 4 plain Celery workers within ``max_s``.

    Bounded by time as well as count: Celery's limiter can run far below its limit (see the notes), and the
    suite has a time budget.
    """
    r = redis.Redis.from_url(redis_url)
    ch.on_close(r.close)
    r.delete(STAMPS)
    ch.celery_workers("naive-w", "bench.naive", {"BENCH_REDIS_URL": redis_url, "BENCH_RATE_LIMIT": f"{LIMIT:g}/s"},
                      count=WORKERS, concurrency=8, queue=naive.QUEUE, live=lambda: int(r.scard(naive.LIVE_SET)))
    client = naive.create_app(redis_url)
    ch.on_close(client.close)
    task = client.signature("bench.stamp_limited")
    for _ in range(n):
        task.apply_async(args=[STAMPS])
    deadline = time.monotonic() + max_s
    wait_for(lambda: r.llen(STAMPS) >= n or time.monotonic() > deadline, timeout_s=max_s + 5,
             what="rate-limited Celery tasks", interval_s=0.2)
    return [float(t) for t in r.lrange(STAMPS, 0, -1)]


def _overall(times: list[float]) -> float:
    ts = sorted(times)
    return (len(ts) - 1) / (ts[-1] - ts[0])


def run(ctx: Context) -> ScenarioResult:
    n = int(ctx.pick(600, 40))
    with ctx.children("rate") as ch:
        started = time.monotonic()
        callq = _callq_times(ch, n)
        callq_s = time.monotonic() - started
        redis_url = ch.redis("redis-naive")
        celery = _celery_times(ch, redis_url, n, max_s=ctx.pick(15, 2))
    callq_rate, celery_rate = steady_rate(callq), steady_rate(celery)
    accuracy = callq_rate / LIMIT
    res = ScenarioResult("rate")
    res.rows = [Row("achieved / limit, 4 workers", f"limit {LIMIT:g}/s", accuracy, celery_rate / LIMIT,
                    "Celery rate_limit", ratio=accuracy, target="0.98–1.02", passed=0.98 <= accuracy <= 1.02)]
    res.details = {"limit_per_s": LIMIT, "commands": n, "callq_steady_per_s": callq_rate,
                   "callq_overall_per_s": _overall(callq), "celery_steady_per_s": celery_rate,
                   "celery_overall_per_s": _overall(celery), "callq_phase_s": callq_s}
    res.notes = [
        f"{n} connect commands accepted through the API as fast as it takes them, run by {WORKERS} callq worker "
        f"processes (8 threads each) with `CALLQ_ACS_RATE_PER_SECOND={LIMIT:g}` (burst 5); the rate is taken from "
        "the simulator's `/_sim/arrivals` times. Baseline: the same number of tasks with "
        f"`rate_limit=\"{LIMIT:g}/s\"` on {WORKERS} plain Celery worker processes, each recording `time.time()` as "
        f"it starts, stopped after {ctx.pick(15, 2):g} s ({len(celery)} ran). Both rates are over the middle 80 % of "
        "the arrivals (leaving out the start-up burst and the tail); overall rates: callq "
        f"{_overall(callq):.1f}/s, Celery {_overall(celery):.1f}/s. Celery's limit is a token bucket per worker "
        "process, so 4 workers may run up to 4× the limit; here, with the Redis broker and Celery's defaults, "
        f"each worker ran about {celery_rate / WORKERS:.1f} per second instead (after the prefetched burst, a "
        "rate-limited task waited about a second per worker on this box; the suite did not tune Celery).",
    ]
    return res
