"""Create a command and enqueue its task in one atomic step; the API and the recording scheduler share it.

Both go through ``ledger.accept`` (accept.lua): the idempotency key, the command record, its place in the call's
(and recording's) order and its Celery message are written together or not at all. The scheduler's
idempotency keys are derived from the occurrence (``sched:{id}:{planned}:start``), so a step that runs
twice (a redelivered task, a second beat) gets the first command back instead of making a second.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from workers import command, keys, ledger, scripts
from workers.command import Command
from workers.ledger import Accepted, DoorLimits
from workers.operations import OPERATIONS
from workers.scripts import ScriptCall
from workers.settings import Settings

# (command type, command id) -> the broker message that runs it (tasks.publish.task_message, bound to an app)
MessageFor = Callable[[str, str], str]


@dataclass(frozen=True)
class NewCommand:
    """A command about to be accepted, with what makes a request for it "the same" as another."""

    command: Command
    fingerprint: str
    idempotency_key: str  # as the client sent it


def fingerprint(route: str, params: dict[str, Any]) -> str:
    """What makes two requests "the same": the route and the command parameters."""
    return hashlib.sha256(json.dumps({"route": route, "body": params}, sort_keys=True,
                                     separators=(",", ":")).encode()).hexdigest()


def new(
    *, client: str, type_: str, params: dict[str, Any], idempotency_key: str, route: str,
    call_connection_id: str = "", room_id: str = "", recording_id: str = "",
) -> NewCommand:
    cmd = command.new(command_id=f"cmd_{uuid.uuid4().hex}", client=client, type_=type_, params=params,
                      idempotency_key=idempotency_key, call_connection_id=call_connection_id, room_id=room_id,
                      recording_id=recording_id)
    return NewCommand(cmd, fingerprint(route, params), idempotency_key)


def door_limits(settings: Settings, type_: str) -> DoorLimits:
    """The limits a client's request for a ``type_`` command meets at the API (``CALLQ_MAX_PENDING_PER_CALL``,
    ``CALLQ_CLIENT_*``). An interrupt (hang up, cancel media, cancel an invitation) is never refused for pending
    work, only by the accept budget: it is how a client clears a call the limit holds full. A barge-in is ordered
    as an interrupt but is more media to play, not a way to clear a call: the limits hold for it."""
    budget = {"accept_rate_per_s": settings.client_accept_rate_per_s,
              "accept_burst": settings.client_accept_burst or settings.client_accept_rate_per_s}
    op = OPERATIONS[type_]
    if op.interrupts and not op.media:
        return DoorLimits(**budget)
    return DoorLimits(per_call=settings.max_pending_per_call, per_client=settings.client_max_pending, **budget)


def accept_call(settings: Settings, message_for: MessageFor, new_: NewCommand, *,
                response_json: str = "", limits: DoorLimits = ledger.NO_LIMITS) -> ScriptCall[Accepted]:
    """The accept of ``new_`` (``response_json``: the resource a replay of this request answers, if any), refused
    past ``limits`` (none by default: the scheduler's own steps are never refused; they still count as pending)."""
    cmd = new_.command
    return ledger.accept(
        idempotency_key=keys.idempotency_key(cmd.client, new_.idempotency_key), fingerprint=new_.fingerprint,
        command=command.new_fields(cmd), queue=settings.queue, message=message_for(cmd.type, cmd.id),
        response_json=response_json, idempotency_ttl_s=settings.idempotency_ttl_s,
        command_ttl_s=settings.command_ttl_s, window=settings.dispatch_window, now_ms=int(time.time() * 1000),
        limits=limits)


def accept(r: redis.Redis, settings: Settings, message_for: MessageFor, new_: NewCommand) -> Accepted:
    """Run the accept on a synchronous client (the scheduler); the API runs the same call on its pipeline."""
    return scripts.run(r, accept_call(settings, message_for, new_))
