"""A tiny in-process callback receiver: the e2e baseline's stand-in for an app that calls the SDK itself.

An asyncio server on its own thread answers every POST with 200 and notes when each call's CallConnected
arrived; no JWT check (a hand-rolled app might skip it; callq never does).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

from bench.procs import HOST


class _Protocol(asyncio.Protocol):
    def __init__(self, receiver: CallbackReceiver) -> None:
        self.receiver = receiver
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (head_end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4:head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length:]
            self.receiver.received(body)
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")  # type: ignore[attr-defined]


class CallbackReceiver:
    """``with CallbackReceiver() as rx: ... rx.wait_connected(call_connection_id, timeout_s)``."""

    def __init__(self) -> None:
        self._connected: dict[str, float] = {}
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-callbacks", daemon=True)
        self.url = ""

    def __enter__(self) -> CallbackReceiver:
        self._thread.start()
        server = asyncio.run_coroutine_threadsafe(
            self._loop.create_server(lambda: _Protocol(self), HOST, 0), self._loop).result(timeout=10)
        self._server = server
        self.url = f"http://{HOST}:{server.sockets[0].getsockname()[1]}/callbacks"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def received(self, body: bytes) -> None:
        now = time.perf_counter()
        events = json.loads(body)
        with self._cond:
            for event in events if isinstance(events, list) else [events]:
                if str(event.get("type", "")).endswith("CallConnected"):
                    self._connected[event["data"]["callConnectionId"]] = now
            self._cond.notify_all()

    def wait_connected(self, call_connection_id: str, timeout_s: float) -> float | None:
        """When (perf_counter) this call's CallConnected arrived, waiting up to ``timeout_s``; None if never."""
        with self._cond:
            self._cond.wait_for(lambda: call_connection_id in self._connected, timeout=timeout_s)
            return self._connected.get(call_connection_id)
