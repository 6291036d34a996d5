"""Recording schedules and their runs in Redis: keys, the stored record, and the create/cancel/move-on scripts.

A schedule is a hash; ``next_planned`` names the one occurrence its beat entry will fire next and moves
forward only by compare-and-set (``move_on``, ``lua/schedule_move_on.lua``), so a redelivered or duplicated
fire cannot move it twice or backwards. Each occurrence that fired has a run hash, keyed by the schedule id
and its planned time (epoch seconds, UTC): that pair is the occurrence's identity everywhere (claim key,
idempotency keys of its commands, beat entry name).

Create and cancel follow a command's accept: one script records the idempotency key (in the same per-client
namespace as commands, so a key reused across the two is caught), writes the schedule and pushes the Celery
message that books or unbooks its beat entry, all or nothing. The public JSON of a schedule is the API's
(``api.render``); the API renders the answer a replay gives and hands it to the script to store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from workers import command, keys, scripts
from workers.keys import (
    ACTIVE_SCHEDULES,
    claim_key,
    client_schedules_key,
    run_commands_key,
    run_key,
    run_lock_key,
    runs_key,
    schedule_key,
)
from workers.recurrence import Kind, Plan

# The keys are re-exported: callers address them as schedules.<name>.
__all__ = [
    "ACTIVE_SCHEDULES", "MAX_RUNS", "RUN_TERMINAL", "STATUSES", "WAKES", "Recorded", "cancel", "claim_key",
    "client_schedules_key", "create", "move_on", "new_schedule", "plan_of", "run_commands_key", "run_key",
    "run_lock_key", "runs_key", "schedule_key", "stored", "wake_member", "windows_of",
]

STATUSES = ("active", "finished", "cancelled")  # finished: a one-off that fired; nothing more to book
RUN_TERMINAL = frozenset({"completed", "completed_early", "missed", "failed", "cancelled"})
MAX_RUNS = 1000  # runs listed per schedule (the oldest fall off the list and expire)
WAKES = keys.SCHEDULE_WAKES


def wake_member(schedule_id: str, planned: int) -> str:
    """The run's member in ``WAKES``."""
    return f"{schedule_id} {planned}"


@dataclass(frozen=True)
class Recorded:
    """What a create or cancel found: a new change, an earlier request's replay, or (cancel) no such schedule."""

    outcome: Literal["new", "replay", "missing"]
    resource_id: str  # what the key's first request made: this schedule, or (a key reused) something else
    fingerprint: str  # the stored one: differs from the request's when a key is reused for something else
    response_json: str  # the resource as first answered, byte for byte what a replay answers

    @property
    def replayed(self) -> bool:
        return self.outcome == "replay"


def _recorded(reply: Any) -> Recorded:
    outcome, resource_id, fingerprint, response = reply
    if outcome not in ("new", "replay", "missing"):
        raise ValueError(f"unexpected schedule script outcome {outcome!r}")
    # A key whose hash lacks a field (never written so by callq) comes back as None: keep the types honest.
    return Recorded(outcome=outcome, resource_id=resource_id or "", fingerprint=fingerprint or "",
                    response_json=response or "")


def create(*, client: str, idempotency_key: str, schedule_id: str, record: Mapping[str, str], fingerprint: str,
           idempotency_ttl_s: int, queue: str, book_message: str, response_json: str) -> scripts.ScriptCall[Recorded]:
    """Store a new schedule (``record``, from ``stored``) with its idempotency key and its book message."""
    return scripts.call(
        "schedule_create",
        [keys.idempotency_key(client, idempotency_key), schedule_key(schedule_id), client_schedules_key(client),
         ACTIVE_SCHEDULES, keys.queue_key(queue)],
        [fingerprint, schedule_id, idempotency_ttl_s, book_message, response_json,
         *(item for field_value in record.items() for item in field_value)],
        _recorded)


def cancel(*, client: str, idempotency_key: str, schedule_id: str, fingerprint: str, idempotency_ttl_s: int,
           queue: str, cancel_message: str, response_json: str, now_iso: str,
           retention_s: int) -> scripts.ScriptCall[Recorded]:
    """Cancel a schedule (kept ``retention_s`` for reads) with its idempotency key and its cancel message."""
    return scripts.call(
        "schedule_cancel",
        [keys.idempotency_key(client, idempotency_key), schedule_key(schedule_id), ACTIVE_SCHEDULES,
         keys.queue_key(queue)],
        [fingerprint, schedule_id, idempotency_ttl_s, cancel_message, response_json, now_iso, retention_s],
        _recorded)


def move_on(*, schedule_id: str, planned: int, to: int | None, now_iso: str,
            retention_s: int) -> scripts.ScriptCall[bool]:
    """Move the next occurrence from ``planned`` to ``to`` (None: finished) if nothing moved it already."""
    return scripts.call(
        "schedule_move_on", [schedule_key(schedule_id), ACTIVE_SCHEDULES],
        [planned, "" if to is None else to, now_iso, retention_s, schedule_id],
        lambda moved: bool(moved))


_KINDS: dict[str, Kind] = {"once": "once", "every": "every", "cron": "cron"}


def plan_of(record: Mapping[str, str]) -> Plan:
    """The timing of a stored schedule."""
    return Plan(kind=_KINDS[record["kind"]], duration_s=int(record["duration_s"]),
                start=int(record["start"]) if record.get("start") else None,
                every_s=int(record["every_s"]) if record.get("every_s") else None,
                cron=record.get("cron") or None, timezone=record.get("timezone") or None)


def windows_of(record: Mapping[str, str]) -> list[tuple[int, int]]:
    """Pause windows as (offset s, duration s), in order."""
    return [(int(o), int(d)) for o, d in json.loads(record.get("pause_windows") or "[]")]


def new_schedule(*, schedule_id: str, client: str, room_id: str, plan: Plan, recording: dict[str, str],
                 windows: list[tuple[int, int]], first: int, idempotency_key: str) -> dict[str, Any]:
    """The stored fields of a new, active schedule whose first occurrence is ``first``."""
    now = command.now_iso()
    return {
        "id": schedule_id, "client": client, "room_id": room_id, "kind": plan.kind,
        "start": plan.start, "every_s": plan.every_s, "cron": plan.cron, "timezone": plan.timezone,
        "duration_s": plan.duration_s, "recording": recording, "pause_windows": [list(w) for w in windows],
        "status": "active", "next_planned": first, "created_at": now, "updated_at": now,
        "idempotency_key": idempotency_key,
    }


def stored(record: Mapping[str, Any]) -> dict[str, str]:
    """A record (``new_schedule``'s) as its hash stores it: JSON for dicts and lists, '' for None."""
    fields = command.flatten(dict(record))
    return dict(zip(fields[::2], fields[1::2], strict=True))
