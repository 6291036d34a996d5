"""pending: thousands of commands waiting for slow callbacks at once, against holding a slot per command.

The simulator delays every callback (``PUT /_sim/faults {"delay_ms": ...}``). callq: N connect commands
through the API, run by 2 worker processes (8 threads each) that send and move on; measured: completion
time (first POST → every command terminal), the most commands waiting at once, and the workers' peak RSS.
Baseline: the same 2 × 8 Celery slots running a task that connects with the SDK and blocks until its
CallConnected arrives (one slot per pending command). It runs for a bounded window and its completion
time for N is projected from the throughput it reached.
"""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from collections.abc import Callable

import httpx
import redis

from bench import naive, stack
from bench.procs import BenchError, Children, tree_rss_mb, wait_for
from bench.results import Row, ScenarioResult, compare
from bench.scenarios import Context

WORKERS, THREADS = 2, 8


class Sampler:
    """Samples the workers' total RSS (and optionally a pending count) on a thread; keeps the peaks."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], pending: Callable[[], int] | None = None) -> None:
        self._pids = [p.pid for p in procs]
        self._pending = pending
        self.peak_rss_mb = 0.0
        self.peak_pending = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, tree_rss_mb(self._pids))
            if self._pending is not None:
                self.peak_pending = max(self.peak_pending, self._pending())
            self._stop.wait(0.25)


def _sim_stats(sim: httpx.Client) -> dict[str, int]:
    stats: dict[str, int] = sim.get("/_sim/stats").json()
    return stats


def _callq(ch: Children, n: int, delay_ms: int) -> dict[str, float]:
    st = stack.start(ch, workers=WORKERS, concurrency=THREADS)
    stack.sim_admin(st.sim_url, "PUT", "/_sim/faults", {"delay_ms": delay_ms})
    rooms = stack.create_rooms(st.sim_url, 50)
    r = st.redis()
    ch.on_close(r.close)
    sim = httpx.Client(base_url=st.sim_url, trust_env=False, timeout=10)
    ch.on_close(sim.close)

    def waiting() -> int:
        # Sent to ACS and not yet answered: each connect gets exactly one (delayed) CallConnected. Asking the
        # simulator costs one small request, where reading every command's record would load the bench process.
        stats = _sim_stats(sim)
        return stats["requests"] - stats["events_delivered"]

    with Sampler(st.workers, waiting) as sampler:
        started = time.monotonic()
        ids = asyncio.run(stack.connect_many(st.api_url, rooms, n))
        accepted_s = time.monotonic() - started
        wait_for(lambda: _sim_stats(sim)["events_delivered"] >= n, timeout_s=n / 50 + delay_ms / 1000 + 60,
                 what=f"{n} delayed callbacks", interval_s=0.1)
        wait_for(lambda: all(s in ("succeeded", "failed") for s in stack.statuses(r, ids)), timeout_s=30,
                 what=f"{n} commands to be resolved", interval_s=0.1)
        completed_s = time.monotonic() - started
    failed = sum(s == "failed" for s in stack.statuses(r, ids))
    if failed:
        raise BenchError(f"{failed} of {n} commands failed")
    return {"completion_s": completed_s, "accepted_s": accepted_s, "peak_pending": sampler.peak_pending,
            "peak_rss_mb": sampler.peak_rss_mb}


def _naive(ch: Children, n: int, delay_ms: int, window_s: float) -> dict[str, float]:
    st = stack.start(ch, api=False)  # the simulator, and a Redis for the naive app's broker
    sim, redis_url = st.sim, st.redis_url
    assert sim is not None
    stack.sim_admin(sim.url, "PUT", "/_sim/faults", {"delay_ms": delay_ms})
    rooms = stack.create_rooms(sim.url, 50)
    env = {"BENCH_REDIS_URL": redis_url, "BENCH_ACS_ENDPOINT": sim.url, "BENCH_ACS_KEY": stack.ACS_KEY}
    sink = ch.uvicorn("callback-sink", "bench.baselines:callback_sink", env)
    r = redis.Redis.from_url(redis_url)
    ch.on_close(r.close)
    procs = ch.celery_workers("naive-w", "bench.naive", env, count=WORKERS, concurrency=THREADS, queue=naive.QUEUE,
                              live=lambda: int(r.scard(naive.LIVE_SET)))
    client = naive.create_app(redis_url)
    ch.on_close(client.close)
    task = client.signature("bench.connect_and_wait")
    with Sampler(procs) as sampler:
        started = time.monotonic()
        for i in range(n):
            task.apply_async(args=[rooms[i % len(rooms)], f"{sink.url}/callbacks", delay_ms / 1000 + 10])
        deadline = started + window_s
        wait_for(lambda: r.llen(naive.DONE_LIST) >= n or time.monotonic() > deadline, timeout_s=window_s + 5,
                 what="the blocking baseline", interval_s=0.25)
        elapsed = time.monotonic() - started
    done = int(r.llen(naive.DONE_LIST))
    for proc in procs:  # its slots are still blocked; no need to wait for them
        ch.stop(proc, timeout_s=2)
    if done == 0:
        raise BenchError(f"the blocking baseline completed nothing in {window_s:g} s")
    projected = elapsed if done >= n else n / (done / elapsed)
    return {"completion_s": projected, "measured_s": elapsed, "completed": done, "peak_rss_mb": sampler.peak_rss_mb,
            "projected": float(done < n)}


def _note(n: int, delay_ms: int, callq: dict[str, float], base: dict[str, float]) -> str:
    delay_s = delay_ms / 1000
    projected = (f", so its time for {n:,} is projected from that throughput (its {WORKERS * THREADS} slots allow at "
                 f"most {WORKERS * THREADS} per {delay_s:g} s)") if base["projected"] else ""
    return (
        f"{n:,} connects with every callback delayed {delay_s:g} s by the simulator, {WORKERS} worker processes × "
        f"{THREADS} threads on each side. callq: accepted through the API in {callq['accepted_s']:.1f} s (while the "
        "workers were already sending); completion = first POST → every command `succeeded`; commands waiting for "
        "their callback = connects the simulator executed minus CallConnected events it delivered, sampled every "
        "0.25 s. Baseline: a Celery task that connects with the SDK and blocks (BLPOP) until a callback sink "
        f"(uvicorn, own process) sees its CallConnected; it ran for {base['measured_s']:.1f} s and completed "
        f"{base['completed']:.0f}{projected}. RSS is the peak sum over the worker processes, sampled every 0.25 s."
    )


def run(ctx: Context) -> ScenarioResult:
    n, delay_ms, window_s = int(ctx.pick(5000, 100)), int(ctx.pick(5000, 500)), ctx.pick(20, 2)
    with ctx.children("pending") as ch:
        callq = _callq(ch, n, delay_ms)
    with ctx.children("pending-naive") as ch:
        base = _naive(ch, n, delay_ms, window_s)
    res = ScenarioResult("pending")
    res.rows = [
        compare(f"{n:,} commands, callbacks delayed {delay_ms / 1000:g} s: completion", "s", callq["completion_s"],
                base["completion_s"], "blocking" + (" (projected)" if base["projected"] else "")),
        compare("peak RSS of the worker processes", "MiB", callq["peak_rss_mb"], base["peak_rss_mb"], "blocking"),
        Row("most commands waiting at once", "commands", callq["peak_pending"], WORKERS * THREADS,
            "blocking (slots)"),
        Row(f"worker slots ({WORKERS} processes × {THREADS} threads)", "slots", WORKERS * THREADS, WORKERS * THREADS,
            "blocking"),
    ]
    res.details = {"commands": n, "delay_ms": delay_ms, "callq": callq, "blocking": base}
    res.notes = [_note(n, delay_ms, callq, base)]
    return res
