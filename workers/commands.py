"""Create a command and enqueue its task in one atomic step; the API and the recording scheduler share it.

Both go through ``ledger.ACCEPT_LUA``: the idempotency key, the command record, its place in the call's
(and recording's) order and its Celery message are written together or not at all. The scheduler's
idempotency keys are derived from the occurrence (``sched:{id}:{planned}:start``), so a step that runs
twice (a redelivered task, a second beat) gets the first command back instead of making a second.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from workers import keys, ledger, scripts
from workers.settings import Settings

# (command type, command id) -> the broker message that runs it (tasks.publish.task_message, bound to an app)
MessageFor = Callable[[str, str], str]


@dataclass(frozen=True)
class Accept:
    """A prepared accept: the script's keys and arguments, for a sync or an async Redis client."""

    command_id: str
    fingerprint: str
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True)
class Accepted:
    """What the script found: a new command, or the one an earlier request with this key created."""

    command_id: str
    replayed: bool
    fingerprint: str  # the stored one: differs from the request's when a key is reused for something else
    response_json: str  # the command resource as first answered, byte for byte what a replay answers

    @property
    def response(self) -> dict[str, Any]:
        return json.loads(self.response_json)  # type: ignore[no-any-return]


def fingerprint(route: str, params: dict[str, Any]) -> str:
    """What makes two requests "the same": the route and the command parameters."""
    return hashlib.sha256(json.dumps({"route": route, "body": params}, sort_keys=True,
                                     separators=(",", ":")).encode()).hexdigest()


def prepare(
    settings: Settings, message_for: MessageFor, *, client: str, type_: str, params: dict[str, Any],
    idempotency_key: str, route: str, call_connection_id: str = "", room_id: str = "", recording_id: str = "",
) -> Accept:
    """Build the command record, its public response and its Celery message, ready for ``ACCEPT_LUA``."""
    command_id = f"cmd_{uuid.uuid4().hex}"
    record = ledger.new_command(command_id=command_id, client=client, type_=type_, params=params,
                                idempotency_key=idempotency_key, call_connection_id=call_connection_id,
                                room_id=room_id, recording_id=recording_id)
    response = json.dumps(ledger.render({k: v if isinstance(v, str) else json.dumps(v) for k, v in record.items()}),
                          separators=(",", ":"))
    fp = fingerprint(route, params)
    return Accept(
        command_id=command_id,
        fingerprint=fp,
        keys=[keys.idempotency_key(client, idempotency_key), keys.command_key(command_id),
              keys.queue_key(settings.queue), keys.call_commands_key(call_connection_id) if call_connection_id else "",
              keys.recording_commands_key(recording_id) if recording_id else ""],
        args=[fp, command_id, settings.idempotency_ttl_s, settings.command_ttl_s, message_for(type_, command_id),
              response, *ledger.flatten(record)],
    )


def accepted(result: list[str]) -> Accepted:
    """Read ``ACCEPT_LUA``'s answer."""
    outcome, command_id, fp, response = result
    return Accepted(command_id=command_id, replayed=outcome == "replay", fingerprint=fp, response_json=response)


def accept(r: redis.Redis, prepared: Accept) -> Accepted:
    """Run the accept on a synchronous client (workers); the API runs the same script on its async one."""
    return accepted(scripts.run(r, ledger.ACCEPT_LUA, prepared.keys, prepared.args))
