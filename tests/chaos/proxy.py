"""A small TCP proxy for the failover chaos: a slow replication link, or a managed service's one endpoint.

* **Lag**: the replica replicates through it (``REPLICAOF 127.0.0.1 <proxy port>``), and every byte the primary
  sends reaches the replica ``delay_s`` later; the replica's acknowledgements go back at once. So at any moment
  the primary has acknowledged writes the replica has not received yet (``queued_bytes`` counts them), and when
  the primary dies they are gone with it: the proxy drops what it still holds, as a crashed primary's unsent
  buffers are lost.
* **Endpoint**: callq's ``CALLQ_REDIS_URL`` names the proxy, which forwards to whichever server is behind it;
  ``retarget`` cuts every open connection and sends new ones to another server, as a managed Redis endpoint does
  when it fails over (clients see closed connections and reconnect).

It runs its own event loop in a daemon thread, so it does not depend on the test's threads being responsive.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Coroutine
from typing import Any, TypeVar

from tests.conftest import free_port

T = TypeVar("T")
CHUNK = 65536


class _Link:
    """One client connection and its connection to the server; closing either side closes both."""

    def __init__(self, proxy: TcpProxy, client: asyncio.StreamWriter) -> None:
        self.proxy, self.client = proxy, client
        self.server: asyncio.StreamWriter | None = None
        self.line: deque[tuple[float, bytes]] = deque()  # the delay line: (when due, bytes), oldest first
        self.queued = 0
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy.queued -= self.queued  # what the delay line still held is never delivered
        self.line.clear()
        self.queued = 0
        for writer in (self.client, self.server):
            if writer is not None:
                writer.close()
        self.proxy.links.discard(self)


class TcpProxy:
    """Forward 127.0.0.1:``port`` to 127.0.0.1:``target``; server-to-client bytes are held ``delay_s``."""

    def __init__(self, target: int, *, delay_s: float = 0.0) -> None:
        self.target, self.delay_s = target, delay_s
        self.port = free_port()
        self.links: set[_Link] = set()
        self.queued = 0  # bytes received from servers and not yet delivered to clients, over all links
        self.connections = 0  # connections forwarded since start
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name=f"proxy-{self.port}")
        self._server: asyncio.Server | None = None

    def start(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", self.port))
        return self

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for link in list(self.links):
                link.close()
            # Closed links end their pumps: let every task finish, so none is left pending and no transport unclosed
            # when the loop closes (either would warn, and the suite turns warnings into errors). A bounded wait;
            # cancelling a connection's handler instead makes asyncio's streams log an error for it.
            pending = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
            if pending:
                _, stuck = await asyncio.wait(pending, timeout=5)
                for task in stuck:
                    task.cancel()
            if self._server is not None:
                await self._server.wait_closed()
        self._call(stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def retarget(self, target: int) -> None:
        """Point new connections at ``target`` and cut the open ones (their clients reconnect, and land there)."""
        async def switch() -> None:
            self.target = target
            for link in list(self.links):
                link.close()
        self._call(switch())

    def queued_bytes(self) -> int:
        """Bytes the servers sent that are still in the delay line (read from another thread: one int)."""
        return self.queued

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(self, writer)
        self.links.add(link)
        try:
            server_reader, link.server = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            link.close()  # nothing listens there (the server was killed): the client sees its connection close
            return
        if link.closed:  # retargeted while connecting: this connection belongs to the old server
            link.server.close()
            return
        self.connections += 1
        pumps = [asyncio.ensure_future(self._pump(reader, link.server, link)),
                 asyncio.ensure_future(self._delayed(server_reader, link))]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        link.close()
        for pump in pumps:
            pump.cancel()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link) -> None:
        """Client to server, as it comes."""
        with contextlib.suppress(OSError):
            while not link.closed and (data := await reader.read(CHUNK)):
                writer.write(data)
                await writer.drain()

    async def _delayed(self, reader: asyncio.StreamReader, link: _Link) -> None:
        """Server to client through the delay line: each chunk leaves ``delay_s`` after it arrived, in order."""
        if self.delay_s <= 0:
            await self._pump(reader, link.client, link)
            return
        loop = asyncio.get_running_loop()
        arrived = asyncio.Event()

        async def deliver() -> None:
            while not link.closed:
                if not link.line:
                    arrived.clear()
                    await arrived.wait()
                    continue
                due, data = link.line[0]
                # The injected lag itself (not synchronisation): hold the oldest chunk until it is due.
                await asyncio.sleep(max(0.0, due - loop.time()))  # sleep-ok: the lag this proxy injects
                if link.closed or not link.line:
                    return
                link.line.popleft()
                link.queued -= len(data)
                self.queued -= len(data)
                link.client.write(data)
                await link.client.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            with contextlib.suppress(OSError):
                while not link.closed and (data := await reader.read(CHUNK)):
                    link.line.append((loop.time() + self.delay_s, data))
                    link.queued += len(data)
                    self.queued += len(data)
                    arrived.set()
        finally:
            # The server closed (killed): the link closes at once and the delay line's bytes are dropped.
            sender.cancel()
