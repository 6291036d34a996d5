"""accept: how fast callq's front door takes commands, against the naive Celery endpoint and a raw LPUSH.

Each server runs under uvicorn in its own process (one worker) on the same private Redis; they take the
load in turns, one at a time. No worker consumes, so messages pile up (each queue is emptied before a
round and checked after it). Target: callq ≥ 2× naive throughput with a p99 no worse.
"""

from __future__ import annotations

import redis

from bench.baselines import RAW_QUEUE
from bench.load import Contender, LoadResult, LoadSpec, interleave
from bench.naive import QUEUE
from bench.procs import BenchError, free_port
from bench.results import Row, ScenarioResult, compare
from bench.scenarios import Context
from bench.stack import AUTH, callq_env
from workers import keys

JSON = {"Content-Type": "application/json"}
# label: (uvicorn app, path, extra headers, queue the request lands in)
SERVERS = {
    "callq": ("api.app:create_app", "/v1/rooms/bench-room/connect", AUTH, "callq"),
    "naive": ("bench.baselines:naive_accept", "/accept", {}, QUEUE),
    "raw LPUSH": ("bench.baselines:raw_lpush", "/accept", {}, RAW_QUEUE),
}


def _contender(r: redis.Redis, label: str, url: str, headers: dict[str, str], queue: str, ctx: Context,
               rounds: int) -> Contender:
    # callq's fair dispatch keeps all but its window of messages in the clients' ready lists: they count as queued
    # (callq:fair:backlog is as long as those lists together).
    fair = [keys.FAIR_RING, keys.FAIR_BACKLOG] if label == "callq" else []

    def queued() -> int:
        return int(r.llen(queue)) + (int(r.llen(keys.FAIR_BACKLOG)) if fair else 0)

    def empty_queue() -> None:
        r.unlink(queue, *fair, *(r.scan_iter(f"{keys.CLIENT_PREFIX}*{keys.READY_SUFFIX}") if fair else []))

    def all_queued(load: LoadResult) -> None:
        # 2xx answers are not enough: the messages must really be in the queue.
        if queued() < load.requests:
            raise BenchError(f"{label}: {load.requests} requests answered but {queued()} queued in {queue}")

    spec = LoadSpec(url, {**headers, **JSON}, "{}", connections=50, duration_s=ctx.pick(12, 1) / rounds,
                    warmup_s=ctx.pick(2, 0.25))
    return Contender(label, spec, empty_queue, all_queued)


def _rows(callq: LoadResult, naive: LoadResult, raw: LoadResult) -> list[Row]:
    return [
        compare("throughput, 50 connections", "req/s", callq.rps, naive.rps, "naive", at_least=2),
        compare("p99 latency, 50 connections", "ms", callq.p99_ms, naive.p99_ms, "naive", at_most=1),
        compare("p50 latency, 50 connections", "ms", callq.p50_ms, naive.p50_ms, "naive"),
        compare("throughput vs the ceiling", "req/s", callq.rps, raw.rps, "raw LPUSH"),
    ]


def run(ctx: Context) -> ScenarioResult:
    rounds = int(ctx.pick(3, 1))
    with ctx.children("accept") as ch:
        redis_url = ch.redis()
        r = redis.Redis.from_url(redis_url)
        ch.on_close(r.close)
        env = {**callq_env(redis_url, api_port=free_port(), sim_port=free_port()), "BENCH_REDIS_URL": redis_url}
        servers = {label: ch.uvicorn(label.replace(" ", "-"), app, env, wait=False)
                   for label, (app, *_) in SERVERS.items()}
        contenders = []
        for label, (_, path, headers, queue) in SERVERS.items():
            servers[label].ready()
            contenders.append(_contender(r, label, servers[label].url + path, headers, queue, ctx, rounds))
        loads = interleave(contenders, rounds=rounds, prefer_wrk=ctx.prefer_wrk)
    res = ScenarioResult("accept")
    res.rows = _rows(loads["callq"], loads["naive"], loads["raw LPUSH"])
    res.latency = {label: load.percentiles_ms for label, load in loads.items()}
    res.details = {label: load.to_json() for label, load in loads.items()}
    res.notes = [
        f"`POST /v1/rooms/{{room}}/connect` (API key, Idempotency-Key unique per request, empty JSON body) at 50 "
        f"keep-alive connections, {loads['callq'].tool}; each server is uvicorn in its own process with one worker, "
        f"all on one private Redis, loaded one at a time in {rounds} interleaved round(s) of "
        f"{ctx.pick(12, 1) / rounds:g} s after a {ctx.pick(2, 0.25):g} s warm-up each (throughput over all rounds, "
        "latency percentiles the median over rounds). naive = a Starlette endpoint doing "
        "`await run_in_threadpool(task.apply_async, ...)` on a plain Celery app; raw LPUSH = one `redis.asyncio` "
        "LPUSH per request (the ceiling). callq does more per request: API key, body and Idempotency-Key checks, "
        "then the idempotency record, command record and Celery message in one Lua script.",
    ]
    return res
