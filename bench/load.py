"""HTTP load at a fixed number of keep-alive connections: ``wrk`` when installed, else an asyncio generator.

Every request is a POST whose body (and ``Idempotency-Key``) carries an id unique to the request, so an
idempotent endpoint never answers from its replay path. Both generators are closed-loop (a connection
sends its next request when the previous answer arrived), report throughput and the latency distribution,
and count non-2xx answers and socket errors so a misconfigured run is an error, not a figure.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from bench.procs import BenchError
from bench.stats import percentile

PERCENTILES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 97.5, 99, 99.5, 99.9)
ID_MARK = "@ID@"  # replaced by the request's unique id in the body template
MAX_ERROR_SHARE = 0.01
WRK_LUA = Path(__file__).with_name("wrk_post.lua")


@dataclass(frozen=True)
class LoadSpec:
    """What to send: ``POST url`` with these headers and a body template containing ``ID_MARK``."""

    url: str
    headers: Mapping[str, str]
    body_template: str = "{}"
    connections: int = 50
    duration_s: float = 10.0
    warmup_s: float = 2.0


@dataclass
class LoadResult:
    tool: str
    requests: int
    duration_s: float
    errors: int
    percentiles_ms: dict[float, float] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def p50_ms(self) -> float:
        return self.percentiles_ms[50]

    @property
    def p99_ms(self) -> float:
        return self.percentiles_ms[99]

    def checked(self, what: str) -> LoadResult:
        """Raise BenchError when too many answers were errors: the figure would measure the wrong thing."""
        if self.requests == 0 or self.errors > MAX_ERROR_SHARE * self.requests:
            raise BenchError(f"{what}: {self.errors} errors in {self.requests} requests ({self.tool})")
        return self

    def to_json(self) -> dict[str, object]:
        return {"tool": self.tool, "requests": self.requests, "duration_s": round(self.duration_s, 3),
                "rps": round(self.rps, 1), "errors": self.errors,
                "percentiles_ms": {str(p): round(v, 3) for p, v in self.percentiles_ms.items()}}


def run_load(spec: LoadSpec, *, prefer_wrk: bool = True) -> LoadResult:
    """Warm up, then measure; wrk when it is on PATH (and wanted), else the Python generator."""
    if prefer_wrk and shutil.which("wrk"):
        if spec.warmup_s > 0:
            _run_wrk(spec, spec.warmup_s)
        return _run_wrk(spec, spec.duration_s)
    return asyncio.run(_run_python(spec))


# --- wrk ---------------------------------------------------------------------------------------------------

def _lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for this ASCII input


def _wrk_script(spec: LoadSpec, run_id: str) -> str:
    headers = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in spec.headers.items())
    prefix = (f"RUN = {_lua_string(run_id)}\nPATH = {_lua_string(urlsplit(spec.url).path or '/')}\n"
              f"BODY = {_lua_string(spec.body_template)}\nHEADERS = {{{headers}}}\n"
              f"PERCENTILES = {{{', '.join(str(p) for p in PERCENTILES)}}}\n")
    return prefix + WRK_LUA.read_text()


def _run_wrk(spec: LoadSpec, duration_s: float) -> LoadResult:
    threads = min(2, spec.connections)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_wrk_script(spec, uuid.uuid4().hex[:12]))
    try:
        out = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(spec.connections), "-d", f"{max(1, round(duration_s))}s",
             "--timeout", "10s", "-s", script.name, spec.url],
            capture_output=True, text=True, timeout=duration_s + 60, check=False)
    finally:
        Path(script.name).unlink(missing_ok=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if out.returncode != 0 or line is None:
        raise BenchError(f"wrk failed (rc {out.returncode}): {(out.stderr or out.stdout)[-400:]}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        tool="wrk", requests=int(data["requests"]), duration_s=data["duration_us"] / 1e6,
        errors=int(data["errors"]),
        percentiles_ms={p: v / 1000 for p, v in zip(PERCENTILES, data["percentiles_us"], strict=True)})


# --- the Python fallback ----------------------------------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection, lean enough to load a server from the same 2-core machine.

    Parses only the status line and Content-Length (the servers here never chunk their answers).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request (see ``post_bytes``); its status and body."""
        self.writer.write(raw)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        self.writer.close()


def post_bytes(netloc: str, path: str, headers: Mapping[str, str], body: bytes) -> bytes:
    """A POST request on the wire."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\n{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


def _request_bytes(spec: LoadSpec, netloc: str, path: str, request_id: str) -> bytes:
    body = spec.body_template.replace(ID_MARK, request_id).encode()
    return post_bytes(netloc, path, {**spec.headers, "Idempotency-Key": request_id}, body)


async def _drive(spec: LoadSpec, index: int, stop_at: float, measure_from: float,
                 latencies: list[float], errors: list[int]) -> None:
    parts = urlsplit(spec.url)
    host, port, path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path or "/"
    conn, n, prefix = Connection(host, port), 0, f"{uuid.uuid4().hex[:8]}-{index}"
    await conn.open()
    try:
        while (start := time.perf_counter()) < stop_at:
            n += 1
            try:
                status, _ = await conn.send(_request_bytes(spec, parts.netloc, path, f"{prefix}-{n}"))
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                errors[0] += 1
                conn.close()
                await conn.open()
                continue
            if start >= measure_from:
                latencies.append(time.perf_counter() - start)
                if not 200 <= status < 300:
                    errors[0] += 1
    finally:
        conn.close()


async def _run_python(spec: LoadSpec) -> LoadResult:
    latencies: list[float] = []
    errors = [0]
    begin = time.perf_counter()
    measure_from = begin + spec.warmup_s
    stop_at = measure_from + spec.duration_s
    await asyncio.gather(*(_drive(spec, i, stop_at, measure_from, latencies, errors)
                           for i in range(spec.connections)))
    elapsed = max(time.perf_counter() - measure_from, 1e-9)
    ms = sorted(v * 1000 for v in latencies)
    return LoadResult(tool="python", requests=len(ms), duration_s=elapsed, errors=errors[0],
                      percentiles_ms={p: percentile(ms, p) for p in PERCENTILES} if ms else dict.fromkeys(
                          PERCENTILES, 0.0))


# --- several servers, measured in turns -------------------------------------------------------------------

@dataclass
class Contender:
    """One server in an interleaved comparison, with hooks around each of its rounds."""

    label: str
    spec: LoadSpec  # duration_s is per round; warmup_s is spent once, before the first round
    before_round: Callable[[], None] = lambda: None
    after_round: Callable[[LoadResult], None] = lambda load: None  # a sanity check; raises BenchError


def merged(loads: list[LoadResult]) -> LoadResult:
    """Rounds of one contender as one result: summed counts, and each percentile's median over the rounds."""
    return LoadResult(tool=loads[0].tool, requests=sum(x.requests for x in loads),
                      duration_s=sum(x.duration_s for x in loads), errors=sum(x.errors for x in loads),
                      percentiles_ms={p: statistics.median(x.percentiles_ms[p] for x in loads)
                                      for p in loads[0].percentiles_ms})


def interleave(contenders: list[Contender], *, rounds: int, prefer_wrk: bool = True) -> dict[str, LoadResult]:
    """Measure the contenders in turns (ABC ABC ...), rotating who goes first.

    The machine is shared and its background load drifts; taking turns lets every contender see the same
    drift, so their ratio stays fair even when the absolute figures move.
    """
    for c in contenders:
        if c.spec.warmup_s > 0:
            run_load(replace(c.spec, duration_s=c.spec.warmup_s, warmup_s=0), prefer_wrk=prefer_wrk)
    per_round: dict[str, list[LoadResult]] = {c.label: [] for c in contenders}
    for k in range(rounds):
        for c in contenders[k % len(contenders):] + contenders[:k % len(contenders)]:
            c.before_round()
            load = run_load(replace(c.spec, warmup_s=0), prefer_wrk=prefer_wrk).checked(c.label)
            c.after_round(load)
            per_round[c.label].append(load)
    return {label: merged(loads) for label, loads in per_round.items()}
