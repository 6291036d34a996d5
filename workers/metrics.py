"""callq's metrics: recorded by every process into Redis hashes, rendered by any API process at ``/metrics``.

Why Redis and not each process's own prometheus-client registry: a command is accepted by one API process,
sent by one of many workers and resolved by whichever API process receives its event. Prometheus scrapes one
API replica (which may run several uvicorn workers), and that one answer must hold everybody's figures. So each
process adds to an in-memory :class:`Recorder` (no I/O on the hot path), a flusher writes the buffer to Redis
about once a second (``HINCRBYFLOAT`` in one pipeline), and ``/metrics`` reads the hashes and adds gauges read at
scrape time (queue depth, pending waits, live workers). Figures survive restarts of any process; a crash loses
at most its last second of increments. No exporter process to run, nothing per-host to discover.

Storage: ``callq:metrics:{name}`` is a hash per metric. A counter's fields are its label values as a JSON list;
a histogram's are ``{labels}#{bucket index}`` (not cumulative; rendering adds them up) and ``{labels}#sum``.
Three sorted sets serve the operator page and the gauges: commands waiting for their event (score: outcome
deadline), commands that needed attention (retrying, throttled, failed) and calls with recent activity.
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import redis

from workers import keys

log = logging.getLogger("callq.metrics")

PREFIX = keys.METRICS_PREFIX
ATTENTION_KEY = keys.OPS_ATTENTION
CALLS_KEY = keys.OPS_CALLS
KOMBU_UNACKED = "unacked"  # kombu's Redis transport: delivered, not yet acknowledged (running or counting down)
OPS_KEEP_MS = 86_400_000  # the attention and call indexes forget what is older than a day
OPS_KEEP_MAX = 2000  # ... and keep at most this many entries

BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class Spec:
    """One metric: its family name (counters are exposed with ``_total``), kind, help and label names."""

    name: str
    kind: Literal["counter", "histogram"]
    help: str
    labels: tuple[str, ...] = ()


SPECS = {s.name: s for s in (
    Spec("callq_commands_accepted", "counter", "Commands accepted by the API (idempotent replays excluded).",
         ("type",)),
    Spec("callq_commands_rejected", "counter", "Command requests the API refused, by error code.", ("type", "code")),
    Spec("callq_client_refused", "counter", "New commands turned away at the door (too_many_pending, "
         "client_rate_limited), by client.", ("client", "code")),
    Spec("callq_commands_succeeded", "counter", "Commands that ended succeeded.", ("type",)),
    Spec("callq_commands_failed", "counter", "Commands that ended failed, by error code.", ("type", "code")),
    Spec("callq_command_retries", "counter", "Transient ACS failures that will be retried, by error code.",
         ("type", "code")),
    Spec("callq_commands_throttled", "counter", "Sends put back in the queue because the shared ACS budget was spent.",
         ("type",)),
    Spec("callq_rate_limit_waits", "counter", "ACS requests that waited in place for the shared budget."),
    Spec("callq_rate_limit_wait_seconds", "counter", "Seconds ACS requests spent waiting in place for the budget."),
    Spec("callq_rate_limit_deferrals", "counter", "ACS requests refused by the shared budget (re-queued, or 429 to "
         "an API reader)."),
    Spec("callq_quiet_yields", "counter", "Sends that waited in place for a quiet window: a few ms while a sparse "
         "client's command went first."),
    Spec("callq_acs_responses", "counter", "ACS HTTP responses by status code (429: ACS is throttling callq).",
         ("status",)),
    Spec("callq_callback_events", "counter", "ACS callback events stored, by event type.", ("type",)),
    Spec("callq_callback_duplicates", "counter", "ACS callback events dropped as duplicates (CloudEvent id seen)."),
    Spec("callq_callback_orphans", "counter", "ACS callback events naming no known call or command.", ("type",)),
    Spec("callq_callback_auth_failures", "counter", "Callback requests refused (missing or invalid token)."),
    Spec("callq_eventgrid_events", "counter", "Event Grid events by type and outcome (stored, duplicate, ignored: not "
         "a room call's).", ("type", "outcome")),
    Spec("callq_eventgrid_auth_failures", "counter", "Event Grid deliveries refused, by code (missing_token, "
         "wrong_audience, bad_query_token …).", ("code",)),
    Spec("callq_automation_runs", "counter", "Room calls' automation runs, by how they ended (or 'started').",
         ("state",)),
    Spec("callq_webhook_deliveries", "counter", "Webhook delivery attempts by outcome: succeeded, retry (failed, "
         "tried again later), failed (retry schedule spent; kept for replay), gone (410: endpoint disabled), stale "
         "(the claim had lapsed: another deliverer has the message, nothing recorded).", ("outcome",)),
    Spec("callq_api_auth_failures", "counter", "API requests refused for a missing or wrong API key or session."),
    Spec("callq_http_requests", "counter", "API requests by method, route template and status.",
         ("method", "route", "status")),
    Spec("callq_command_accept_to_sent_seconds", "histogram", "From acceptance to ACS's answer to the send.",
         ("type",)),
    Spec("callq_command_sent_to_resolved_seconds", "histogram", "From ACS's answer to the command's terminal state.",
         ("type", "status")),
)}

@functools.lru_cache(maxsize=4096)  # label sets are few and repeat on every request
def _labels_field(labels: tuple[str, ...]) -> str:
    return json.dumps(list(labels), separators=(",", ":"))


@dataclass
class Batch:
    """Changes drained from a Recorder: hash increments and sorted-set marks."""

    incr: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    marks: dict[tuple[str, str], int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.incr or self.marks)


class Recorder:
    """A process's buffer of metric changes (thread-safe); :func:`flush` writes it to Redis."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch = Batch()

    def inc(self, name: str, *labels: str, by: float = 1.0) -> None:
        spec = SPECS[name]
        assert spec.kind == "counter" and len(labels) == len(spec.labels), name
        with self._lock:
            self._batch.incr[(PREFIX + name, _labels_field(labels))] += by

    def observe(self, name: str, value_s: float, *labels: str) -> None:
        spec = SPECS[name]
        assert spec.kind == "histogram" and len(labels) == len(spec.labels), name
        where = _labels_field(labels)
        bucket = bisect.bisect_left(BUCKETS_S, value_s)  # first bucket whose upper bound is >= value (le)
        with self._lock:
            self._batch.incr[(PREFIX + name, f"{where}#{bucket}")] += 1
            self._batch.incr[(PREFIX + name, f"{where}#sum")] += value_s

    def mark(self, zset: str, member: str, score_ms: int | None = None) -> None:
        with self._lock:
            self._batch.marks[(zset, member)] = score_ms if score_ms is not None else int(time.time() * 1000)

    def drain(self) -> Batch:
        with self._lock:
            batch, self._batch = self._batch, Batch()
        return batch

    def restore(self, batch: Batch) -> None:
        """Put back a batch that could not be written (Redis down), so no increment is lost."""
        with self._lock:
            for k, v in batch.incr.items():
                self._batch.incr[k] += v
            for k, score in batch.marks.items():
                self._batch.marks.setdefault(k, score)


# One per process, like logging's root logger: increments come from deep inside SDK policies and Lua callers that
# should not have to carry a metrics object; what varies per process (where to flush) is passed to the flusher.
RECORDER = Recorder()


def _queue(pipe: Any, batch: Batch) -> None:
    for (key, name), value in batch.incr.items():
        pipe.hincrbyfloat(key, name, value)
    now = int(time.time() * 1000)
    for zset in {z for z, _ in batch.marks}:
        pipe.zadd(zset, {m: s for (z, m), s in batch.marks.items() if z == zset})
        pipe.zremrangebyscore(zset, "-inf", now - OPS_KEEP_MS)
        pipe.zremrangebyrank(zset, 0, -OPS_KEEP_MAX - 1)


def flush(client: redis.Redis, recorder: Recorder = RECORDER) -> None:
    """Write the buffer to Redis in one pipeline; on error it stays buffered (and the error propagates)."""
    batch = recorder.drain()
    if not batch:
        return
    pipe = client.pipeline(transaction=False)
    _queue(pipe, batch)
    try:
        pipe.execute()
    except redis.RedisError:
        recorder.restore(batch)  # a partly applied pipeline may count some twice: rare, and better than losing all
        raise


async def flush_async(client: Any, recorder: Recorder = RECORDER) -> None:
    """:func:`flush` for a ``redis.asyncio`` client."""
    batch = recorder.drain()
    if not batch:
        return
    pipe = client.pipeline(transaction=False)
    _queue(pipe, batch)
    try:
        await pipe.execute()
    except redis.RedisError:
        recorder.restore(batch)
        raise


class Flusher:
    """A daemon thread that flushes the process's recorder every ``interval_s`` (workers; the API uses a task)."""

    def __init__(self, client: redis.Redis, interval_s: float = 1.0) -> None:
        self._client = client
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="callq-metrics", daemon=True)

    def start(self) -> Flusher:
        self._thread.start()
        return self

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval_s):
            try:
                flush(self._client)
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("could not write metrics to Redis (%s); keeping them buffered", type(exc).__name__)
                failing = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            flush(self._client)  # the last second's figures
        except redis.RedisError:
            pass
        self._client.close()


# --- what the runtime, the correlator and the API count (their log lines are theirs) ----------------------------

def seconds_between(start_iso: str | None, end_iso: str | None) -> float | None:
    """Seconds from one stored ISO time to another; None when either is missing or unreadable."""
    if not start_iso or not end_iso:
        return None
    try:
        start = datetime.fromisoformat(start_iso.replace("Z", "+00:00"))
        end = datetime.fromisoformat(end_iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (end - start).total_seconds())


def sent(type_: str, created_at: str, sent_at: str) -> None:
    """ACS answered the command's request (the outcome may still be an event away)."""
    latency = seconds_between(created_at, sent_at)
    if latency is not None:
        RECORDER.observe("callq_command_accept_to_sent_seconds", latency, type_)


def retrying(command_id: str, type_: str, code: str) -> None:
    RECORDER.inc("callq_command_retries", type_, code)
    RECORDER.mark(ATTENTION_KEY, command_id)


def throttled(command_id: str, type_: str) -> None:
    RECORDER.inc("callq_commands_throttled", type_)
    RECORDER.mark(ATTENTION_KEY, command_id)


def error_code(raw_error: str | None) -> str:
    """The ``code`` of a stored error (JSON), ``unknown`` when there is none."""
    try:
        return str((json.loads(raw_error or "{}") or {}).get("code") or "unknown")
    except ValueError:
        return "unknown"


def finished(command_id: str, rec: Mapping[str, str | None]) -> None:
    """Count a command that just reached its terminal state, from its stored fields (no I/O).

    Called once per command: by whoever's transition to terminal applied (the script returns the record).
    """
    type_, status = rec.get("type") or "unknown", rec.get("status")
    latency = seconds_between(rec.get("sent_at"), rec.get("resolved_at"))
    if latency is not None and status in ("succeeded", "failed"):
        RECORDER.observe("callq_command_sent_to_resolved_seconds", latency, type_, status)
    if rec.get("call_connection_id"):
        RECORDER.mark(CALLS_KEY, str(rec["call_connection_id"]))
    if status == "succeeded":
        RECORDER.inc("callq_commands_succeeded", type_)
    elif status == "failed":
        RECORDER.inc("callq_commands_failed", type_, error_code(rec.get("error")))
        RECORDER.mark(ATTENTION_KEY, command_id)


def event(kind: str, call_connection_id: str | None, *, orphan: bool) -> None:
    """An ACS event was stored; an orphan names no call or command callq knows."""
    kind = kind or "unknown"
    RECORDER.inc("callq_callback_events", kind)
    if orphan:
        RECORDER.inc("callq_callback_orphans", kind)
    elif call_connection_id:
        RECORDER.mark(CALLS_KEY, call_connection_id)
