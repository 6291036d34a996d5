"""webhook_throughput: webhooks delivered per second to 100 endpoints × many calls, against a task per delivery.

callq: 100 endpoints of one API client, created through ``POST /v1/webhooks`` and subscribed to
``command.succeeded``, all at the suite's receiver (one process, an endpoint per path: ``bench.webhook_receiver``).
The messages are made the way the product makes them, without ACS traffic: the suite writes waiting commands
spread over a few calls and moves each to ``succeeded`` with ``ledger.transition`` (the script a CallConnected
runs), whose fan-out makes one message per endpoint. Timed from the first transition to the receiver reading the
last delivery; the workers' deliverers send them (``CALLQ_WEBHOOK_CONCURRENCY`` at its default, 64 per process).

Baseline: a plain Celery task per delivery (``bench.naive.webhook``: sign with ``standardwebhooks``, POST with
``requests``) on the same number of worker processes and threads, the same bodies to another 100 paths of the
same receiver. Its tasks are rendered and published first to a queue no worker consumes (``HOLD``), then handed
to the workers at once (one ``RENAME`` of that Redis list onto the consumed queue's): timed from the hand-over to the
receiver reading the last, so the baseline starts with its whole backlog, as callq's deliverers do (callq makes its
messages in about a second) and the suite's own publishing (~30 s for 5,000) never limits the baseline's rate.
The two take turns (``ROUNDS`` each), so both see the same background load. Target: ≥ 2× the baseline's rate.

Also checked at the receiver: every delivery arrived, none twice, and each (endpoint, call) lane's seqs came
1, 2, 3 … in order (callq promises it; the baseline's seqs are numbered in enqueue order, for comparison).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

import redis

from bench import naive, stack, webhook_receiver
from bench.procs import BenchError, Children, tree_cpu_s, wait_for
from bench.results import Row, ScenarioResult, compare
from bench.scenarios import Context
from bench.stats import steady_rate
from workers import command, keys, ledger, scripts, webhooks
from workers.command import Status

ENDPOINTS = 100
CALLS, QUICK_CALLS = 20, 5  # calls per round: 100 × 20 (endpoint, call) lanes, each with a few messages
WORKERS, THREADS = 2, 8
VERIFY_EVERY = 10  # the receiver checks this share of signatures (all of them would make it the bottleneck)
CLIENT = "bench"
ENV = {"CALLQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",  # the receiver is on loopback
       "CALLQ_WEBHOOK_MAX_ENDPOINTS": str(ENDPOINTS)}


@dataclass
class Round:
    """One turn of one side: what was expected, when making started and ended, what the receiver counted, and
    the CPU seconds each group of processes used meanwhile."""

    expected: int
    started: float
    made_s: float
    tally: dict[str, Any]
    cpu_s: dict[str, float]

    @property
    def seconds(self) -> float:
        return float(self.tally["last"]) - self.started

    @property
    def rate(self) -> float:
        return self.expected / self.seconds


@dataclass(frozen=True)
class Side:
    """The processes one side's work runs in (its CPU is read around each of its rounds)."""

    workers: list[int]
    redis: list[int]
    receiver: list[int]

    def cpu_s(self) -> dict[str, float]:
        return {"workers": tree_cpu_s(self.workers), "redis": tree_cpu_s(self.redis),
                "receiver": tree_cpu_s(self.receiver), "suite": time.process_time()}


def _spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in before}


def _waiting_commands(r: redis.Redis, tag: str, n: int, calls: int) -> list[str]:
    """``n`` connect commands, waiting for their CallConnected, spread over ``calls`` calls."""
    pipe = r.pipeline(transaction=False)
    ids = []
    for j in range(n):
        cid = f"cmd_{uuid.uuid4().hex}"
        cmd = command.new(command_id=cid, client=CLIENT, type_="connect", params={"room_id": "bench-room"},
                          idempotency_key=str(uuid.uuid4()), call_connection_id=f"call-{tag}-{j % calls}",
                          room_id="bench-room")
        pipe.hset(keys.command_key(cid), items=command.flatten(command.new_fields(replace(cmd, status=Status.WAITING))))
        ids.append(cid)
    pipe.execute()
    return ids


def _resolution(cid: str) -> dict[str, Any]:
    """The fields a CallConnected sets on the connect it resolves (as correlation._step makes them)."""
    return {"result": {"call_connection_id": cid, "server_call_id": "bench", "correlation_id": cid},
            "resolved_by": {"type": "CallConnected", "id": str(uuid.uuid4()), "time": command.now_iso()}}


def _callq_round(side: Side, r: redis.Redis, rx: webhook_receiver.Receiver, secrets: dict[str, str], n: int,
                 calls: int, tag: str) -> Round:
    ids = _waiting_commands(r, tag, n, calls)
    rx.reset(secrets=secrets, verify_every=VERIFY_EVERY)
    expected = n * ENDPOINTS
    cpu = side.cpu_s()
    started = time.time()
    for cid in ids:
        moved = scripts.run(r, ledger.transition(cid, Status.SUCCEEDED, _resolution(cid)))
        if moved.outcome != "applied":
            raise BenchError(f"command {cid} did not move to succeeded: {moved.outcome}")
    made_s = time.time() - started
    tally = rx.wait(expected, timeout_s=expected / 100 + 60)
    # The deliverers record the last results after the receiver answered: the next turn starts once they did.
    wait_for(lambda: r.zcard(keys.WEBHOOKS_DUE) == 0, timeout_s=30, what="every webhook lane to be idle")
    return Round(expected, started, made_s, tally, _spent(cpu, side.cpu_s()))


HOLD = "naive-hold"  # the baseline's tasks wait here, unconsumed, until the round hands them over


def _naive_round(side: Side, task: Any, broker: redis.Redis, rx: webhook_receiver.Receiver, urls: list[str],
                 secrets: dict[str, str], n: int, calls: int, tag: str) -> Round:
    rx.reset(secrets=secrets, verify_every=VERIFY_EVERY)
    paths = list(secrets)
    expected = n * ENDPOINTS
    seqs: dict[tuple[int, str], int] = {}
    for j in range(n):
        # What callq's message and command would hold once the connect succeeded; rendered as callq renders it.
        cid, cc = f"cmd_{uuid.uuid4().hex}", f"call-{tag}-{j % calls}"
        cmd = command.new(command_id=cid, client=CLIENT, type_="connect", params={"room_id": "bench-room"},
                          idempotency_key=str(uuid.uuid4()), call_connection_id=cc, room_id="bench-room")
        now = command.now_iso()
        record = command.as_hash({**command.new_fields(replace(cmd, status=Status.SUCCEEDED)), **_resolution(cid),
                                  "resolved_at": now, "updated_at": now})
        for i, (url, path) in enumerate(zip(urls, paths, strict=True)):
            seq = seqs[(i, cc)] = seqs.get((i, cc), 0) + 1
            message = {"type": "command.succeeded", "seq": str(seq), "call_connection_id": cc,
                       "room_id": "bench-room", "command": cid, "at": now}
            payload = webhooks.body(message, record).decode()
            task.apply_async(args=[url, secrets[path], f"msg_{uuid.uuid4().hex}", payload], queue=HOLD)
    if broker.llen(HOLD) != expected:
        raise BenchError(f"{broker.llen(HOLD)} baseline tasks held, {expected} published")
    cpu = side.cpu_s()
    started = time.time()
    broker.rename(HOLD, naive.QUEUE)  # kombu's Redis transport keeps a queue as a list of that name
    made_s = time.time() - started
    tally = rx.wait(expected, timeout_s=expected / 50 + 60)
    return Round(expected, started, made_s, tally, _spent(cpu, side.cpu_s()))


def _endpoints(api_url: str, rx: webhook_receiver.Receiver) -> dict[str, str]:
    """callq's 100 endpoints, through the API: receiver path → secret."""
    paths = [f"callq/{i}" for i in range(ENDPOINTS)]
    made = stack.create_webhooks(api_url, [rx.hook_url(p) for p in paths])
    return {p: hook["secret"] for p, hook in zip(paths, made, strict=True)}


def _start_naive(ch: Children) -> tuple[Any, redis.Redis, list[int]]:
    """The baseline's workers (same processes and threads as callq's) on a Redis of their own: its task, that Redis,
    and the workers' pids."""
    redis_url = ch.redis("redis-naive")
    r = redis.Redis.from_url(redis_url)
    ch.on_close(r.close)
    procs = ch.celery_workers("naive-w", "bench.naive", {"BENCH_REDIS_URL": redis_url}, count=WORKERS,
                              concurrency=THREADS, queue=naive.QUEUE, live=lambda: int(r.scard(naive.LIVE_SET)))
    client = naive.create_app(redis_url)
    ch.on_close(client.close)
    return client.signature("bench.webhook"), r, [p.pid for p in procs]


def _totals(rounds: list[Round]) -> dict[str, Any]:
    delivered = sum(r.expected for r in rounds)
    seconds = sum(r.seconds for r in rounds)
    return {
        "deliveries": delivered, "seconds": seconds, "per_s": delivered / seconds,
        "rounds_per_s": [r.rate for r in rounds],
        "steady_per_s": [steady_rate(r.tally["times"]) for r in rounds],
        "making_s": [r.made_s for r in rounds],
        "received": sum(r.tally["count"] - r.tally["duplicates"] for r in rounds),
        "cpu_ms_per_delivery": {name: 1000 * sum(r.cpu_s[name] for r in rounds) / delivered
                                for name in rounds[0].cpu_s},
        "duplicates": sum(r.tally["duplicates"] for r in rounds),
        "out_of_order": sum(r.tally["out_of_order"] for r in rounds),
        "lanes": sum(r.tally["lanes"] for r in rounds),
        "signatures_verified": sum(r.tally["verified"] for r in rounds),
        "signatures_invalid": sum(r.tally["invalid"] for r in rounds),
    }


def _cpu_text(side: dict[str, Any]) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in side["cpu_ms_per_delivery"].items())


def run(ctx: Context) -> ScenarioResult:
    commands_per_round, calls, rounds = int(ctx.pick(50, 10)), int(ctx.pick(CALLS, QUICK_CALLS)), int(ctx.pick(2, 1))
    callq: list[Round] = []
    base: list[Round] = []
    with ctx.children("webhook_throughput") as ch:
        rx = webhook_receiver.start(ch)
        st = stack.start(ch, sim=False, workers=WORKERS, concurrency=THREADS, extra_env=ENV)
        task, broker, naive_pids = _start_naive(ch)
        pid = {name: proc.pid for name, proc in ch.procs}
        sides = (Side([p.pid for p in st.workers], [pid["redis"]], [rx.server.proc.pid]),
                 Side(naive_pids, [pid["redis-naive"]], [rx.server.proc.pid]))
        secrets = _endpoints(st.api_url, rx)
        naive_secrets = {f"naive/{i}": webhooks.new_secret() for i in range(ENDPOINTS)}
        naive_urls = [rx.hook_url(p) for p in naive_secrets]
        r = redis.Redis.from_url(st.redis_url, decode_responses=True)
        ch.on_close(r.close)
        for k in range(rounds):
            callq.append(_callq_round(sides[0], r, rx, secrets, commands_per_round, calls, f"{k}"))
            base.append(_naive_round(sides[1], task, broker, rx, naive_urls, naive_secrets, commands_per_round, calls,
                                     f"{k}"))
    c, b = _totals(callq), _totals(base)
    if c["signatures_invalid"] or b["signatures_invalid"]:
        raise BenchError(f"signatures that did not verify: callq {c['signatures_invalid']}, "
                         f"baseline {b['signatures_invalid']}")
    expected = c["deliveries"]
    res = ScenarioResult("webhook_throughput")
    res.rows = [
        compare(f"deliveries/s, {ENDPOINTS} endpoints × {calls} calls", "deliveries/s", c["per_s"], b["per_s"],
                "Celery task per delivery (requests)", at_least=2),
        Row("deliveries received of those made", "deliveries", c["received"], b["received"], "Celery task per delivery",
            c["received"] / expected, f"all {expected:,}", c["received"] == expected),
        Row("deliveries out of lane order at the receiver", "deliveries", c["out_of_order"], b["out_of_order"],
            "Celery task per delivery", target="0", passed=c["out_of_order"] == 0),
        compare("worker processes' CPU per delivery", "ms", c["cpu_ms_per_delivery"]["workers"],
                b["cpu_ms_per_delivery"]["workers"], "Celery task per delivery"),
    ]
    res.details = {"endpoints": ENDPOINTS, "calls_per_round": calls, "commands_per_round": commands_per_round,
                   "rounds": rounds, "workers": WORKERS, "threads": THREADS, "callq": c, "baseline": b}
    res.notes = [
        f"{rounds} round(s) each, taking turns (callq, then the baseline); a round is {commands_per_round} "
        f"commands × {ENDPOINTS} endpoints = {commands_per_round * ENDPOINTS:,} deliveries over {calls} calls "
        f"({ENDPOINTS * calls:,} (endpoint, call) lanes of {commands_per_round / calls:g} messages on average). "
        f"{WORKERS} worker processes × {THREADS} threads "
        "(`-P threads`) on each side; the receiver (its own process: httptools on uvloop) answers 200 at once and "
        f"checks one signature in {VERIFY_EVERY}. callq: {ENDPOINTS} endpoints of one API client created through "
        "`POST /v1/webhooks`, subscribed to `command.succeeded`; the suite writes waiting connect commands and "
        "moves each to `succeeded` with `ledger.transition` (the script a CallConnected runs; its fan-out makes "
        "the messages), so no ACS traffic is measured; timed from the first transition to the receiver reading "
        f"the last delivery (making took {json.dumps([round(s, 2) for s in c['making_s']])} s). The deliverers run "
        "with `CALLQ_WEBHOOK_CONCURRENCY` at its default (64 in flight per process). Baseline: `bench.naive."
        "webhook`, a Celery task per delivery that signs with `standardwebhooks` and POSTs with `requests` (a "
        "session per worker thread, so connections are kept alive: a stronger baseline than a bare "
        "`requests.post`), given the URL, the secret, a message id and the body callq would send; all published "
        f"first to a queue no worker consumes, then handed to the workers at once (a RENAME onto their queue, "
        f"{json.dumps([round(s * 1000, 1) for s in b['making_s']])} ms): timed from the hand-over to the receiver "
        "reading the last, so the suite's own publishing never limits the baseline. "
        f"Rates per round: callq {', '.join(f'{x:,.0f}' for x in c['rounds_per_s'])}/s, baseline "
        f"{', '.join(f'{x:,.0f}' for x in b['rounds_per_s'])}/s; over the middle 80 % of arrivals: callq "
        f"{', '.join(f'{x:,.0f}' for x in c['steady_per_s'])}/s, baseline "
        f"{', '.join(f'{x:,.0f}' for x in b['steady_per_s'])}/s. At the receiver: callq {c['received']:,} of "
        f"{expected:,} arrived, {c['duplicates']} twice, {c['lanes']:,} lanes, {c['out_of_order']} deliveries "
        f"out of lane order; baseline {b['received']:,}, {b['duplicates']} twice, {b['out_of_order']} out of its "
        f"enqueue order; signatures checked: callq {c['signatures_verified']}, baseline "
        f"{b['signatures_verified']}, all valid. CPU per delivery (ms, from /proc, over the rounds): "
        f"{_cpu_text(c)} for callq; {_cpu_text(b)} for the baseline (the suite's own CPU in the timed window: "
        "its transitions for callq; for the baseline only the hand-over, its publishing comes before).",
    ]
    return res
