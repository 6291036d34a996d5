"""Fair intake: one client's burst of requests cannot fill an API process's event loop while others wait.

An API process serves every open connection side by side. A client keeping 50 requests in flight (a retry storm,
a flood of plays) has 50 handlers taking turns on the event loop, and another client's single request takes its
turn behind all of them at every step (read, parse, the Redis round trip, the answer), so its latency grows with
the flooder's concurrency. Here, while other clients are active in this process (a write request of theirs is
here, or arrived within the last ``ACTIVE_S``), each client has at most ``CALLQ_CLIENT_MAX_IN_FLIGHT`` write
requests being handled at once; its other requests wait, in arrival order, before any work is done for them
(waiting costs the loop nothing), and the clients held back take turns as places free up. The window matters: a
client that connects a call every few seconds has a request here only now and then, and a flooder let loose in
between would have the event loop full again by its next one. A client alone is never held back: its concurrency
is what lets the accept script's pipeline batch its requests, and limiting it would only cut its throughput with
nobody to gain.

What counts: writes (POST, PUT, PATCH, DELETE) carrying ``Authorization: Bearer`` — the API's clients. Reads are
not held back (a long-poll or an event stream may stay open a minute, and must not take a write's place), nor are
ACS's and Event Grid's deliveries, which are not a client's and have their own bearer tokens.

The limit is per process. It shapes concurrency, not rate: ``CALLQ_CLIENT_ACCEPT_RATE_PER_SECOND`` and the
pending limits refuse work; this only orders it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ACTIVE_S = 5.0  # a client that sent a write this recently still counts as active


@dataclass
class _Client:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class ClientIntake:
    """Pure ASGI middleware: while clients compete, at most ``limit`` write requests of each handled at once (0: no
    limit)."""

    def __init__(self, app: ASGIApp, *, limit: int, api_keys: Iterable[str], exempt_paths: frozenset[str] = frozenset(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.limit = limit
        self.exempt_paths = exempt_paths
        self._clock = clock
        # Clients are known by a digest of their key, so no key sits in memory in the clear (as in auth.ApiKeys).
        # Only the configured keys count: a request with any other token is refused by the route at once, and must
        # not make a real client look crowded (nor grow these tables).
        self._known = frozenset(hashlib.sha256(key.encode()).digest() for key in api_keys)
        self._seen: dict[bytes, float] = {}  # when each client's last write arrived
        self._clients: dict[bytes, _Client] = {}  # the clients with a write here now

    def waiting(self) -> int:
        """Requests waiting for their turn now, over all clients."""
        return sum(len(c.waiting) for c in self._clients.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self._bearer(scope) if self.limit > 0 else None
        if token is None:
            await self.app(scope, receive, send)
            return
        key = hashlib.sha256(token).digest()
        if key not in self._known:
            await self.app(scope, receive, send)
            return
        self._seen[key] = self._clock()
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client()
        if client.waiting or self._held(key, client):
            turn = asyncio.get_running_loop().create_future()
            client.waiting.append(turn)
            try:
                await turn
            except BaseException:
                if not turn.cancelled() and turn.done():  # given its turn as it was cancelled: pass it on
                    client.running -= 1
                    self._release()
                elif turn in client.waiting:
                    client.waiting.remove(turn)
                self._forget(key, client)
                raise
        else:
            client.running += 1
        try:
            await self.app(scope, receive, send)
        finally:
            client.running -= 1
            self._forget(key, client)
            self._release()

    def _held(self, key: bytes, client: _Client) -> bool:
        """At its limit while another client is active: has a request here, or sent one within ACTIVE_S."""
        if client.running < self.limit:
            return False
        if any(k != key for k in self._clients):
            return True
        since = self._clock() - ACTIVE_S
        return any(k != key and at >= since for k, at in self._seen.items())

    def _release(self) -> None:
        # Clients held back take turns: one request each per round while any may go.
        moved = True
        while moved:
            moved = False
            for key, client in list(self._clients.items()):
                if client.waiting and not self._held(key, client):
                    turn = client.waiting.popleft()
                    client.running += 1  # counted as it is handed its turn, so the next check sees it
                    turn.set_result(None)
                    moved = True

    def _forget(self, key: bytes, client: _Client) -> None:
        if client.running == 0 and not client.waiting and self._clients.get(key) is client:
            del self._clients[key]

    def _bearer(self, scope: Scope) -> bytes | None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS or scope["path"] in self.exempt_paths:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return (token.strip() or None) if scheme.lower() == b"bearer" else None
        return None
