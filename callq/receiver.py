"""A webhook receiver for the demo, the tests, the benchmark and the chaos runs: it verifies every delivery's
signature with ``callq.webhooks.verify_webhook`` and keeps what it received, in arrival order.

What it answers is up to its ``answer`` function (200 by default), so a test can make it fail, throttle, go
slow or answer 410; ``go_down()`` and ``come_back()`` take it off the network and back on the same port. It runs on
the standard library's threading HTTP server (HTTP/1.1 keep-alive), in a thread.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from callq.webhooks import WebhookVerificationError, verify_webhook


@dataclass(frozen=True)
class Delivery:
    """One POST as received: its webhook-id, parsed body, whether its signature verified, what was answered."""

    id: str
    type: str
    seq: int
    lane: str  # the call connection id, else room:{id}, else the id of what it is about
    body: dict[str, Any]
    valid: bool
    status: int
    headers: dict[str, str] = field(repr=False)
    received_at: float = field(default=0.0, repr=False)  # wall clock, when its answer was decided


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def lane_of(body: dict[str, Any]) -> str:
    data = body.get("data") or {}
    if data.get("call_connection_id") and body.get("type") != "room.event":
        return str(data["call_connection_id"])
    if data.get("room_id"):
        return f"room:{data['room_id']}"
    if "command" in data:
        return f"cmd:{data['command'].get('id')}"
    return "test"


class Receiver:
    """``with Receiver(secret) as rx: ...`` serves on ``rx.url`` until the block ends."""

    def __init__(self, secrets: list[str] | str | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 answer: Callable[[Delivery], Answer] | None = None) -> None:
        self.secrets = [secrets] if isinstance(secrets, str) else list(secrets or [])
        self.answer = answer or (lambda _d: Answer())
        self._lock = threading.Lock()
        self._received: list[Delivery] = []
        self._changed = threading.Condition(self._lock)
        self._connections: set[socket.socket] = set()
        self._live = threading.Event()  # set while listening; each listening gets its own
        self._server, self._thread = self._listen(host, port)

    def _listen(self, host: str, port: int) -> tuple[ThreadingHTTPServer, threading.Thread]:
        receiver, live = self, self._live

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with receiver._lock:  # go_down clears `live` under this lock: a connection is cut either way
                    if live.is_set():
                        receiver._connections.add(self.connection)
                    else:
                        _cut(self.connection)

            def finish(self) -> None:
                with receiver._lock:
                    receiver._connections.discard(self.connection)
                super().finish()

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:  # cut mid-request: it never fully arrived
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._serve(self, raw, headers)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: tests read what was received, not access logs

        server = ThreadingHTTPServer((host, port), Handler)  # SO_REUSEADDR: the same port again after go_down
        server.daemon_threads = True
        return server, threading.Thread(target=server.serve_forever, name="callq-receiver", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks"

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def __enter__(self) -> Receiver:
        self._live.set()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.go_down()

    def go_down(self) -> None:
        """Stop listening (a new connection is refused) and cut every open one, as a crashed receiver would; a
        request being answered meanwhile is recorded as answered, but its answer never reaches the sender."""
        if not self._live.is_set():
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            self._live.clear()
            cut, self._connections = list(self._connections), set()
        for conn in cut:
            _cut(conn)

    def come_back(self) -> None:
        """Listen again, on the same address and port."""
        if self._live.is_set():
            return
        host, port = self._server.server_address[:2]
        self._live = threading.Event()
        self._server, self._thread = self._listen(str(host), int(port))
        self._live.set()
        self._thread.start()

    def _serve(self, handler: BaseHTTPRequestHandler, raw: bytes, headers: dict[str, str]) -> None:
        valid = False
        for secret in self.secrets:
            try:
                verify_webhook(headers, raw, secret)
                valid = True
                break
            except WebhookVerificationError:
                continue
        try:
            body = json.loads(raw)
        except ValueError:
            body = {}
        data = body.get("data") or {}
        pending = Delivery(id=headers.get("webhook-id", ""), type=str(body.get("type", "")),
                           seq=int(data.get("seq") or 0), lane=lane_of(body), body=body, valid=valid, status=0,
                           headers=headers)
        answer = self.answer(pending)
        with self._changed:
            self._received.append(Delivery(**{**pending.__dict__, "status": answer.status,
                                              "received_at": time.time()}))
            self._changed.notify_all()
        try:
            handler.send_response(answer.status)
            for name, value in answer.headers.items():
                handler.send_header(name, value)
            handler.send_header("content-length", "0")
            handler.end_headers()
        except OSError:  # the sender gave up (its timeout) or go_down cut the connection: it never hears the answer
            handler.close_connection = True

    @property
    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self._received)

    def accepted(self) -> list[Delivery]:
        """The deliveries answered 2xx."""
        return [d for d in self.received if 200 <= d.status < 300]

    def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout_s: float) -> list[Delivery]:
        """Block until ``predicate(received)`` holds (or raise TimeoutError after ``timeout_s``)."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(list(self._received)), timeout=timeout_s):
                raise TimeoutError(f"the receiver did not get what was expected within {timeout_s} s "
                                   f"({len(self._received)} deliveries so far)")
            return list(self._received)


def _cut(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by its sender
