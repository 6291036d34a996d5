"""e2e: a connect command from the client's POST to its outcome, against calling the SDK directly.

callq: ``POST /v1/rooms/{room}/connect`` → 202 → ``GET /v1/commands/{id}?wait=10`` returns ``succeeded``
(API → Redis → worker → SDK → simulator → signed CallConnected → API → long-poll wakes). Baseline: this
process calls ``CallAutomationClient.connect_call`` and waits for the CallConnected callback on a tiny
in-process receiver. Sequential samples, each on an idle stack (``SETTLE_S``). Target: p50 ≤ 2×.

callq's client is one keep-alive ``http.client`` connection (the standard library's): what a client library
costs is not callq's, and on two cores a heavy one also takes CPU from the stack it measures. The same
commands sent through httpx are measured in the same turns and reported beside it (information only).
"""

from __future__ import annotations

import http.client
import json
import time
import uuid
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from azure.communication.callautomation import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from celery import Celery

from bench import stack
from bench.callbacks import CallbackReceiver
from bench.procs import BenchError
from bench.results import ScenarioResult, compare, curve
from bench.scenarios import Context
from bench.stats import summary_ms

WARMUP = 5
# The pause before each sample, so that it starts on an idle stack. Without it a sample overlaps the tail of
# the one before (callq's acknowledgement, task events, second event and reconcile message; the simulator's
# bookkeeping), and as the two take turns, every SDK sample paid for callq's tail and every callq sample only
# for the SDK's lighter one: the baseline looked slower than it is, by whatever callq left behind.
SETTLE_S = 0.02


class Client:
    """A callq client on one keep-alive HTTP/1.1 connection (standard library), as one API client (``auth``)."""

    def __init__(self, url: str, auth: dict[str, str] = stack.AUTH) -> None:
        self._conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=30)
        self._auth = auth

    def _json(self, method: str, path: str, body: bytes | None, headers: dict[str, str], ok: int) -> Any:
        self._conn.request(method, path, body=body, headers={**self._auth, **headers})
        resp = self._conn.getresponse()
        raw = resp.read()
        if resp.status != ok:
            raise BenchError(f"{method} {path}: HTTP {resp.status} {raw[:200]!r}")
        return json.loads(raw)

    def connect(self, room: str) -> dict[str, Any]:
        body: dict[str, Any] = self._json("POST", f"/v1/rooms/{room}/connect", b"{}", {
            "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}, 202)
        return body

    def wait(self, command_id: str) -> dict[str, Any]:
        done: dict[str, Any] = self._json("GET", f"/v1/commands/{command_id}?wait=10", None, {}, 200)
        return done

    def close(self) -> None:
        self._conn.close()


def callq_once(api: Client, room: str) -> tuple[float, float | None]:
    """Client-timed POST → succeeded, and the server's own created_at → resolved_at (ms resolution)."""
    started = time.perf_counter()
    done = api.wait(api.connect(room)["id"])
    finished = time.perf_counter()
    _check(done)
    server_side = epoch(done["resolved_at"]) - epoch(done["created_at"]) if done.get("resolved_at") else None
    return finished - started, server_side


def _httpx_once(api: httpx.Client, room: str) -> float:
    started = time.perf_counter()
    body = stack.connect_once(api, room)
    done = api.get(f"/v1/commands/{body['id']}", params={"wait": 10}).json()
    finished = time.perf_counter()
    _check(done)
    return finished - started


def _check(done: dict[str, Any]) -> None:
    if done.get("status") != "succeeded":
        raise BenchError(f"connect did not succeed: {done.get('status')} {done.get('error')}")


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _sdk_once(client: CallAutomationClient, receiver: CallbackReceiver, room: str) -> float:
    started = time.perf_counter()
    props = client.connect_call(callback_url=receiver.url, room_id=room)
    if not props.call_connection_id:
        raise BenchError("ACS answered connect without a call connection id")
    arrived = receiver.wait_connected(props.call_connection_id, timeout_s=10)
    if arrived is None:
        raise BenchError("no CallConnected reached the baseline's receiver within 10 s")
    return arrived - started


def _collect(st: stack.Stack, rooms: list[str], n: int, *, with_httpx: bool) -> dict[str, list[float]]:
    """callq (one or both clients) and SDK samples taking turns, so all see the same background load."""
    out: dict[str, list[float]] = {"callq": [], "server_side": [], "httpx": [], "sdk": []}
    client = CallAutomationClient(st.sim_url, AzureKeyCredential(stack.ACS_KEY))
    api = Client(st.api_url)
    try:
        with (httpx.Client(base_url=st.api_url, headers=stack.AUTH, trust_env=False, timeout=30) as heavy, client,
              CallbackReceiver() as receiver):
            for i in range(n + WARMUP):
                room = rooms[i % len(rooms)]
                time.sleep(SETTLE_S)  # bench pacing, not synchronisation: see SETTLE_S
                total, server = callq_once(api, room)
                time.sleep(SETTLE_S)
                direct = _sdk_once(client, receiver, room)
                through_httpx = None
                if with_httpx:
                    time.sleep(SETTLE_S)
                    through_httpx = _httpx_once(heavy, room)
                if i >= WARMUP:
                    out["callq"].append(total)
                    out["sdk"].append(direct)
                    out["httpx"] += [through_httpx] if through_httpx is not None else []
                    out["server_side"] += [server] if server is not None else []
    finally:
        api.close()
    return out


def _enable_task_events(redis_url: str) -> None:
    """What Flower does every 5 s: ask the workers to send task events; returns once they all said yes."""
    app = Celery(broker=redis_url)
    try:
        # limit: the reply of the one worker ends the wait (without it Celery collects replies for the whole timeout)
        replies = app.control.enable_events(reply=True, timeout=10, limit=1)
    finally:
        app.close()
    if not replies or not all("enabled" in str(reply) for reply in replies):
        raise BenchError(f"the worker did not confirm enabling task events: {replies!r}")


def run(ctx: Context) -> ScenarioResult:
    n = int(ctx.pick(200, 12))
    with ctx.children("e2e") as ch:
        st = stack.start(ch, workers=1, concurrency=8)
        rooms = stack.create_rooms(st.sim_url, 20)
        samples = _collect(st, rooms, n, with_httpx=True)
        _enable_task_events(st.redis_url)  # then the same with the worker sending task events, as under Flower
        monitored = _collect(st, rooms, n // 2, with_httpx=False)
    callq, server_side, sdk = samples["callq"], samples["server_side"], samples["sdk"]
    callq_ms, sdk_ms, httpx_ms = summary_ms(callq), summary_ms(sdk), summary_ms(samples["httpx"])
    events_ms, events_sdk_ms = summary_ms(monitored["callq"]), summary_ms(monitored["sdk"])
    res = ScenarioResult("e2e")
    res.rows = [
        compare("command → outcome, p50", "ms", callq_ms["p50"], sdk_ms["p50"], "SDK direct", at_most=2),
        compare("command → outcome, p99", "ms", callq_ms["p99"], sdk_ms["p99"], "SDK direct"),
        compare("command → outcome with httpx as callq's client, p50", "ms", httpx_ms["p50"], sdk_ms["p50"],
                "SDK direct"),
        compare("command → outcome with Celery task events on (as under Flower), p50", "ms", events_ms["p50"],
                events_sdk_ms["p50"], "SDK direct"),
    ]
    res.latency = {"callq POST → succeeded": curve([s * 1000 for s in callq]),
                   "SDK connect_call → CallConnected": curve([s * 1000 for s in sdk])}
    res.details = {"callq_ms": callq_ms, "sdk_ms": sdk_ms, "callq_httpx_ms": httpx_ms,
                   "callq_task_events_ms": events_ms, "sdk_during_task_events_ms": events_sdk_ms,
                   "callq_created_to_resolved_ms": summary_ms(server_side) if server_side else None}
    server = res.details["callq_created_to_resolved_ms"]
    res.notes = [
        f"{n} connects of each kind (after {WARMUP} warm-up), one at a time and taking turns, each started "
        f"{SETTLE_S * 1000:.0f} ms after the one before so that it finds the stack idle (API and simulator under "
        "uvicorn, one worker process with 8 threads). callq: from sending "
        "`POST /v1/rooms/{room}/connect` to `GET /v1/commands/{id}?wait=10` returning `succeeded`, both timed by "
        "the client, which is one keep-alive `http.client` connection (the standard library's: a client library's "
        "own time is not callq's, and on two cores a heavy client also takes CPU from the stack); the same "
        f"through httpx, in the same turns, has p50 {httpx_ms['p50']:.2f} ms (information row)"
        + (f"; the command's own `created_at` → `resolved_at` has p50 {server['p50']:.0f} ms (ms resolution)"
           if server else "") + ". Baseline: "
        "`CallAutomationClient(endpoint, AzureKeyCredential(key)).connect_call(...)` from this process, until "
        "the CallConnected callback reaches a minimal in-process receiver (which checks no JWT). "
        "The worker is started without -E, so it sends no Celery task events until a monitor asks; a second phase "
        f"({n // 2} of each, after `celery control enable_events` as Flower sends it) measures callq with them: "
        f"p50 {events_ms['p50']:.2f} ms against the SDK's {events_sdk_ms['p50']:.2f} ms in the same turns.",
    ]
    return res
