"""e2e: a connect command from the client's POST to its outcome, against calling the SDK directly.

callq: ``POST /v1/rooms/{room}/connect`` → 202 → ``GET /v1/commands/{id}?wait=10`` returns ``succeeded``
(API → Redis → worker → SDK → simulator → signed CallConnected → API → long-poll wakes). Baseline: this
process calls ``CallAutomationClient.connect_call`` and waits for the CallConnected callback on a tiny
in-process receiver. Sequential samples, each on an idle stack (``SETTLE_S``). Target: p50 ≤ 2×.
"""

from __future__ import annotations

import time
from datetime import datetime

import httpx
from azure.communication.callautomation import CallAutomationClient
from azure.core.credentials import AzureKeyCredential

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


def _callq_once(api: httpx.Client, room: str) -> tuple[float, float | None]:
    """Client-timed POST → succeeded, and the server's own created_at → resolved_at (ms resolution)."""
    started = time.perf_counter()
    body = stack.connect_once(api, room)
    done = api.get(f"/v1/commands/{body['id']}", params={"wait": 10}).json()
    finished = time.perf_counter()
    if done.get("status") != "succeeded":
        raise BenchError(f"connect did not succeed: {done.get('status')} {done.get('error')}")
    server_side = _epoch(done["resolved_at"]) - _epoch(done["created_at"]) if done.get("resolved_at") else None
    return finished - started, server_side


def _epoch(iso: str) -> float:
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


def _collect(st: stack.Stack, n: int) -> tuple[list[float], list[float], list[float]]:
    """callq and SDK samples taking turns, so both see the same background load."""
    rooms = stack.create_rooms(st.sim_url, 20)
    callq, server_side, sdk = [], [], []
    client = CallAutomationClient(st.sim_url, AzureKeyCredential(stack.ACS_KEY))
    with (httpx.Client(base_url=st.api_url, headers=stack.AUTH, trust_env=False, timeout=30) as api, client,
          CallbackReceiver() as receiver):
        for i in range(n + WARMUP):
            room = rooms[i % len(rooms)]
            time.sleep(SETTLE_S)  # bench pacing, not synchronisation: see SETTLE_S
            total, server = _callq_once(api, room)
            time.sleep(SETTLE_S)
            direct = _sdk_once(client, receiver, room)
            if i >= WARMUP:
                callq.append(total)
                sdk.append(direct)
                if server is not None:
                    server_side.append(server)
    return callq, server_side, sdk


def run(ctx: Context) -> ScenarioResult:
    n = int(ctx.pick(200, 30))
    with ctx.children("e2e") as ch:
        callq, server_side, sdk = _collect(stack.start(ch, workers=1, concurrency=8), n)
    callq_ms, sdk_ms = summary_ms(callq), summary_ms(sdk)
    res = ScenarioResult("e2e")
    res.rows = [
        compare("command → outcome, p50", "ms", callq_ms["p50"], sdk_ms["p50"], "SDK direct", at_most=2),
        compare("command → outcome, p99", "ms", callq_ms["p99"], sdk_ms["p99"], "SDK direct"),
    ]
    res.latency = {"callq POST → succeeded": curve([s * 1000 for s in callq]),
                   "SDK connect_call → CallConnected": curve([s * 1000 for s in sdk])}
    res.details = {"callq_ms": callq_ms, "sdk_ms": sdk_ms,
                   "callq_created_to_resolved_ms": summary_ms(server_side) if server_side else None}
    server = res.details["callq_created_to_resolved_ms"]
    res.notes = [
        f"{n} connects each (after {WARMUP} warm-up), one at a time and taking turns, each started "
        f"{SETTLE_S * 1000:.0f} ms after the one before so that it finds the stack idle (API and simulator under "
        "uvicorn, one worker process with 8 threads). callq: from sending "
        "`POST /v1/rooms/{room}/connect` to `GET /v1/commands/{id}?wait=10` returning `succeeded`, both timed by "
        "the client" + (f"; the command's own `created_at` → `resolved_at` has p50 {server['p50']:.0f} ms (ms "
                        "resolution)" if server else "") + ". Baseline: "
        "`CallAutomationClient(endpoint, AzureKeyCredential(key)).connect_call(...)` from this process, until "
        "the CallConnected callback reaches a minimal in-process receiver (which checks no JWT).",
    ]
    return res
