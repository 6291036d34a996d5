"""Command records as tests write them straight into Redis (what accept.lua would store)."""

from __future__ import annotations

from typing import Any

from workers import command


def new_command(*, command_id: str, client: str, type_: str, params: dict[str, Any], idempotency_key: str,
                **where: str) -> dict[str, Any]:
    """The fields of a new queued command (``where``: call_connection_id, room_id, recording_id)."""
    return command.new_fields(command.new(command_id=command_id, client=client, type_=type_, params=params,
                                          idempotency_key=idempotency_key, **where))
