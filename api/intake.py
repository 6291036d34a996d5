"""Fair intake: one client's burst of requests cannot fill an API process's event loop.

An API process serves every open connection side by side. A client keeping 20 requests in flight (a retry storm,
a flood of plays) would have 20 handlers taking turns on the event loop, and another client's single request
would take its turn behind all of them at every step (read, parse, the Redis round trip, the answer), so its
latency would grow with the flooder's concurrency. Here each client has at most ``CALLQ_CLIENT_MAX_IN_FLIGHT``
write requests being handled at once in this process; the rest of its requests wait, in arrival order, before any
work is done for them (waiting costs the loop nothing). A client with one request never waits.

What counts: writes (POST, PUT, PATCH, DELETE) carrying ``Authorization: Bearer`` — the API's clients. Reads are
not held back (a long-poll or an event stream may stay open a minute, and must not take a write's place), nor are
ACS's and Event Grid's deliveries, which are not a client's and have their own bearer tokens.

The limit is per process: with N uvicorn workers a client may have N × the limit in flight. It shapes concurrency,
not rate: ``CALLQ_CLIENT_ACCEPT_RATE_PER_SECOND`` and the pending limits refuse work; this only orders it.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class _Slots:
    free: asyncio.Semaphore
    users: int = field(default=0)  # requests holding or waiting for a slot; at 0 the entry is dropped


class ClientIntake:
    """Pure ASGI middleware: at most ``limit`` write requests of one client handled at once (0: no limit)."""

    def __init__(self, app: ASGIApp, *, limit: int, exempt_paths: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.limit = limit
        self.exempt_paths = exempt_paths
        # By a digest of the bearer token, so no key sits in memory in the clear (as in auth.ApiKeys); an entry
        # lives while its client has a request here, so unknown tokens cannot grow the table.
        self._clients: dict[bytes, _Slots] = {}

    def waiting(self) -> int:
        """Requests waiting for a slot now, over all clients (tests, and a future gauge)."""
        return sum(max(0, s.users - self.limit) for s in self._clients.values())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = self._bearer(scope) if self.limit > 0 else None
        if token is None:
            await self.app(scope, receive, send)
            return
        client = hashlib.sha256(token).digest()
        slots = self._clients.get(client)
        if slots is None:
            slots = self._clients[client] = _Slots(asyncio.Semaphore(self.limit))
        slots.users += 1
        try:
            async with slots.free:
                await self.app(scope, receive, send)
        finally:
            slots.users -= 1
            if slots.users == 0:
                del self._clients[client]

    def _bearer(self, scope: Scope) -> bytes | None:
        if scope["type"] != "http" or scope["method"] not in WRITE_METHODS or scope["path"] in self.exempt_paths:
            return None
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                return (token.strip() or None) if scheme.lower() == b"bearer" else None
        return None
