"""What the chaos scenarios share: processes they can kill and restart, a retrying client, and the checks.

Every check compares callq's records in Redis with the simulator's execution log (what ACS really did).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import redis

from tests.conftest import TEST_API_KEY, free_port, wait_until
from tests.integration.conftest import ROOT
from workers import keys
from workers.acs import repeatability_id
from workers.command import Status
from workers.operations import OPERATIONS


class AofRedis:
    """A redis-server with AOF on, which the test can kill and bring back on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.dir = free_port(), data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run make test"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                      "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                                      "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
        wait_until(up, timeout_s=20, what="redis to come back")

    def stop(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)


class ApiProcess:
    """The API as its own uvicorn process, so a test can SIGKILL or SIGTERM it and start it again on the same port."""

    def __init__(self, env: Mapping[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = dict(env), port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.outages_s: list[float] = []  # from each stop's signal to the restarted API answering, for the report
        self._stopped_at: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log, "ab") as log:  # appended across restarts; the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                 "--port", str(self.port), "--log-level", "warning"],
                cwd=ROOT, env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        proc = self.proc

        def healthy() -> bool:
            assert proc.poll() is None, f"the API exited on start:\n{self.log.read_text()[-3000:]}"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(healthy, timeout_s=30, what="the API process to answer /healthz", interval_s=0.05)
        if self._stopped_at is not None:
            self.outages_s.append(time.monotonic() - self._stopped_at)
            self._stopped_at = None

    def stop(self, sig: signal.Signals) -> None:
        """Signal the API (SIGTERM: uvicorn finishes in-flight requests first; SIGKILL: it just dies) and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self._stopped_at = time.monotonic()
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Supervisor:
    """Keeps worker processes running the way systemd or Kubernetes would: one that exits is started again.

    Needed because a Celery worker can exit on a Redis restart (kombu 5.x, ``Unrecoverable error: AttributeError
    ... 'hostname'`` while closing the lost connection); its messages are safe in Redis, but only a live worker
    runs them. ``restarts`` is reported, so the crash stays visible.
    """

    def __init__(self, start_worker: Callable[..., subprocess.Popen[bytes]], env: Mapping[str, str],
                 count: int) -> None:
        self.start_worker, self.env = start_worker, dict(env)
        self.workers = [start_worker(f"w{n}", extra_env=self.env, wait=False) for n in range(count)]
        self.restarts = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.2):  # a watchdog's check interval, as a service manager has
            for n, proc in enumerate(self.workers):
                if proc.poll() is not None:
                    self.restarts += 1
                    self.workers[n] = self.start_worker(f"w{n}-{self.restarts}", extra_env=self.env, wait=False)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


class Killer:
    """Kills a random worker every ``every_s`` and starts a replacement with ``env``, ``times`` times (None: until
    stopped). ``hit``: what ``in_flight`` named just before a kill (commands some worker was sending when it landed);
    ``held``: what it named just after (among them the dead worker's, still unsent until redelivered). ``aim``: each
    kill waits (up to ``every_s`` more) until ``in_flight`` names a command, so that kills land mid-send even when
    sends are a small part of the load."""

    def __init__(self, start_worker: Callable[..., subprocess.Popen[bytes]], workers: list[subprocess.Popen[bytes]],
                 *, env: Mapping[str, str], times: int | None, every_s: float,
                 in_flight: Callable[[], set[str]], aim: bool = False) -> None:
        self.start_worker, self.workers, self.env, self.times, self.every_s = \
            start_worker, workers, dict(env), times, every_s
        self.in_flight, self.aim = in_flight, aim
        self.hit: set[str] = set()
        self.held: set[str] = set()
        self.kills = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(5)
        while (self.times is None or self.kills < self.times) and not self.stop.wait(self.every_s):  # load pacing
            sending, deadline = self.in_flight(), time.monotonic() + self.every_s
            while self.aim and not sending and time.monotonic() < deadline and not self.stop.wait(0.01):
                sending = self.in_flight()  # a bounded wait for a send in flight
            self.hit |= sending
            victim = self.workers.pop(rng.randrange(len(self.workers)))
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            self.held |= self.in_flight()
            self.kills += 1
            self.workers.append(self.start_worker(f"r{self.kills}", extra_env=self.env, wait=False))


class RetryingClient:
    """What a well-behaved client does: send a request, and on no answer or a 5xx send it again with the same
    Idempotency-Key and body until callq answers 2xx. Load threads share one instance and its counts."""

    def __init__(self, base_url: str, *, deadline_s: float, retry_every_s: float = 0.1) -> None:
        self.base_url, self.deadline_s, self.retry_every_s = base_url, deadline_s, retry_every_s
        self.answers: dict[str, list[str]] = defaultdict(list)  # key -> the command id of every 2xx it got
        # Every 2xx: (wall-clock time its request was sent, time the answer came, command id).
        self.accepted: list[tuple[float, float, str]] = []
        self.counts: Counter[str] = Counter()  # 5xx, refused (nothing listening), cut (no answer), replayed
        self.codes: Counter[str] = Counter()  # every 5xx by status and error code: "503 unavailable"
        self._lock = threading.Lock()
        self._local = threading.local()
        self._clients: list[httpx.Client] = []

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = httpx.Client(base_url=self.base_url, timeout=10,
                                                       headers={"Authorization": f"Bearer {TEST_API_KEY}"})
            with self._lock:
                self._clients.append(client)
        return client

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def submit(self, path: str, body: dict[str, Any], key: str) -> str:
        """The command id callq answered with, once it answered 2xx; any 4xx fails the test (the request is valid)."""
        def attempt() -> str | None:
            sent = time.time()
            try:
                resp = self._client().post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.ConnectError:
                self._count("refused")
                return None
            except httpx.HTTPError:  # sent, or about to be, and the connection went away without an answer
                self._count("cut")
                return None
            if resp.status_code >= 500:
                self._count("5xx")
                with self._lock:
                    self.codes[f"{resp.status_code} {error_code(resp)}"] += 1
                return None
            assert resp.status_code < 300, f"{path} with {key}: {resp.status_code} {resp.text}"
            command_id = str(resp.json()["id"])
            with self._lock:
                self.answers[key].append(command_id)
                self.accepted.append((sent, time.time(), command_id))
                self.counts["replayed"] += resp.headers.get("Idempotent-Replayed") == "true"
            return command_id
        return str(wait_until(attempt, timeout_s=self.deadline_s, what=f"a 2xx for {key}",
                              interval_s=self.retry_every_s))  # the client's retry back-off

    def answered_other_ids(self) -> int:
        """Keys whose retries were answered with a different command than their first 2xx (must be none)."""
        return sum(1 for ids in self.answers.values() if len(set(ids)) > 1)

    def close(self) -> None:
        for client in self._clients:
            client.close()


def settle(clients: Sequence[Future[Any]], *, timeout_s: float, what: str) -> tuple[int, list[BaseException]]:
    """Wait for client threads to finish; how many are still sending at the deadline, and what the finished ones
    raised. A deadline is not a failure here: the scenario records its figures first, then asserts on these."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: all(f.done() for f in clients), timeout_s=timeout_s, what=what, interval_s=0.1)
    failed = [exc for f in clients if f.done() and (exc := f.exception()) is not None]
    return sum(1 for f in clients if not f.done()), failed


def error_code(resp: httpx.Response) -> str:
    """callq's error code in a response (``{"error": {"code": ...}}``), or what stands in for one."""
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return "(no code)"  # not callq's error body: a traceback, a proxy's page


def record(r: redis.Redis, command_id: str) -> dict[str, str]:
    """A command's record as stored (text: the scenarios' clients decode responses)."""
    return cast(dict[str, str], r.hgetall(keys.command_key(command_id)))


def statuses(r: redis.Redis, ids: list[str]) -> list[str | None]:
    pipe = r.pipeline(transaction=False)
    for command_id in ids:
        pipe.hget(keys.command_key(command_id), "status")
    return list(pipe.execute())


def unfinished(r: redis.Redis, ids: list[str], *, timeout_s: float) -> list[str]:
    """Wait for every command to end; those that had not by the deadline (the scenario's *lost* ones)."""
    try:
        wait_until(lambda: all(s in Status.TERMINAL for s in statuses(r, ids)), timeout_s=timeout_s,
                   what=f"{len(ids)} commands to end", interval_s=0.1)
    except AssertionError:
        pass  # reported as lost by the caller, which records the figure before asserting
    return [i for i, s in zip(ids, statuses(r, ids), strict=True) if s not in Status.TERMINAL]


def outcomes(r: redis.Redis, ids: list[str]) -> Counter[str]:
    """How the commands ended: ``succeeded``, or the error code they failed with."""
    found: Counter[str] = Counter()
    pipe = r.pipeline(transaction=False)
    for command_id in ids:
        pipe.hmget(keys.command_key(command_id), "status", "error", "resolved_by")
    for status, error, resolved_by in pipe.execute():
        if status == "succeeded":
            reconciled = resolved_by and json.loads(resolved_by).get("type") == "reconciled"
            found["succeeded, reconciled" if reconciled else "succeeded"] += 1
        elif status == "failed":
            found[json.loads(error)["code"] if error else "failed"] += 1
        else:
            found[str(status)] += 1
    return found


def executions(log: Iterable[dict[str, Any]], ids: Iterable[str]) -> dict[str, int]:
    """How many times ACS executed each command, from the simulator's log.

    A command is found by its operationContext (callq sends its id) or, for operations that carry none
    (terminate, start recording), by the repeatability id derived from its id.
    """
    seen: Counter[str] = Counter()
    for entry in log:
        if entry.get("operation_context"):
            seen[entry["operation_context"]] += 1
        elif entry.get("repeatability_id"):
            seen[entry["repeatability_id"]] += 1
    return {i: seen[i] + seen[repeatability_id(i)] for i in ids}


def second_commands(r: redis.Redis, idempotency_keys: Iterable[str]) -> int:
    """Commands beyond the first for any of these Idempotency-Keys, over every command record in Redis."""
    wanted = set(idempotency_keys)
    per_key: Counter[str] = Counter()
    for name in r.scan_iter(match=f"{keys.COMMAND_PREFIX}*", count=1000, _type="hash"):
        key = r.hget(name, "idempotency_key")
        if key in wanted:
            per_key[key] += 1
    return sum(n - 1 for n in per_key.values() if n > 1)


def honest(command: dict[str, str], delivered: list[tuple[str, str]], ended_at: dict[str, float], *,
           records: Mapping[str, Mapping[str, str]] | None = None, executed: Mapping[str, int] | None = None,
           log: list[dict[str, Any]] | None = None) -> bool:
    """Succeeded, or failed the way only a missing event explains: given up at its deadline (``callback_timeout``)
    when ACS could not be asked (DTMF, play; or any operation once its call was gone) or when the command it names
    (``resolved_by.after``) really is a later command of the call that changes what the read looks at and that
    ACS executed; or still pending when its call ended (``call_ended``: a hang-up never waits for earlier
    outcomes) with its own event not yet received; or a media operation ended unsent (``interrupted``) by a later
    hang up or cancel media of its call.

    ``delivered``: (event type, call) of every event callq received, in order; ``ended_at``: when ACS ended each
    call; ``records``: every command of the run by id; ``executed``: how often ACS executed each (by the ids
    callq sends); ``log``: the simulator's execution log.
    """
    if command["status"] == "succeeded":
        return True
    op, code = OPERATIONS[command["type"]], json.loads(command["error"])["code"]
    if code == "callback_timeout":
        gone = ended_at.get(command["call_connection_id"], math.inf) < _epoch(command["resolved_at"])
        after = json.loads(command.get("resolved_by") or "{}").get("after")
        later = (records or {}).get(after or "")
        changed = (later is not None and acs_executed(later, executed or {}, log or [])
                   and later["call_connection_id"] == command["call_connection_id"]
                   and later["created_at"] >= command["created_at"]
                   and OPERATIONS[later["type"]].changes == op.reconcile_reads != "")
        return op.reconcile is None or gone or changed
    if code == "call_ended":
        seen = [kind for kind, cc in delivered if cc == command["call_connection_id"]]
        before_end = seen[:seen.index("CallDisconnected")] if "CallDisconnected" in seen else seen
        return not (op.succeeds_on | op.fails_on) & set(before_end)
    if code == "interrupted":
        # Never sent: a hang up or cancel media of its call, accepted after it, ended it unsent.
        by = (records or {}).get(json.loads(command["error"]).get("by") or "")
        return (by is not None and not acs_executed(command, executed or {}, log or []) and op.media
                and OPERATIONS[by["type"]].cuts_media != ""
                and by["call_connection_id"] == command["call_connection_id"]
                and by["created_at"] >= command["created_at"])
    return False


# ACS's pause, resume and stop carry neither an operationContext nor (in callq) a repeatability id: the simulator's
# log names them by operation and recording.
_BY_RECORDING = {"pause_recording": "pauseRecording", "resume_recording": "resumeRecording",
                 "stop_recording": "stopRecording"}


def acs_executed(command: Mapping[str, str], executed: Mapping[str, int], log: list[dict[str, Any]]) -> bool:
    """Whether ACS executed ``command``: by its id, or for a recording action, by its operation on its recording."""
    if executed.get(command["id"], 0) >= 1:
        return True
    name, recording = _BY_RECORDING.get(command["type"]), command.get("recording_id")
    return bool(name and recording and any(e["operation"] == name and recording in e["path"] for e in log))


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def call_ends(log: Iterable[dict[str, Any]]) -> dict[str, float]:
    """When ACS ended each call (its terminate in the simulator's log)."""
    return {e["call_connection_id"]: e["t"] for e in log if e["operation"] == "terminate"}


def delivery_order(callbacks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(event type, call) of every delivered event; one lane per callback URL keeps the log in delivery order."""
    return [(kind.rsplit(".", 1)[-1], cc) for e in callbacks if e["outcome"] == "delivered"
            for kind, cc in zip(e["types"], e["call_connection_ids"], strict=True)]
