"""The command: its statuses and its typed record, as stored in the hash ``callq:cmd:{id}``.

A command moves ``queued → running → waiting → succeeded | failed`` and only forward: once terminal it never
changes status again. The hash stays flat strings (Lua reads and writes it field by field); :class:`Command` is
how Python reads it, and :func:`new_fields` how a new one is written.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar


class Status(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"  # claimed by a worker, being sent
    WAITING = "waiting"  # ACS accepted the request; its outcome is an event away
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    TERMINAL: ClassVar[frozenset[Status]]
    PENDING: ClassVar[frozenset[Status]]

    @property
    def terminal(self) -> bool:
        return self in Status.TERMINAL


Status.TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED})
Status.PENDING = frozenset(Status) - Status.TERMINAL


def is_terminal(status: str | None) -> bool:
    """For a status read raw from Redis (None: no such command)."""
    return status in Status.TERMINAL


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _json(raw: str | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:  # never written by callq; a hand-edited record must not break every read of it
        return None


def _int(raw: str | None) -> int:
    try:
        return int(raw or 0)
    except ValueError:
        return 0


@dataclass(frozen=True)
class Command:
    """A command as stored; JSON fields (params, result, error, resolved_by) decoded, '' fields as ''."""

    id: str
    type: str
    status: Status
    client: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    call_connection_id: str = ""
    room_id: str = ""
    recording_id: str = ""
    attempts: int = 0
    created_at: str = ""
    updated_at: str = ""
    sent_at: str = ""
    resolved_at: str = ""
    wait_deadline_ms: int = 0
    lease_until_ms: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    resolved_by: dict[str, Any] | None = None
    throttled: str = ""
    last_error: dict[str, Any] | None = None

    @classmethod
    def from_hash(cls, record: Mapping[str, str]) -> Command:
        params = _json(record.get("params"))
        return cls(
            id=record["id"], type=record.get("type") or "", status=Status(record["status"]),
            client=record.get("client") or "", params=params if isinstance(params, dict) else {},
            idempotency_key=record.get("idempotency_key") or "",
            call_connection_id=record.get("call_connection_id") or "", room_id=record.get("room_id") or "",
            recording_id=record.get("recording_id") or "", attempts=_int(record.get("attempts")),
            created_at=record.get("created_at") or "", updated_at=record.get("updated_at") or "",
            sent_at=record.get("sent_at") or "", resolved_at=record.get("resolved_at") or "",
            wait_deadline_ms=_int(record.get("wait_deadline")), lease_until_ms=_int(record.get("lease_until")),
            result=_json(record.get("result")), error=_json(record.get("error")),
            resolved_by=_json(record.get("resolved_by")), throttled=record.get("throttled") or "",
            last_error=_json(record.get("last_error")),
        )

    @property
    def created(self) -> datetime:
        return parse_time(self.created_at)


def new(
    *, command_id: str, client: str, type_: str, params: dict[str, Any], idempotency_key: str,
    call_connection_id: str = "", room_id: str = "", recording_id: str = "",
) -> Command:
    """A new, queued command (the accept script stores ``new_fields`` of it)."""
    now = now_iso()
    return Command(id=command_id, client=client, type=type_, status=Status.QUEUED, params=params,
                   idempotency_key=idempotency_key, call_connection_id=call_connection_id, room_id=room_id,
                   recording_id=recording_id, created_at=now, updated_at=now)


def new_fields(cmd: Command) -> dict[str, Any]:
    """The fields a new command is created with."""
    return {
        "id": cmd.id, "client": cmd.client, "type": cmd.type, "status": cmd.status.value, "attempts": cmd.attempts,
        "params": cmd.params, "idempotency_key": cmd.idempotency_key, "call_connection_id": cmd.call_connection_id,
        "room_id": cmd.room_id, "recording_id": cmd.recording_id, "created_at": cmd.created_at,
        "updated_at": cmd.updated_at,
    }


def flatten(fields: Mapping[str, Any]) -> list[str]:
    """Hash fields as an ARGV list; dicts and lists are stored as JSON, None as ''."""
    out: list[str] = []
    for name, value in fields.items():
        if isinstance(value, dict | list):
            value = json.dumps(value, separators=(",", ":"), sort_keys=True)
        out += [name, "" if value is None else str(value)]
    return out


def as_hash(fields: Mapping[str, Any]) -> dict[str, str]:
    """What ``flatten`` stores, as a mapping (what ``HGETALL`` would read back)."""
    flat = flatten(fields)
    return dict(zip(flat[::2], flat[1::2], strict=True))


def resource(cmd: Command) -> dict[str, Any]:
    """The public command resource."""
    links = {"self": f"/v1/commands/{cmd.id}"}
    if cmd.call_connection_id:
        links["call"] = f"/v1/calls/{cmd.call_connection_id}"
    return {
        "id": cmd.id,
        "type": cmd.type or None,
        "status": cmd.status.value,
        "call_connection_id": cmd.call_connection_id or None,
        "room_id": cmd.room_id or None,
        "recording_id": cmd.recording_id or None,
        "attempts": cmd.attempts,
        "created_at": cmd.created_at or None,
        "updated_at": cmd.updated_at or None,
        "sent_at": cmd.sent_at or None,
        "resolved_at": cmd.resolved_at or None,
        "result": cmd.result,
        "error": cmd.error,
        "resolved_by": cmd.resolved_by,
        "links": links,
    }
