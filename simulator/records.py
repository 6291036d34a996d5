"""What already happened: the log of executed requests, and first responses kept for repeats."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 200_000


@dataclass(frozen=True)
class StoredResponse:
    """A response exactly as first sent, replayed for a repeated ``Repeatability-Request-ID``."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    fingerprint: str = ""  # of the request that produced it, where a repeat must match it (Rooms create)


class ResponseCache:
    """First responses by ``Repeatability-Request-ID`` (oldest forgotten beyond MAX_ENTRIES)."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()
        self._max = max_entries

    def get(self, request_id: str) -> StoredResponse | None:
        """The first response for ``request_id``, if any."""
        return self._entries.get(request_id)

    def put(self, request_id: str, response: StoredResponse) -> None:
        """Remember the first response (later ones never replace it)."""
        if request_id not in self._entries:
            self._entries[request_id] = response
            if len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (``POST /_sim/reset``)."""
        self._entries.clear()


class RequestLog:
    """Every state-changing ACS request that took effect, in order (``GET /_sim/log``)."""

    def __init__(self) -> None:
        self.entries: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)
        self.arrivals: deque[dict[str, Any]] = deque(maxlen=MAX_ENTRIES)
        self.requests_seen = 0  # every authenticated ACS request, for the benchmark's rate

    def arrived(self, method: str, path: str, rejected: int | None = None) -> None:
        """Note an authenticated request as it arrives (``GET /_sim/arrivals``), with a fault's status."""
        self.arrivals.append({"t": time.time(), "method": method, "path": path, "rejected": rejected})

    def add(self, *, method: str, path: str, operation: str, body: Any, call_connection_id: str | None,
            repeatability_id: str | None, status: int, fault: str | None) -> None:
        """Append one executed request."""
        context = body.get("operationContext") if isinstance(body, dict) else None
        self.entries.append({
            "t": time.time(),
            "method": method,
            "path": path,
            "operation": operation,
            "body": body,
            "call_connection_id": call_connection_id,
            "repeatability_id": repeatability_id,
            "operation_context": context,
            "status": status,
            "fault": fault,
        })

    def clear(self) -> None:
        """Forget everything (``POST /_sim/reset``)."""
        self.entries.clear()
        self.arrivals.clear()
        self.requests_seen = 0
