"""The command ledger: command records in Redis are the truth; idempotency keys point at them.

Every move that matters for exactly-once is one Lua script (``workers/lua/``), so it is atomic whichever
process runs it; each script has one typed function here returning a ``scripts.ScriptCall``:

* ``accept``: record the idempotency key, create the command and queue its Celery message, or park it in its
  call's lane (accept.lua);
* ``transition``: move a command forward only from a non-terminal status (transition.lua, lib.lua);
* ``claim``: read a command, check its turn on the call, pay the ACS budget and claim it (claim.lua);
* ``sent``: record what ACS answered and move running → waiting | succeeded (sent.lua);
* ``reconciled``: settle a wait from a read of ACS (reconciled.lua);
* ``kick``: hand the call's parked commands their turn (kick.lua); ``due``: waits past their deadline;
* ``enqueue`` / ``dispatch``: the fair dispatch of runnable work to the broker (enqueue.lua, dispatch.lua).

A terminal move is announced on one pub/sub channel for long-polling API requests (``announced``).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from workers import keys, scripts
from workers.command import Command, Status, flatten, now_iso
from workers.operations import OPERATIONS
from workers.scripts import ScriptCall

SWEEP_GRACE_MS = 30_000  # the sweeper leaves a new command alone this long: its own message should run it


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(flat: Sequence[Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


# --- accept ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DoorLimits:
    """What a new command is checked against before anything is written (0: no limit)."""

    per_call: int = 0  # commands of one call accepted and not yet ended
    per_client: int = 0  # commands of one client accepted and not yet ended
    accept_rate_per_s: int = 0  # the client's accept budget: this many a second...
    accept_burst: int = 0  # ... and this many at once


NO_LIMITS = DoorLimits()


@dataclass(frozen=True)
class Accepted:
    """What the accept found: a new command, the one an earlier request with this key created, or a refusal."""

    command_id: str
    replayed: bool
    fingerprint: str  # the stored one: differs from the request's when a key is reused for something else
    response_json: str  # the command resource as first answered ('' when the accepting caller kept none)
    refused: str = ""  # the stable code of the limit the command met ('' when it was not refused)
    refused_by: str = ""  # whose limit: "call" or "client"
    retry_after_ms: int = 0
    cut: tuple[dict[str, str], ...] = ()  # the records of the unsent media operations an interrupt ended

    @property
    def response(self) -> dict[str, Any]:
        parsed = json.loads(self.response_json) if self.response_json else {}
        return parsed if isinstance(parsed, dict) else {}

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Accepted:
        if _s(reply[0]) == "refused":
            return cls(command_id="", replayed=False, fingerprint="", response_json="", refused=_s(reply[1]),
                       retry_after_ms=int(reply[2]), refused_by=_s(reply[3]))
        outcome, command_id, fp, response = (_s(x) for x in reply[:4])
        return cls(command_id=command_id, replayed=outcome == "replay", fingerprint=fp, response_json=response,
                   cut=tuple(_record(flat) for flat in reply[4:]))


def _cuts(type_: str, command_id: str) -> tuple[str, str]:
    """What a ``type_`` command cuts as it is accepted (Operation.cuts_media), and the error of what it cuts."""
    op = OPERATIONS.get(type_)
    if op is None or not op.cuts_media:
        return "", ""
    return op.cuts_media, json.dumps({"code": "interrupted", "by": command_id,
                                      "message": f"{type_} {command_id} was accepted before callq sent this media "
                                                 "operation, so it was not sent."}, separators=(",", ":"),
                                     sort_keys=True)


def accept(
    *, idempotency_key: str, fingerprint: str, command: Mapping[str, Any], queue: str, message: str, response_json: str,
    idempotency_ttl_s: int, command_ttl_s: int, window: int, now_ms: int, limits: DoorLimits = NO_LIMITS,
) -> ScriptCall[Accepted]:
    """Create ``command`` (its fields, see ``command.new_fields``) and queue ``message`` for ``queue`` (through the
    fair dispatch, ``window`` at a time; or parked in its call's lane until its turn); or, when ``idempotency_key``
    (the full Redis key) is known already, the command it names; or, past ``limits``, nothing."""
    cid, cc, rec = str(command["id"]), str(command.get("call_connection_id") or ""), str(
        command.get("recording_id") or "")
    client, type_ = str(command.get("client") or ""), str(command.get("type") or "")
    rate = limits.accept_rate_per_s
    return scripts.call(
        "accept",
        [idempotency_key, keys.command_key(cid), keys.queue_key(queue),
         keys.call_commands_key(cc) if cc else "", keys.recording_commands_key(rec) if rec else "",
         keys.call_pending_key(cc) if cc else "", keys.client_pending_key(client),
         keys.client_accept_budget_key(client) if rate > 0 else "", keys.call_lane_key(cc) if cc else "",
         keys.call_interrupts_key(cc) if cc and type_ in _interrupt_types() else ""],
        [fingerprint, cid, idempotency_ttl_s, command_ttl_s, message, response_json, SWEEP_GRACE_MS,
         limits.per_call, limits.per_client, 1000 / rate if rate > 0 else 0, max(limits.accept_burst, 1),
         window, client, type_, *lane_args(now_ms), now_iso(), *_cuts(type_, cid), *flatten(command)],
        Accepted.parse)


# --- transitions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Moved:
    """A transition's answer: ``applied`` (status is the new one), ``terminal``/``skipped`` (status is the current
    one) or ``missing``; ``record`` is the whole record when the move applied and ended the command."""

    outcome: Literal["applied", "terminal", "skipped", "missing"]
    status: str
    record: dict[str, str] | None = None

    @property
    def applied(self) -> bool:
        return self.outcome == "applied"

    @property
    def finished(self) -> dict[str, str] | None:
        """The record of a command this move ended (count it: only one transition to terminal applies)."""
        return self.record if self.applied else None

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Moved:
        outcome = _s(reply[0])
        assert outcome in ("applied", "terminal", "skipped", "missing"), outcome
        record = _record(reply[2]) if len(reply) > 2 else None
        return cls(outcome, _s(reply[1]), record)  # type: ignore[arg-type]  # narrowed by the assert above


def transition(command_id: str, to: Status, fields: Mapping[str, Any], *, only_from: tuple[Status, ...] = (),
               attempts_by: int = 0) -> ScriptCall[Moved]:
    """Move a command to ``to`` from a non-terminal status (only from ``only_from`` when given), setting ``fields``
    (and ``lease_until`` 0) and adding ``attempts_by`` to its attempts in the same step."""
    return scripts.call(
        "transition", [keys.command_key(command_id)],
        [command_id, to.value, ",".join(s.value for s in only_from), now_iso(), attempts_by,
         *flatten({**fields, "lease_until": 0})],
        Moved.parse)


def reconciled(cmd: Command, to: Status, fields: Mapping[str, Any]) -> ScriptCall[Moved]:
    """Settle a waiting command from a read of ACS; the call record learns what the read says of the call."""
    op = OPERATIONS[cmd.type]
    state = op.call_state_on_success or ""
    result = fields.get("result")
    server_call_id = str(result.get("server_call_id") or "") if isinstance(result, dict) else ""
    return scripts.call(
        "reconciled", [keys.command_key(cmd.id)],
        [cmd.id, to.value, now_iso(), cmd.call_connection_id, state, server_call_id,
         *flatten({**fields, "lease_until": 0})],
        Moved.parse)


@dataclass(frozen=True)
class SentTo:
    """Where ACS's answer to a send goes besides the command: the call it made, the recording it started."""

    call_made: str = ""
    recording_id: str = ""


def sent(cmd: Command, to: Status, fields: Mapping[str, Any], *, made: SentTo, ttl_s: int,
         wait_deadline_ms: int) -> ScriptCall[Moved]:
    """Record ACS's answer to the command's request and move running → ``to`` (waiting or succeeded)."""
    call, rec, own = made.call_made, made.recording_id, cmd.call_connection_id
    return scripts.call(
        "sent",
        [keys.command_key(cmd.id),
         keys.call_key(call) if call else "", keys.call_commands_key(call) if call else "",
         keys.room_call_key(cmd.room_id) if call and cmd.room_id else "",
         keys.recording_key(rec) if rec else "", keys.recording_commands_key(rec) if rec else "",
         keys.call_key(own) if rec and own else "", keys.recording_early_events_key(rec) if rec else ""],
        [cmd.id, to.value, now_iso(), ttl_s, wait_deadline_ms, cmd.client, cmd.room_id, call, rec, own,
         *flatten(fields)],
        Moved.parse)


# --- claiming and per-call order --------------------------------------------------------------------------------


def lane_args(now_ms: int) -> list[str | int]:
    """What the ordering rules need from the Operation table: now, then the non-blocking, media, interrupt and
    overtaking types (lib.lua's ``blocks``)."""
    return [now_ms, *_lane_types()]


@functools.cache
def _interrupt_types() -> frozenset[str]:
    return frozenset(_lane_types()[2].split(","))  # the interrupt csv the scripts get


@functools.cache
def _lane_types() -> tuple[str, ...]:
    # The table does not change in a process; every accept and claim sends these, so they are joined once.
    def csv(pick: str) -> str:
        return ",".join(op.type for op in OPERATIONS.values() if getattr(op, pick))
    return csv("background"), csv("media"), csv("interrupts"), csv("overtakes_parked")


@dataclass(frozen=True)
class Claim:
    """What the claim found. ``claimed``: ``command`` is this worker's to send (``attempt``; ``crashed`` when the
    last attempt died mid-send); ``done``: already past sending (``status``, ``call``); ``blocked``: an earlier
    command of the call holds it (it parked); ``throttled``: the ACS budget is short by ``wait_s``; ``yielded``: a
    quiet window is open for another client's command (lib.lua's dispatch) for ``wait_s`` more;
    ``leased``: another worker holds it; ``missing``: no such command."""

    kind: Literal["claimed", "done", "blocked", "throttled", "yielded", "leased", "missing"]
    command: Command | None = None
    attempt: int = 0
    crashed: bool = False
    status: str = ""
    call: str = ""
    wait_s: float = 0.0
    type: str = ""

    @classmethod
    def parse(cls, reply: Sequence[Any]) -> Claim:
        kind = _s(reply[0])
        if kind == "claimed":
            return cls("claimed", command=Command.from_hash(_record(reply[3])), attempt=int(reply[1]),
                       crashed=_s(reply[2]) == Status.RUNNING)
        if kind == "done":
            return cls("done", status=_s(reply[1]), call=_s(reply[2]))
        if kind == "throttled":
            return cls("throttled", wait_s=int(reply[1]) / 1000, type=_s(reply[2]))
        if kind == "yielded":
            return cls("yielded", wait_s=int(reply[1]) / 1000)
        assert kind in ("blocked", "leased", "missing"), kind
        return cls(kind)  # type: ignore[arg-type]  # narrowed by the assert above


def claim(command_id: str, *, lease_ms: int, budget_keys: Sequence[str], budget_args: Sequence[float | int],
          now_ms: int, queue: str, window: int) -> ScriptCall[Claim]:
    """Claim a command for sending, if its turn on the call has come and the ACS budget pays for its request (and
    refill ``queue`` from the fair dispatch: the claim's message just left it)."""
    return scripts.call("claim", [keys.command_key(command_id), *budget_keys, keys.queue_key(queue)],
                        [lease_ms, now_iso(), *budget_args, *lane_args(now_ms), window], Claim.parse)


@dataclass(frozen=True)
class Kicked:
    """A command whose turn came that has no message kept for it (it parked after its message ran)."""

    command_id: str
    type: str
    client: str


def _kicked(reply: Sequence[Any]) -> list[Kicked]:
    return [Kicked(_s(i), _s(t), _s(c)) for i, t, c in zip(reply[::3], reply[1::3], reply[2::3], strict=True)]


def kick(call_connection_id: str, *, now_ms: int, queue: str, window: int) -> ScriptCall[list[Kicked]]:
    """Hand the call's parked commands whose turn has come to the fair dispatch; the ones it has no message for
    (publish them with ``enqueue``)."""
    return scripts.call("kick", [keys.call_lane_key(call_connection_id), keys.queue_key(queue)],
                        [*lane_args(now_ms), window], _kicked)


def enqueue(*, client: str, command_id: str, message: str, queue: str, window: int) -> ScriptCall[int]:
    """Queue ``message`` (the send of ``command_id``, or '' for other work) through the fair dispatch."""
    return scripts.call("enqueue", [keys.queue_key(queue)], [client, command_id, message, window], int)


def dispatch(*, queue: str, window: int) -> ScriptCall[int]:
    """Refill ``queue`` from the clients' ready lists, in turn; how many messages moved."""
    return scripts.call("dispatch", [keys.queue_key(queue)], [window], int)


def _ids(reply: Sequence[Any]) -> list[str]:
    return [_s(x) for x in reply]


def due(*, now_ms: int, rearm_ms: int, limit: int) -> ScriptCall[list[str]]:
    """Waiting commands past their outcome deadline, each handed out once per ``rearm_ms``."""
    return scripts.call("due", [keys.WAIT_DEADLINES], [now_ms, rearm_ms, limit], _ids)


# --- announcements ------------------------------------------------------------------------------------------------


def announced(message: str) -> tuple[str, dict[str, str] | None]:
    """The command id and record of a terminal move's announcement; no record (read it) from an older callq."""
    command_id, _, doc = message.partition(" ")
    try:
        record = json.loads(doc) if doc else None
    except ValueError:  # never from our script; but a bad message must cost a read, not the subscription
        record = None
    return command_id, record if isinstance(record, dict) else None
