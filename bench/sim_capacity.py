"""How many ACS requests and callbacks per second the simulator sustains on this machine.

Starts the simulator (``python -m simulator``, its own process) and a minimal callback sink in this process,
connects ``--calls`` room calls with one PSTN participant each (one shared callback URL, or one per call with
``--per-call-urls``), then drives ``--requests`` signed ACS requests
over ``--concurrency`` keep-alive connections (loopback only, stopping early after ``--max-seconds``). The mix
per round is sendDtmfTones (1 callback), get call (none) and stopContinuousDtmfRecognition (1 callback).
Prints requests/s, callbacks/s and the callback batching; asserts nothing about speed.

    .venv/bin/python bench/sim_capacity.py --requests 20000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import httpx

KEY = base64.b64encode(b"callq-simulator-bench-key").decode()
HOST = "127.0.0.1"
CALLER = "+18005550199"
ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Sink(asyncio.Protocol):
    """Answers every callback POST with 200 and counts POSTs and CloudEvents, parsing as little as possible."""

    posts = 0
    events = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            Sink.posts += 1
            Sink.events += body.count(b'"specversion"')
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # type: ignore[attr-defined]


class AcsConnection:
    """One keep-alive HTTP/1.1 connection sending HMAC-signed requests (lean: no client library per request)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.host = f"{HOST}:{port}"
        self.key = base64.b64decode(KEY)

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(HOST, self.port)

    async def request(self, method: str, target: str, body: Any = None) -> tuple[int, bytes]:
        raw = b"" if body is None else json.dumps(body).encode()
        content_hash = base64.b64encode(hashlib.sha256(raw).digest()).decode()
        date = formatdate(usegmt=True)
        to_sign = f"{method}\n{target}\n{date};{self.host};{content_hash}".encode()
        signature = base64.b64encode(hmac.new(self.key, to_sign, hashlib.sha256).digest()).decode()
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host}\r\nx-ms-date: {date}\r\n"
            f"x-ms-content-sha256: {content_hash}\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            f"Authorization: HMAC-SHA256 SignedHeaders=x-ms-date;host;x-ms-content-sha256&Signature={signature}\r\n\r\n"
        )
        self.writer.write(head.encode() + raw)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length) if length else b""

    def close(self) -> None:
        self.writer.close()


Spawn = Callable[[list[str], dict[str, str]], "subprocess.Popen[bytes]"]


def _popen(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=ROOT, env={**os.environ, **env})


async def _start_simulator(port: int, spawn: Spawn = _popen) -> subprocess.Popen[bytes]:
    env = {"CALLQ_ACS_ACCESS_KEY": KEY, "CALLQ_SIM_HOST": HOST, "CALLQ_SIM_PORT": str(port)}
    proc = spawn([sys.executable, "-m", "simulator"], env)
    deadline = time.monotonic() + 20
    async with httpx.AsyncClient(trust_env=False) as client:
        while time.monotonic() < deadline:
            try:
                if (await client.get(f"http://{HOST}:{port}/_sim/health")).status_code == 200:
                    return proc
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)  # polling the health endpoint until the deadline
    proc.terminate()
    raise SystemExit("the simulator did not become healthy within 20 s")


async def _setup_calls(admin: httpx.AsyncClient, port: int, sink_url: str, calls: int, per_call: bool) -> list[str]:
    """Rooms with a started call, a connection per room and an answered PSTN participant in each."""
    conn = AcsConnection(port)
    await conn.open()
    call_ids = []
    for i in range(calls):
        room_id = (await admin.post("/_sim/rooms", json={"pstn_dial_out_enabled": True})).json()["room_id"]
        await admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": [f"8:acs:bench_{i}"]})
        await admin.put(f"/_sim/phones/{_phone(i)}", json={"behaviour": "answer", "delay_ms": 0})
        locator = {"roomId": room_id, "kind": "roomCallLocator"}
        callback = f"{sink_url}/{i}" if per_call else sink_url
        _, body = await conn.request("POST", "/calling/callConnections:connect?api-version=2026-03-12",
                                     {"callLocator": locator, "callbackUri": callback})
        cc = json.loads(body)["callConnectionId"]
        status, _ = await conn.request("POST", f"/calling/callConnections/{cc}/participants:add?api-version=2026-03-12",
                                       {"sourceCallerIdNumber": {"value": CALLER}, "participantToAdd": _target(i)})
        assert status == 202, status
        call_ids.append(cc)
    conn.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # every phone answered once its AddParticipantSucceeded was counted
        log = (await admin.get("/_sim/callbacks", params={"outcome": "delivered"})).json()
        answered = sum(t.endswith("AddParticipantSucceeded") for d in log for t in d["types"])
        if answered >= calls:
            return call_ids
        await asyncio.sleep(0.05)  # polling until the deadline
    raise SystemExit("phones did not answer within 10 s")


def _phone(i: int) -> str:
    return f"+1604555{i:04d}"


def _target(i: int) -> dict[str, Any]:
    return {"rawId": f"4:{_phone(i)}", "phoneNumber": {"value": _phone(i)}}


async def _worker(port: int, call_ids: list[str], index: int, budget: list[int], stop_at: float,
                  statuses: Counter[int], with_events: list[int]) -> None:
    conn = AcsConnection(port)
    await conn.open()
    rounds = 0
    while budget[0] > 0 and time.monotonic() < stop_at:
        slot = (index + rounds) % len(call_ids)
        cc, target = call_ids[slot], _target(slot)
        step = rounds % 3
        rounds += 1
        budget[0] -= 1
        base = f"/calling/callConnections/{cc}"
        request: tuple[str, str, dict[str, Any] | None]
        if step == 0:
            request = ("POST", f"{base}:sendDtmfTones", {"tones": ["one", "two"], "targetParticipant": target})
        elif step == 1:
            request = ("GET", base, None)
        else:
            request = ("POST", f"{base}:stopContinuousDtmfRecognition", {"targetParticipant": target})
        method, path, body = request
        status, _ = await conn.request(method, f"{path}?api-version=2026-03-12", body)
        statuses[status] += 1
        if step != 1 and status < 300:
            with_events[0] += 1
    conn.close()


@dataclass
class Capacity:
    """What one run measured (``measure``); ``report`` prints it as the CLI always has."""

    concurrency: int
    statuses: Counter[int]
    sent_s: float
    events: int
    posts: int
    drained_s: float
    expected_events: int
    sim_requests: int
    sim_events_dropped: int

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.sent_s

    @property
    def callbacks_per_s(self) -> float:
        return self.events / self.drained_s

    def report(self) -> str:
        return "\n".join([
            f"requests:   {self.requests} in {self.sent_s:.2f} s = {self.requests_per_s:,.0f} requests/s "
            f"({self.concurrency} connections, statuses {dict(self.statuses)})",
            f"callbacks:  {self.events} events in {self.posts} POSTs by {self.drained_s:.2f} s = "
            f"{self.callbacks_per_s:,.0f} callbacks/s (expected {self.expected_events}; "
            f"{self.events / max(self.posts, 1):.1f} events per POST/JWT)",
            f"simulator:  requests {self.sim_requests}, events dropped {self.sim_events_dropped}",
        ])


async def drive(port: int, call_ids: list[str], *, requests: int, concurrency: int,
                max_seconds: float) -> tuple[Counter[int], int, float]:
    """Send the request mix to whatever ACS endpoint listens on ``port``: (statuses, requests with events, s)."""
    statuses: Counter[int] = Counter()
    with_events, budget = [0], [requests]
    started = time.monotonic()
    await asyncio.gather(*(
        _worker(port, call_ids, i, budget, started + max_seconds, statuses, with_events)
        for i in range(concurrency)))
    return statuses, with_events[0], time.monotonic() - started


async def measure(*, requests: int = 20_000, concurrency: int = 32, calls: int = 32, per_call_urls: bool = False,
                  max_seconds: float = 30.0, spawn: Spawn = _popen) -> Capacity:
    """Start the simulator (via ``spawn``) and a callback sink, drive the mix, stop both; what was measured."""
    port = _free_port()
    sink_server = await asyncio.get_running_loop().create_server(Sink, HOST, 0)
    sink_url = f"http://{HOST}:{sink_server.sockets[0].getsockname()[1]}/callbacks"
    try:
        proc = await _start_simulator(port, spawn)
        try:
            async with httpx.AsyncClient(base_url=f"http://{HOST}:{port}", trust_env=False) as admin:
                call_ids = await _setup_calls(admin, port, sink_url, calls, per_call_urls)
                before = (await admin.get("/_sim/stats")).json()
                events_before, posts_before = Sink.events, Sink.posts
                started = time.monotonic()
                statuses, with_events, sent_s = await drive(port, call_ids, requests=requests,
                                                            concurrency=concurrency, max_seconds=max_seconds)
                expected = events_before + with_events
                drain_deadline = time.monotonic() + 15
                while Sink.events < expected and time.monotonic() < drain_deadline:
                    await asyncio.sleep(0.01)  # polling the sink's counter until the deadline
                drained_s = time.monotonic() - started
                after = (await admin.get("/_sim/stats")).json()
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        sink_server.close()
    return Capacity(concurrency, statuses, sent_s, Sink.events - events_before, Sink.posts - posts_before, drained_s,
                    with_events, after["requests"] - before["requests"],
                    after["events_dropped"] - before["events_dropped"])


async def main(args: argparse.Namespace) -> None:
    capacity = await measure(requests=args.requests, concurrency=args.concurrency, calls=args.calls,
                             per_call_urls=args.per_call_urls, max_seconds=args.max_seconds)
    print(capacity.report())


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="ACS requests to send (default 20000)")
    parser.add_argument("--concurrency", type=int, default=32, help="keep-alive connections (default 32)")
    parser.add_argument("--calls", type=int, default=32, help="connected calls to spread requests over")
    parser.add_argument("--per-call-urls", action="store_true",
                        help="give every call its own callback URL (no batching across calls)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="stop sending after this long")
    return parser.parse_args()


if __name__ == "__main__":
    try:  # the simulator runs on uvloop via uvicorn; give the load generator the same footing
        from uvloop import run
    except ImportError:
        from asyncio import run  # type: ignore[assignment]
    run(main(_args()))
