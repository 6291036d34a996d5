"""replicated: what ``CALLQ_REDIS_MIN_REPLICAS=1`` costs the front door, against the same API with 0, same run.

One private primary with one replica in sync (two redis-servers on this machine, so a replica's round trip is
a loopback one: a replica in another zone adds its network round trip to every batch). Two callq APIs (uvicorn,
one process each) on that primary: one with ``CALLQ_REDIS_MIN_REPLICAS=0`` (the baseline), one with ``=1``,
loaded in turns like ``accept``. No worker consumes. With 1, each batch of script calls (the accept of every
request that reached the script in that event-loop turn) ends with a barrier write and ``WAIT 1``: the replicas
must confirm it before any request in the batch gets its 202.
"""

from __future__ import annotations

import redis

from bench.load import Contender, LoadResult, LoadSpec, interleave
from bench.procs import BenchError, free_port
from bench.results import ScenarioResult, compare
from bench.scenarios import Context
from bench.stack import AUTH, callq_env
from workers import keys

JSON = {"Content-Type": "application/json"}
PATH = "/v1/rooms/bench-room/connect"
LABELS = {"min replicas 0": "0", "min replicas 1": "1"}


def _contender(r: redis.Redis, label: str, url: str, ctx: Context, rounds: int) -> Contender:
    fair = [keys.FAIR_RING, keys.FAIR_BACKLOG]

    def queued() -> int:
        return int(r.llen("callq")) + int(r.llen(keys.FAIR_BACKLOG))

    def empty_queue() -> None:
        r.unlink("callq", *fair, *r.scan_iter(f"{keys.CLIENT_PREFIX}*{keys.READY_SUFFIX}"))

    def all_queued(load: LoadResult) -> None:
        if queued() < load.requests:
            raise BenchError(f"{label}: {load.requests} requests answered but {queued()} queued")

    spec = LoadSpec(url, {**AUTH, **JSON}, "{}", connections=50, duration_s=ctx.pick(12, 1) / rounds,
                    warmup_s=ctx.pick(2, 0.25))
    return Contender(label, spec, empty_queue, all_queued)


def run(ctx: Context) -> ScenarioResult:
    rounds = int(ctx.pick(3, 1))
    with ctx.children("replicated") as ch:
        redis_url = ch.redis("primary")
        ch.redis("replica", replica_of=redis_url)
        r = redis.Redis.from_url(redis_url)
        ch.on_close(r.close)
        servers = {label: ch.uvicorn(label.replace(" ", "-"), "api.app:create_app",
                                     {**callq_env(redis_url, api_port=free_port(), sim_port=free_port()),
                                      "CALLQ_REDIS_MIN_REPLICAS": n}, wait=False)
                   for label, n in LABELS.items()}
        contenders = []
        for label, server in servers.items():
            server.ready()
            contenders.append(_contender(r, label, server.url + PATH, ctx, rounds))
        loads = interleave(contenders, rounds=rounds, prefer_wrk=ctx.prefer_wrk)
        waits = int(r.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
        if not waits:  # then the 1-replica API waited for nothing and the comparison says nothing
            raise BenchError("the primary ran no WAIT: CALLQ_REDIS_MIN_REPLICAS=1 had no effect")
    one, zero = loads["min replicas 1"], loads["min replicas 0"]
    res = ScenarioResult("replicated")
    res.rows = [
        compare("throughput, 50 connections", "req/s", one.rps, zero.rps, "min replicas 0"),
        compare("p99 latency, 50 connections", "ms", one.p99_ms, zero.p99_ms, "min replicas 0"),
        compare("p50 latency, 50 connections", "ms", one.p50_ms, zero.p50_ms, "min replicas 0"),
    ]
    res.latency = {label: load.percentiles_ms for label, load in loads.items()}
    res.details = {**{label: load.to_json() for label, load in loads.items()}, "waits": waits}
    res.notes = [
        f"`POST {PATH}` as in `accept` (50 keep-alive connections, {one.tool}, {rounds} interleaved round(s) of "
        f"{ctx.pick(12, 1) / rounds:g} s after a {ctx.pick(2, 0.25):g} s warm-up each), against two callq APIs "
        "on one primary that has one replica on this machine: `CALLQ_REDIS_MIN_REPLICAS=1` (callq) and `=0` "
        "(baseline). The ratio is the price of 'acknowledged means replicated' on a loopback replica; a replica "
        "across a network adds its round trip to each batch's wait.",
    ]
    return res
