"""The public JSON resources, rendered from the typed records (links point at this API's ``/v1`` routes)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from workers.command import Command

_COMPACT = json.JSONEncoder(separators=(",", ":"))


def command(cmd: Command) -> dict[str, Any]:
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
        "resolved_at": cmd.resolved_at or None,
        "result": cmd.result,
        "error": cmd.error,
        "resolved_by": cmd.resolved_by,
        "links": links,
    }


def command_record(record: Mapping[str, str]) -> dict[str, Any]:
    """The public command resource of a stored command hash."""
    return command(Command.from_hash(record))


def command_json(cmd: Command) -> str:
    return _COMPACT.encode(command(cmd))
