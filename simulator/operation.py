"""What an ACS operation handler gets and returns, and the lookups most handlers start with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .errors import call_not_established, call_not_found, invalid_request
from .model import Connection, ServerCall
from .world import Sim


@dataclass(frozen=True)
class Req:
    """One parsed ACS request: ids from the path, the JSON body (``{}`` when empty), the query."""

    call_connection_id: str | None = None
    recording_id: str | None = None
    participant_raw_id: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """A success: status and JSON body (None = empty), plus the connection it concerned for the log."""

    status: int
    body: dict[str, Any] | None = None
    call_connection_id: str | None = None


def find_connection(sim: Sim, cc: str | None) -> Connection:
    """The live connection ``cc``; 404/8522 when unknown or already disconnected (as ACS)."""
    conn = sim.store.connections.get(cc or "")
    if conn is None or conn.closed:
        raise call_not_found()
    return conn


def connected(sim: Sim, cc: str | None) -> tuple[Connection, ServerCall]:
    """The connection and its call, which must be established (400/8501 while still connecting)."""
    conn = find_connection(sim, cc)
    if conn.state != "connected" or conn.call is None:
        raise call_not_established()
    return conn, conn.call


def optional_str(body: dict[str, Any], key: str) -> str | None:
    """A string field, or None when absent; 400/8523 when present with another type."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid_request(f"{key} must be a string")
    return value


def callback_url(body: dict[str, Any], key: str, *, required: bool = False) -> str | None:
    """An http(s) callback URL field (real ACS insists on https; the simulator must take http too)."""
    value = optional_str(body, key)
    if value is None or value == "":
        if required:
            raise invalid_request(f"The field {key} is required")
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise invalid_request(f"The field {key} is invalid")
    return value
