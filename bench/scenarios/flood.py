"""flood: one client floods its calls with plays; another client's connects must not wait behind them (#18).

Clients of one stack, the door at its defaults (``CALLQ_MAX_PENDING_PER_CALL`` 100). Client A connects to its 20
room calls, then for 30 s sends plays to them as fast as the API answers, from a process of its own (one keep-alive
connection per call; a call answered 429 waits its ``Retry-After`` while the others go on). Client B connects to a
fresh room every 2 s, timed from its POST to ``GET /v1/commands/{id}?wait=`` saying ``succeeded``: first with no
flood (the baseline, same stack, just before), then during the flood.

Target: B's p99 during the flood ≤ 2× its idle p99. B alone connects 14 times in 30 s, and the p99 of 14 samples
is their slowest: two such "p99s" of B with no flood at all differ by up to ~1.6× on the bench machine (the
control row). So B has ``QUIET_CLIENTS - 1`` twins, each a client of its own doing exactly what B does (a fresh
room every 2 s), their schedules staggered evenly within B's 2 s; the target row is the p99 of all their connects
(112 per phase), and B's own 14 are an info row. Every quiet client is as quiet as B (one connect per 2 s), so
each is served as B would be: a sparse flow at the dispatch, an active client at the API's intake.
Quick mode floods for 6 s, samples each quiet client every 0.5 s and lowers the per-call limit to 10 (a call's
backlog of 100 plays may take minutes to drain).

Then every play callq accepted must end ``succeeded``, and the simulator's log of what ACS executed must show
each call's plays started exactly once, in the order callq accepted them (``GET /v1/calls/{cc}/commands``).

The simulator's own play lasts 20 ms, so short that the plays never queue at ACS; here its plays last 200 ms
(``simulator_app``), so that ACS's one media operation per call holds them back, as a real prompt would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import http.client
import json
import math
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from starlette.applications import Starlette

from bench import stack
from bench.load import Connection, post_bytes
from bench.procs import BenchError, Children, wait_for
from bench.results import Row, ScenarioResult, compare, curve
from bench.scenarios import Context
from bench.stats import summary_ms
from workers.settings import Settings

CALLS = 20
FLOODER_KEY = "bench-flooder-0123456789abcdef"
QUIET_CLIENTS = 8  # client B and its twins: enough connects per phase (8 × 14) for a p99 that is not the maximum
WORKERS, THREADS = 2, 8
WARMUP = 3  # per quiet client
WAIT_S = 60  # the API's longest long-poll
GIVE_UP_S = 300  # a connect of B that takes longer is reported as an error: nothing could be measured
PLAY_TEXT = "Flood."
PLAY_ENV = "BENCH_PLAY_S"
QUICK_MAX_PENDING_PER_CALL = 10
DRAIN_SLACK_S = 1.5  # beyond the play itself, per play of a call's backlog, before the drain counts as stuck


def simulator_app() -> Starlette:
    """The ACS simulator with plays of ``BENCH_PLAY_S`` seconds (``uvicorn --factory``)."""
    from simulator import app, media

    if not hasattr(media, "PLAY_S"):
        # Renamed in the simulator: the plays would silently keep their own length and never queue at ACS.
        raise RuntimeError("simulator.media.PLAY_S is gone; bench/scenarios/flood.py cannot set the play length")
    media.PLAY_S = float(os.environ[PLAY_ENV])
    return app.create_app()


# --- client B: one connect, timed -----------------------------------------------------------------------------

def bystander_key(client: int) -> str:
    """The API key of quiet client ``client`` (0 is client B itself)."""
    return f"bench-bystander{client}-0123456789abcdef"


@dataclass(frozen=True)
class Sample:
    started: float  # monotonic, for where it fell in the flood
    seconds: float  # POST sent → the long-poll answered succeeded
    server_ms: float | None  # the command's own created_at → resolved_at
    to_sent_ms: float | None = None  # created_at → sent_at: waiting for its turn, and ACS's answer to the request
    to_event_ms: float | None = None  # sent_at → resolved_at: ACS's event reaching callq
    accept_ms: float | None = None  # POST sent → its 202 read
    wall_started: float = 0.0  # the same moment as ``started``, on the wall clock (the simulator's log uses it)
    acs_plays_meanwhile: int | None = None  # plays ACS started while this connect was under way (set afterwards)
    client: int = 0  # which quiet client connected (0: client B)


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _connect_once(api_url: str, room: str, client: int) -> Sample:
    """A quiet client's connect on a connection of its own, so a slow one never delays the next."""
    auth = {"Authorization": f"Bearer {bystander_key(client)}"}
    conn = http.client.HTTPConnection(urlsplit(api_url).netloc, timeout=WAIT_S + 30)
    try:
        wall_started, started = time.time(), time.monotonic()
        conn.request("POST", f"/v1/rooms/{room}/connect", body=b"{}", headers={
            **auth, "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())})
        resp = conn.getresponse()
        raw = resp.read()
        accepted = time.monotonic()
        if resp.status != 202:
            raise BenchError(f"quiet client {client}'s connect was not accepted: HTTP {resp.status} {raw[:200]!r}")
        command_id = json.loads(raw)["id"]
        while True:
            conn.request("GET", f"/v1/commands/{command_id}?wait={WAIT_S}", headers=auth)
            resp = conn.getresponse()
            raw = resp.read()
            if resp.status != 200:
                raise BenchError(f"client B could not read its connect {command_id}: HTTP {resp.status} {raw[:200]!r}")
            done: dict[str, Any] = json.loads(raw)
            if done.get("status") in ("succeeded", "failed"):
                break
            if time.monotonic() - started > GIVE_UP_S:
                raise BenchError(f"quiet client {client}'s connect {command_id} had not ended after {GIVE_UP_S} s")
        finished = time.monotonic()
    finally:
        conn.close()
    if done["status"] != "succeeded":
        raise BenchError(f"quiet client {client}'s connect failed: {done.get('error')}")
    def between(a: str, b: str) -> float | None:
        return (_epoch(done[b]) - _epoch(done[a])) * 1000 if done.get(a) and done.get(b) else None

    return Sample(started, finished - started, between("created_at", "resolved_at"),
                  between("created_at", "sent_at"), between("sent_at", "resolved_at"), (accepted - started) * 1000,
                  wall_started, client=client)


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)  # B's schedule (pacing), not synchronisation


def _bystander(api_url: str, rooms: Sequence[str], interval_s: float, first_at: float,
               clients: int = QUIET_CLIENTS) -> list[Sample]:
    """The quiet clients' connects on a fixed schedule: each client one every ``interval_s`` whether or not its
    last one has ended, the clients' schedules staggered evenly (room ``k`` is client ``k % clients``'s, at
    ``first_at + k * interval_s / clients``).

    Open loop: a connect starved for 10 s must not hold back the samples that would show it.
    """
    with ThreadPoolExecutor(max_workers=max(1, len(rooms)), thread_name_prefix="bench-b") as pool:
        futures = []
        for k, room in enumerate(rooms):
            _sleep_until(first_at + k * interval_s / clients)
            futures.append(pool.submit(_connect_once, api_url, room, k % clients))
        return [f.result() for f in futures]


# --- client A: the flood, in a process of its own -------------------------------------------------------------

@dataclass
class CallFlood:
    accepted: list[str] = field(default_factory=list)  # command ids, in the order their 202s came
    sent: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # 429 by error code
    other: Counter[str] = field(default_factory=Counter)  # any other answer, by status
    resent: int = 0  # a connection dropped under a POST: sent again with the same Idempotency-Key


async def _post(conn: Connection, raw: bytes) -> tuple[int, float, bytes]:
    """Like ``Connection.send``, and the answer's Retry-After (0 when absent)."""
    conn.writer.write(raw)
    status = int((await conn.reader.readline()).split()[1])
    length, retry_after = 0, 0.0
    while (line := await conn.reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"retry-after":
            retry_after = float(value)
    return status, retry_after, await conn.reader.readexactly(length) if length else b""


async def _flood_call(api_url: str, cc: str, stop_at: float, out: CallFlood) -> None:
    parts = urlsplit(api_url)
    conn = Connection(parts.hostname or "127.0.0.1", parts.port or 80)
    await conn.open()
    path = f"/v1/calls/{cc}/play"
    body = json.dumps({"text": PLAY_TEXT}).encode()
    headers = {"Authorization": f"Bearer {FLOODER_KEY}", "Content-Type": "application/json"}
    try:
        while time.monotonic() < stop_at:
            raw = post_bytes(parts.netloc, path, {**headers, "Idempotency-Key": str(uuid.uuid4())}, body)
            out.sent += 1
            for _ in range(3):
                try:
                    status, retry_after, answer = await _post(conn, raw)
                    break
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    # The same key again: if the first POST was accepted, the resend returns that command, so no
                    # accepted play goes unrecorded here.
                    out.resent += 1
                    conn.close()
                    await conn.open()
            else:
                raise BenchError(f"client A's connection for call {cc} kept dropping")
            if status == 202:
                out.accepted.append(json.loads(answer)["id"])
            elif status == 429:
                out.refused[json.loads(answer)["error"]["code"]] += 1
                # Its Retry-After, for this call only: the other calls' connections keep sending meanwhile.
                await asyncio.sleep(max(0.0, min(retry_after, stop_at - time.monotonic())))
            else:
                out.other[str(status)] += 1
                if 400 <= status < 500:  # the bench itself is wrong for this call; sending more says nothing new
                    return
    finally:
        conn.close()


async def _flood(api_url: str, calls: Sequence[str], seconds: float) -> dict[str, CallFlood]:
    stop_at = time.monotonic() + seconds
    floods = {cc: CallFlood() for cc in calls}
    await asyncio.gather(*(_flood_call(api_url, cc, stop_at, floods[cc]) for cc in calls))
    return floods


def flooder_main(out_path: Path) -> None:
    """``python -m bench.scenarios.flood OUT``: flood, then write what happened as JSON.

    ``OUT.started`` appears (holding the wall-clock start) the moment the flood begins, so the scenario can start
    B's samples then rather than guess how long this process took to import.
    """
    api_url, calls = os.environ["BENCH_FLOOD_API"], os.environ["BENCH_FLOOD_CALLS"].split(",")
    seconds = float(os.environ["BENCH_FLOOD_SECONDS"])
    started = time.time()
    marker = out_path.with_suffix(".started.tmp")
    marker.write_text(str(started))
    marker.rename(out_path.with_suffix(".started"))
    floods = asyncio.run(_flood(api_url, calls, seconds))
    result = {"started": started, "ended": time.time(),
              "calls": {cc: {"accepted": f.accepted, "sent": f.sent, "refused": dict(f.refused),
                             "other": dict(f.other), "resent": f.resent} for cc, f in floods.items()}}
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.rename(out_path)


def _run_flooder(ch: Children, api_url: str, calls: Sequence[str], seconds: float,
                 bystander: tuple[Sequence[str], float]) -> tuple[dict[str, Any], list[Sample], float]:
    """A's flood in its own process, B's samples from this one while it lasts: (A's report, B's samples, start).

    Its own process: in this one, its event loop would hold the GIL while B's threads wait to read a clock, and B
    would measure the bench rather than callq.
    """
    out = ch.tmp / "flood.json"
    proc = ch.spawn("flooder", [sys.executable, "-m", "bench.scenarios.flood", str(out)], {
        "BENCH_FLOOD_API": api_url, "BENCH_FLOOD_CALLS": ",".join(calls), "BENCH_FLOOD_SECONDS": str(seconds)})

    def started() -> bool:
        ch.check_alive("flooder", proc)
        return out.with_suffix(".started").exists()

    wait_for(started, timeout_s=60, what="client A's flood to start")
    began = time.monotonic()
    rooms, interval_s = bystander
    samples = _bystander(api_url, rooms, interval_s, began + interval_s)
    try:
        proc.wait(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"client A's flood had not ended {seconds + 60:g} s after it began") from None
    if proc.returncode != 0:
        raise BenchError(f"client A's flood exited with code {proc.returncode}: {ch.log_tail('flooder')}")
    report: dict[str, Any] = json.loads(out.read_text())
    return report, samples, began


# --- the checks of A's plays ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OrderCheck:
    """One call's plays: what callq accepted against what ACS started, in order."""

    accepted: int
    out_of_order: int  # started at ACS before a play callq accepted earlier had been started
    not_started: int
    started_twice: int
    unknown: int  # started at ACS, never accepted by callq for this call


def check_order(accepted: Sequence[str], started: Sequence[str]) -> OrderCheck:
    """Compare acceptance order with ACS's start order (both lists of command ids)."""
    rank = {cid: i for i, cid in enumerate(accepted)}
    seen: set[str] = set()
    out_of_order = twice = unknown = 0
    highest = -1
    for cid in started:
        if cid in seen:
            twice += 1
            continue
        seen.add(cid)
        if cid not in rank:
            unknown += 1
        elif rank[cid] < highest:
            out_of_order += 1
        else:
            highest = rank[cid]
    return OrderCheck(len(accepted), out_of_order, len(set(accepted) - seen), twice, unknown)


def _wait_until_ended(st: stack.Stack, ids: list[str], timeout_s: float) -> bool:
    r = st.redis()
    try:
        wait_for(lambda: all(s in ("succeeded", "failed") for s in stack.statuses(r, ids)), timeout_s=timeout_s,
                 what=f"client A's {len(ids)} plays to end", interval_s=0.25)
        return True
    except BenchError:
        return False
    finally:
        r.close()


def _check_plays(st: stack.Stack, report: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """Each of A's calls: callq's acceptance order and outcomes, against the plays the simulator executed; and
    when ACS started each play (wall clock)."""
    executed: dict[str, list[str]] = {}
    times: dict[str, list[float]] = {}
    for entry in stack.sim_admin(st.sim_url, "GET", "/_sim/log?operation=play"):
        executed.setdefault(entry["call_connection_id"], []).append(entry["operation_context"])
        times.setdefault(entry["call_connection_id"], []).append(entry["t"])
    # How long each call's plays followed one another at ACS: the play's own length when ACS is what holds them
    # back, more when callq is.
    gaps = sorted(b - a for ts in times.values() for a, b in zip(ts, ts[1:], strict=False))
    starts = [t for ts in times.values() for t in ts]
    during = sum(report["started"] <= t < report["ended"] for t in starts)
    middle = (report["started"] + report["ended"]) / 2
    totals: Counter[str] = Counter()
    resolved_by: Counter[str] = Counter()
    with httpx.Client(base_url=st.api_url, headers={"Authorization": f"Bearer {FLOODER_KEY}"}, trust_env=False,
                      timeout=60) as api:
        for cc, flood in report["calls"].items():
            resp = api.get(f"/v1/calls/{cc}/commands")
            if resp.status_code != 200:
                raise BenchError(f"could not list call {cc}'s commands: HTTP {resp.status_code} {resp.text[:200]}")
            plays = [c for c in resp.json()["items"] if c["type"] == "play"]
            order = check_order([c["id"] for c in plays], executed.get(cc, []))
            totals["accepted"] += order.accepted
            totals["succeeded"] += sum(c["status"] == "succeeded" for c in plays)
            totals["out_of_order"] += order.out_of_order
            totals["not_started"] += order.not_started
            totals["started_twice"] += order.started_twice
            totals["unknown"] += order.unknown
            # The 202s A received and the call's list must be the same plays (a resend returns the first command).
            totals["unlisted_202"] += len(set(flood["accepted"]) - {c["id"] for c in plays})
            totals["unreported"] += len({c["id"] for c in plays} - set(flood["accepted"]))
            resolved_by.update((c.get("resolved_by") or {}).get("type", c["status"]) for c in plays)
    return {**totals, "resolved_by": dict(resolved_by), "acs_gaps_ms": summary_ms(gaps) if gaps else None,
            "started_at_acs_during_flood": during,
            "acs_play_starts_per_10ms": {"middle_s": starts_per_slot(starts, middle - 0.5),
                                         "last_s": starts_per_slot(starts, report["ended"] - 1)}}, starts


def with_plays_meanwhile(samples: Sequence[Sample], starts: Sequence[float]) -> list[Sample]:
    """Each sample with the number of plays ACS started while it was under way: the load it met."""
    return [dataclasses.replace(s, acs_plays_meanwhile=sum(
        s.wall_started <= t < s.wall_started + s.seconds for t in starts)) for s in samples]


def starts_per_slot(starts: Sequence[float], since: float, *, slots: int = 100, slot_s: float = 0.01) -> str:
    """How many plays ACS started in each 10 ms of one second from ``since``, one digit per slot (9: nine or more).

    It shows the shape of the load B's connects met. A's calls each start a play as the last one ends, so with
    ACS's fixed play length they stay in step: the plays of all 20 calls start within a few tens of ms of each
    other, then nothing for the rest of the play (runs of zeros). A connect of B that lands in such a burst
    shares the machine with all of them; one between bursts does not.
    """
    counts = [0] * slots
    for t in starts:
        slot = math.floor((t - since) / slot_s)
        if 0 <= slot < slots:
            counts[slot] += 1
    return "".join(str(min(c, 9)) for c in counts)


# --- the scenario ---------------------------------------------------------------------------------------------

def _connect_calls(api_url: str, rooms: Sequence[str]) -> list[str]:
    """A's calls: connect to each room as client A, and wait until connected."""
    calls = []
    with httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {FLOODER_KEY}"}, trust_env=False,
                      timeout=WAIT_S + 30) as api:
        ids = [stack.connect_once(api, room)["id"] for room in rooms]
        for command_id in ids:
            done = api.get(f"/v1/commands/{command_id}", params={"wait": WAIT_S}).json()
            if done.get("status") != "succeeded":
                raise BenchError(f"client A's connect did not succeed: {done.get('status')} {done.get('error')}")
            calls.append(done["call_connection_id"])
    return calls


def _start(ch: Children, play_s: float, per_call: int) -> stack.Stack:
    st = stack.start(ch, sim=False, workers=WORKERS, concurrency=THREADS, extra_env={
        "CALLQ_API_KEYS": ",".join([f"flooder:{FLOODER_KEY}",
                                    *(f"bystander{k}:{bystander_key(k)}" for k in range(QUIET_CLIENTS))]),
        # The door at work (stack.py lifts its limits for the other scenarios): a flood is what it is for.
        "CALLQ_MAX_PENDING_PER_CALL": str(per_call),
        "CALLQ_CLIENT_MAX_PENDING": str(Settings().client_max_pending),
    })
    st.sim = ch.uvicorn("simulator", "bench.scenarios.flood:simulator_app", {**st.env, PLAY_ENV: str(play_s)},
                        health="/_sim/health", port=int(st.env["CALLQ_SIM_PORT"]))
    return st


def _split(s: Sample) -> dict[str, float]:
    parts = (("accept", s.accept_ms), ("to_sent", s.to_sent_ms), ("to_event", s.to_event_ms))
    split = {"client": s.client, "ms": round(s.seconds * 1000, 1),
             **{k: round(v, 1) for k, v in parts if v is not None}}
    if s.acs_plays_meanwhile is not None:
        split["acs_plays_meanwhile"] = s.acs_plays_meanwhile
    return split


def _ms(samples: list[Sample]) -> dict[str, float]:
    return summary_ms([s.seconds for s in samples])


def run(ctx: Context) -> ScenarioResult:
    flood_s, interval_s, play_s = ctx.pick(30, 2), ctx.pick(2, 0.5), ctx.pick(0.2, 0.05)
    # Each quiet client's samples that start inside the flood, after its first interval (B's first at interval_s).
    n = math.ceil(flood_s / interval_s) - 1
    per_phase = n * QUIET_CLIENTS
    # Quick mode lowers the door's per-call limit: every call fills to it, and a backlog of 100 plays per call can
    # take minutes to drain, far over quick mode's budget.
    per_call = int(ctx.pick(Settings().max_pending_per_call, QUICK_MAX_PENDING_PER_CALL))
    with ctx.children("flood") as ch:
        st = _start(ch, play_s, per_call)
        warmup = WARMUP * QUIET_CLIENTS
        rooms = stack.create_rooms(st.sim_url, CALLS + warmup + 3 * per_phase)
        a_rooms, warm, b_rooms = rooms[:CALLS], rooms[CALLS:CALLS + warmup], rooms[CALLS + warmup:]
        idle_rooms, control_rooms = b_rooms[:per_phase], b_rooms[per_phase:2 * per_phase]
        flood_rooms = b_rooms[2 * per_phase:]
        calls = _connect_calls(st.api_url, a_rooms)
        # B's clock runs in this process: its own full collections (this process has imported the whole bench)
        # would land on B's samples as pauses of tens of ms that are not callq's.
        gc.collect()
        gc.freeze()
        _bystander(st.api_url, warm, interval_s, time.monotonic())
        idle = _bystander(st.api_url, idle_rooms, interval_s, time.monotonic())
        # The control: the same again with nothing else going on. How far its p99 lands from idle's is how far two
        # p99s of this many samples differ on this machine by chance, which the flood's ratio has to be read against.
        control = _bystander(st.api_url, control_rooms, interval_s, time.monotonic())
        report, flooded, began = _run_flooder(ch, st.api_url, calls, flood_s, (flood_rooms, interval_s))
        drained_at = time.monotonic()
        ids = [cid for f in report["calls"].values() for cid in f["accepted"]]
        drain_timeout = per_call * (play_s + DRAIN_SLACK_S) + 60
        ended = _wait_until_ended(st, ids, drain_timeout)
        drain_s = time.monotonic() - drained_at
        plays, starts = _check_plays(st, report)
        flooded = with_plays_meanwhile(flooded, starts)
    return _result(report, plays, idle, flooded, began, control=control, ended=ended, drain_s=drain_s,
                   drain_timeout=drain_timeout, flood_s=flood_s, interval_s=interval_s, play_s=play_s,
                   per_call=per_call)


def _result(report: dict[str, Any], plays: dict[str, Any], idle: list[Sample], flooded: list[Sample], began: float,
            *, control: list[Sample] | None = None, ended: bool, drain_s: float, drain_timeout: float,
            flood_s: float, interval_s: float, play_s: float, per_call: int) -> ScenarioResult:
    calls = report["calls"].values()
    sent = sum(f["sent"] for f in calls)
    refused: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for f in calls:
        refused.update(f["refused"])
        other.update(f["other"])
    accepted = plays["accepted"]
    not_once = plays["not_started"] + plays["started_twice"] + plays["unknown"] + plays["unlisted_202"] + plays[
        "unreported"]
    idle_ms, flood_ms = _ms(idle), _ms(flooded)
    control_ms = _ms(control) if control else None
    clients = len({s.client for s in idle})
    b_idle, b_flood = [s for s in idle if s.client == 0], [s for s in flooded if s.client == 0]
    b_idle_ms, b_flood_ms = (_ms(b_idle), _ms(b_flood)) if b_idle and b_flood else (None, None)
    def server(samples: list[Sample], part: str) -> dict[str, float] | None:
        # None when no sample has the part: sent_at is absent from a command whose event resolved it before the
        # worker recorded the request as sent (ACS may call back before it answers), and in a short run all may be.
        values = [getattr(s, part) / 1000 for s in samples if getattr(s, part) is not None]
        return summary_ms(values) if values else None

    def part_row(metric: str, flood: dict[str, float] | None, idle: dict[str, float] | None) -> Row:
        if flood is None or idle is None:
            return Row(metric, "ms", flood["p99"] if flood else None, idle["p99"] if idle else None,
                       "the same, idle (no flood)")
        return compare(metric, "ms", flood["p99"], idle["p99"], "the same, idle (no flood)")

    idle_server, flood_server = server(idle, "server_ms"), server(flooded, "server_ms")
    idle_sent, flood_sent = server(idle, "to_sent_ms"), server(flooded, "to_sent_ms")
    idle_event, flood_event = server(idle, "to_event_ms"), server(flooded, "to_event_ms")
    seconds = report["ended"] - report["started"]
    acs_rate, ceiling = plays["started_at_acs_during_flood"] / seconds, len(report["calls"]) / play_s
    res = ScenarioResult("flood")
    res.rows = [
        compare(f"quiet clients' connect (B and {clients - 1} like it) → succeeded during A's flood, p99", "ms",
                flood_ms["p99"], idle_ms["p99"], "the same, idle (no flood)", at_most=2),
        *([compare("control: quiet clients' connect → succeeded with no flood, a second time, p99", "ms",
                   control_ms["p99"], idle_ms["p99"], "the same, idle (no flood)")] if control_ms else []),
        *([compare("client B alone: its connect → succeeded during A's flood, p99 (of its few: its slowest)", "ms",
                   b_flood_ms["p99"], b_idle_ms["p99"], "B idle (no flood)")]
          if b_flood_ms and b_idle_ms and clients > 1 else []),
        compare("quiet clients' connect → succeeded during A's flood, p50", "ms", flood_ms["p50"], idle_ms["p50"],
                "the same, idle (no flood)"),
        part_row("quiet clients' connect, its own created_at → resolved_at during the flood, p99", flood_server,
                 idle_server),
        part_row("  of which created_at → sent_at (its turn, then ACS's answer), p99", flood_sent, idle_sent),
        part_row("  of which sent_at → resolved_at (ACS's event reaching callq), p99", flood_event, idle_event),
        Row("client A: plays accepted (202) of those sent", "plays", accepted, sent, "sent",
            accepted / sent if sent else None),
        Row("client A: plays refused 429 too_many_pending", "plays", refused["too_many_pending"], sent, "sent",
            refused["too_many_pending"] / sent if sent else None),
        Row("client A: accepted plays that ended succeeded", "plays", plays["succeeded"], accepted, "accepted",
            plays["succeeded"] / accepted if accepted else None, "all", plays["succeeded"] == accepted),
        Row("client A: plays started at ACS during the flood", "plays/s", acs_rate, ceiling,
            "ACS's ceiling (one play at a time per call)", acs_rate / ceiling),
        Row("client A: plays started at ACS out of acceptance order", "plays", plays["out_of_order"], None, "",
            target="0", passed=plays["out_of_order"] == 0),
        Row("client A: accepted plays not started exactly once at ACS", "plays", not_once, None, "", target="0",
            passed=not_once == 0),
    ]
    res.latency = {"quiet clients' connect, idle": curve([s.seconds * 1000 for s in idle]),
                   **({"quiet clients' connect, idle again (control)": curve([s.seconds * 1000 for s in control])}
                      if control else {}),
                   "quiet clients' connect, during A's flood": curve([s.seconds * 1000 for s in flooded])}
    res.details = {
        "calls": len(report["calls"]), "flood_s": round(seconds, 2), "interval_s": interval_s, "play_s": play_s,
        "max_pending_per_call": per_call, "sent": sent, "accepted": accepted, "sent_per_s": round(sent / seconds, 1),
        "refused": dict(refused), "other_answers": dict(other),
        "resent": sum(f["resent"] for f in calls), "plays": plays, "all_ended": ended, "drain_s": round(drain_s, 2),
        # b_*: all the quiet clients' connects (B and its twins); b_alone_*: client B's own.
        "quiet_clients": clients, "b_idle_ms": idle_ms, "b_control_ms": control_ms, "b_flood_ms": flood_ms,
        "b_alone_idle_ms": b_idle_ms, "b_alone_flood_ms": b_flood_ms,
        "b_idle_server_ms": idle_server, "b_flood_server_ms": flood_server,
        # Each quiet client's connect, and where its time went (ms): POST → 202, the record's created_at → sent_at and
        # sent_at → resolved_at; what is left of "ms" is the long-poll's answer reaching the client.
        "b_idle_samples": [_split(s) for s in idle],
        "b_control_samples": [_split(s) for s in control or []],
        "b_flood_samples": [{"at_s": round(s.started - began, 2), **_split(s)} for s in flooded],
    }
    res.notes = [
        f"{1 + clients} clients of one stack ({WORKERS} worker processes × {THREADS} threads), the door's "
        f"CALLQ_MAX_PENDING_PER_CALL {per_call}"
        + (" (its default)" if per_call == Settings().max_pending_per_call else
           f" (quick mode only: with the default {Settings().max_pending_per_call} the backlog takes minutes to drain)")
        + f". Client A connected to {len(report['calls'])} room calls, then "
        f"for {seconds:.0f} s sent `POST /v1/calls/{{cc}}/play` to them as fast as the API answered, from a process "
        "of its own (one keep-alive connection per call; a call answered 429 waited its `Retry-After` while the "
        f"others went on): {sent:,} sent ({sent / seconds:,.0f}/s), {accepted:,} accepted, "
        f"{refused['too_many_pending']:,} refused `too_many_pending`"
        + (f", other answers {dict(other)}" if other else "") + ". "
        f"The simulator's plays last {play_s * 1000:.0f} ms here (its own 20 ms would never queue at ACS), so ACS's "
        "one media operation per call holds them back. Client B and "
        f"{clients - 1} quiet clients like it each connected to a fresh room every {interval_s:g} s, their schedules "
        f"staggered evenly within the {interval_s:g} s (one connect every {interval_s / clients * 1000:.0f} ms in "
        f"all; B alone has {len(b_idle)} connects per phase, and a p99 of so few is their slowest), each timed from "
        "sending the POST "
        "to `GET /v1/commands/{id}?wait=` answering `succeeded` (a new `http.client` connection per connect, open "
        f"loop: a slow one does not delay the next): {len(idle)} connects with no flood (after {WARMUP} warm-up "
        "each), then "
        + (f"{len(control)} more with no flood (the control: the same measurement twice, to show how far two p99s "
           "of this many samples differ here by chance), then " if control else "")
        + f"{len(flooded)} during the flood, B's first {interval_s:g} s into it. "
        f"Then A's accepted plays were left to end ({'all ended' if ended else 'NOT all ended'} "
        f"{drain_s:.0f} s after the flood, limit {drain_timeout:.0f} s), and for each call the plays listed by "
        "`GET /v1/calls/{cc}/commands` (acceptance order) were compared with the simulator's log of executed "
        "`play` requests (`GET /_sim/log?operation=play`, by `operationContext`): resolved by "
        f"{plays['resolved_by']}.",
        "ACS's play starts per 10 ms (one digit each) over the flood's middle second: "
        f"`{plays['acs_play_starts_per_10ms']['middle_s']}`; its last second: "
        f"`{plays['acs_play_starts_per_10ms']['last_s']}`. A's calls stay in step (each starts a play as its "
        "last one ends), so the machine is busy in bursts, and a quiet client's connect that lands in one shares it "
        "with them.",
    ]
    return res


if __name__ == "__main__":
    flooder_main(Path(sys.argv[1]))
