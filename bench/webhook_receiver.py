"""The webhook scenarios' receiver: its own process, an asyncio loop that counts what arrives and answers at once.

``python -m bench.webhook_receiver PORT``. Any ``POST /hook/...`` is a delivery (its path names the endpoint); it
is answered ``200`` as soon as its last byte is read, and that instant (``time.time()``: one machine, one clock)
is its arrival. HTTP/1.1 with keep-alive, parsed by httptools on uvloop (uvicorn's parser and loop, without the
ASGI layer): the receiver must never be what a throughput figure measures.

For each delivery it notes the arrival, the ``webhook-id`` (a repeat is a duplicate), and the body's ``seq`` per
(endpoint, lane), where the lane is what callq orders by (the call connection id, else ``cmd:{id}``): a seq that is
not the lane's previous one plus one counts as out of order. Every ``verify_every``-th delivery's signature is
checked with ``standardwebhooks`` against the endpoint's secret.

Control routes, for the suite (each on its own connection; one request at a time on it):

* ``GET /healthz``
* ``POST /reset`` ``{"secrets": {path: secret}, "verify_every": N}``: a new tally
* ``GET /wait?count=N&timeout=S``: answers once N deliveries arrived (or at the timeout) with the tally
* ``GET /command?id=CMD&timeout=S``: answers once a delivery about command CMD arrived: its arrival and body
"""

from __future__ import annotations

import asyncio
import http.client
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httptools
import uvloop
from standardwebhooks import Webhook, WebhookVerificationError

from bench.procs import HOST, BenchError, Children, Server, free_port

OK = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
WEBHOOK_HEADERS = (b"webhook-id", b"webhook-timestamp", b"webhook-signature")


@dataclass
class Tally:
    """What arrived since the last reset."""

    verify_every: int = 0
    verifiers: dict[str, Webhook] = field(default_factory=dict)
    count: int = 0
    first: float = 0.0
    last: float = 0.0
    times: list[float] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    duplicates: int = 0
    lanes: dict[tuple[str, str], int] = field(default_factory=dict)  # (path, lane) -> last seq
    out_of_order: int = 0
    verified: int = 0
    invalid: int = 0
    commands: dict[str, tuple[float, bytes]] = field(default_factory=dict)  # command id -> (arrival, body)

    def add(self, at: float, path: str, headers: dict[str, str], body: bytes) -> None:
        self.count += 1
        self.first = self.first or at
        self.last = at
        self.times.append(at)
        wid = headers.get("webhook-id", "")
        if wid in self.ids:
            self.duplicates += 1
        self.ids.add(wid)
        doc = json.loads(body)
        data = doc.get("data") or {}
        command = data.get("command") or {}
        lane = data.get("call_connection_id") or f"cmd:{command.get('id')}"
        previous = self.lanes.get((path, lane), 0)
        if data.get("seq") != previous + 1:
            self.out_of_order += 1
        self.lanes[(path, lane)] = max(previous, int(data.get("seq") or 0))
        if command.get("id"):
            self.commands[command["id"]] = (at, body)
        if self.verify_every and self.count % self.verify_every == 0:
            self._verify(path, headers, body)

    def _verify(self, path: str, headers: dict[str, str], body: bytes) -> None:
        verifier = self.verifiers.get(path)
        try:
            if verifier is None:
                raise WebhookVerificationError(f"no secret for {path}")
            verifier.verify(body, headers, json_parse=False)
            self.verified += 1
        except WebhookVerificationError:
            self.invalid += 1

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "first": self.first, "last": self.last, "times": self.times,
                "duplicates": self.duplicates, "lanes": len(self.lanes), "out_of_order": self.out_of_order,
                "verified": self.verified, "invalid": self.invalid}


class _State:
    def __init__(self) -> None:
        self.tally = Tally()
        self.waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self.answering: set[asyncio.Task[None]] = set()  # control requests in progress (the loop holds tasks weakly)

    def arrived(self) -> None:
        """Wake the control requests whose condition now holds (there is rarely more than one)."""
        if self.waiters:
            for done, future in self.waiters:
                if not future.done() and done():
                    future.set_result(None)

    async def until(self, done: Callable[[], bool], timeout_s: float) -> bool:
        """Whether ``done()`` came true within ``timeout_s`` (checked at each arrival)."""
        if done():
            return True
        waiter = (done, asyncio.get_running_loop().create_future())
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout_s)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiters.remove(waiter)


class _Connection(asyncio.Protocol):
    """One client connection: httptools calls the ``on_*`` methods as it parses."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.url = b""
        self.headers: dict[str, str] = {}
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one in all but its class

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.url, self.headers, self.body = b"", {}, []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in WEBHOOK_HEADERS:
            self.headers[name.decode()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        at = time.time()
        assert self.transport is not None
        url = self.url.decode()
        keep_alive = self.parser.should_keep_alive()
        if url.startswith("/hook/"):
            self.transport.write(OK)
            self.state.tally.add(at, url, self.headers, b"".join(self.body))
            self.state.arrived()
        else:
            task = asyncio.get_running_loop().create_task(self._control(url, b"".join(self.body), keep_alive))
            self.state.answering.add(task)
            task.add_done_callback(self.state.answering.discard)
            return
        if not keep_alive:
            self.transport.close()

    async def _control(self, url: str, body: bytes, keep_alive: bool) -> None:
        assert self.transport is not None
        status, answer = await _control(self.state, url, body)
        payload = json.dumps(answer).encode()
        self.transport.write(f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: "
                             f"{len(payload)}\r\n\r\n".encode() + payload)
        if not keep_alive:
            self.transport.close()


async def _control(state: _State, url: str, body: bytes) -> tuple[int, Any]:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    if parts.path == "/healthz":
        return 200, {"ok": True}
    if parts.path == "/reset":
        config = json.loads(body or b"{}")
        state.tally = Tally(verify_every=int(config.get("verify_every", 0)),
                            verifiers={path: Webhook(secret) for path, secret in config.get("secrets", {}).items()})
        return 200, {"ok": True}
    timeout_s = float(query.get("timeout", "30"))
    if parts.path == "/wait":
        wanted = int(query["count"])
        await state.until(lambda: state.tally.count >= wanted, timeout_s)
        return 200, state.tally.summary()
    if parts.path == "/command":
        cid = query["id"]
        if not await state.until(lambda: cid in state.tally.commands, timeout_s):
            return 404, {"error": f"no delivery about {cid} within {timeout_s:g} s"}
        at, raw = state.tally.commands[cid]
        return 200, {"at": at, "body": json.loads(raw)}
    return 404, {"error": f"no route {parts.path}"}


async def serve(port: int) -> None:
    state = _State()
    server = await asyncio.get_running_loop().create_server(lambda: _Connection(state), HOST, port, backlog=1024)
    async with server:
        await server.serve_forever()


# --- the suite's side -------------------------------------------------------------------------------------


class Receiver:
    """The running receiver process, and its control routes over one keep-alive connection."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self._conn = http.client.HTTPConnection(f"{HOST}:{server.port}", timeout=600)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        self._conn.request(method, path, body=None if body is None else json.dumps(body).encode())
        resp = self._conn.getresponse()
        raw = resp.read()
        if resp.status != 200:
            raise BenchError(f"webhook receiver {path}: HTTP {resp.status} {raw[:200]!r}")
        return json.loads(raw)

    def hook_url(self, path: str) -> str:
        return f"{self.url}/hook/{path}"

    def reset(self, *, secrets: dict[str, str], verify_every: int) -> None:
        """Start a new tally; ``secrets`` by the path part after ``/hook/``."""
        self._call("POST", "/reset", {"secrets": {f"/hook/{p}": s for p, s in secrets.items()},
                                      "verify_every": verify_every})

    def wait(self, count: int, *, timeout_s: float) -> dict[str, Any]:
        """The tally once ``count`` deliveries arrived; raises BenchError when fewer did within ``timeout_s``."""
        tally: dict[str, Any] = self._call("GET", f"/wait?count={count}&timeout={timeout_s}")
        if tally["count"] < count:
            raise BenchError(f"the receiver got {tally['count']} of {count} deliveries within {timeout_s:g} s")
        return tally

    def command(self, command_id: str, *, timeout_s: float) -> tuple[float, dict[str, Any]]:
        """When the delivery about this command arrived (time.time()), and its body."""
        got = self._call("GET", f"/command?id={command_id}&timeout={timeout_s}")
        return float(got["at"]), got["body"]

    def close(self) -> None:
        self._conn.close()


def start(ch: Children) -> Receiver:
    """Start the receiver in its own process (stopped with the scenario's other children)."""
    port = free_port()
    proc = ch.spawn("webhook-receiver", [sys.executable, "-m", "bench.webhook_receiver", str(port)])
    receiver = Receiver(Server("webhook-receiver", f"http://{HOST}:{port}", port, proc, "/healthz", ch).ready())
    ch.on_close(receiver.close)
    return receiver


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
