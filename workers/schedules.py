"""Recording schedules and their runs in Redis: keys, the atomic create/cancel scripts, and rendering.

A schedule is a hash; ``next_planned`` names the one occurrence its beat entry will fire next and moves
forward only by compare-and-set (``MOVE_ON_LUA``), so a redelivered or duplicated fire cannot move it
twice or backwards. Each occurrence that fired has a run hash, keyed by the schedule id and its planned
time (epoch seconds, UTC): that pair is the occurrence's identity everywhere (claim key, idempotency keys
of its commands, beat entry name).

Create and cancel follow ``ledger.ACCEPT_LUA``: one script records the idempotency key (in the same
per-client namespace as commands, so a key reused across the two is caught), writes the schedule and
pushes the Celery message that books or unbooks its beat entry — all or nothing.
"""

from __future__ import annotations

import json
from typing import Any

from workers import command, keys
from workers.keys import (  # noqa: F401 - re-exported: callers address them as schedules.<name>
    ACTIVE_SCHEDULES,
    claim_key,
    client_schedules_key,
    run_commands_key,
    run_key,
    run_lock_key,
    runs_key,
    schedule_key,
)
from workers.recurrence import Plan, format_duration, iso

STATUSES = ("active", "finished", "cancelled")  # finished: a one-off that fired; nothing more to book
RUN_TERMINAL = frozenset({"completed", "completed_early", "missed", "failed", "cancelled"})
MAX_RUNS = 1000  # runs listed per schedule (the oldest fall off the list and expire)
WAKES = keys.SCHEDULE_WAKES


def wake_member(schedule_id: str, planned: int) -> str:
    return f"{schedule_id} {planned}"


_GUARD = """
local want = {'hash', 'hash', 'zset', 'set', 'list'}
for i = 1, #KEYS do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want[i] then
    return redis.error_reply('WRONGTYPE callq cannot use ' .. KEYS[i] .. ', a ' .. t)
  end
end
local existing = redis.call('HMGET', KEYS[1], 'command_id', 'fingerprint', 'response')
if existing[1] then
  return {'replay', existing[1], existing[2], existing[3]}
end
"""

# KEYS: idempotency hash, schedule hash, client's schedules, active schedules, broker queue.
# ARGV: fingerprint, schedule id, idempotency ttl, book message, response, field/value...
# The idempotency hash names the schedule in ``command_id`` (the field ACCEPT_LUA reads), so a command
# request reusing this key is a replay with another fingerprint: 422, never a silent overwrite.
CREATE_LUA = _GUARD + """
redis.call('HSET', KEYS[1], 'command_id', ARGV[2], 'fingerprint', ARGV[1], 'response', ARGV[5])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('HSET', KEYS[2], unpack(ARGV, 6))
redis.call('ZADD', KEYS[3], 0, ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
redis.call('LPUSH', KEYS[5], ARGV[4])
return {'new', ARGV[2], ARGV[1], ARGV[5]}
"""

# KEYS: idempotency hash, schedule hash, (unused), active schedules, broker queue.
# ARGV: fingerprint, schedule id, idempotency ttl, cancel message, response, now iso, retention ttl.
CANCEL_LUA = _GUARD + """
if redis.call('EXISTS', KEYS[2]) == 0 then return {'missing', ARGV[2], '', ''} end
redis.call('HSET', KEYS[1], 'command_id', ARGV[2], 'fingerprint', ARGV[1], 'response', ARGV[5])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
if redis.call('HGET', KEYS[2], 'status') ~= 'cancelled' then
  -- cancelled_next: the occurrence whose beat entry the cancel task removes
  local nxt = redis.call('HGET', KEYS[2], 'next_planned') or ''
  redis.call('HSET', KEYS[2], 'status', 'cancelled', 'cancelled_at', ARGV[6], 'updated_at', ARGV[6],
             'next_planned', '', 'cancelled_next', nxt)
end
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
redis.call('SREM', KEYS[4], ARGV[2])
redis.call('LPUSH', KEYS[5], ARGV[4])
return {'new', ARGV[2], ARGV[1], ARGV[5]}
"""

# Move a schedule's next occurrence from ARGV[1] to ARGV[2] ('' = none left), only if it is still at
# ARGV[1] and the schedule is active.  KEYS: schedule hash, active schedules.  ARGV: from, to, now, ttl, id.
MOVE_ON_LUA = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'next_planned')
if cur[1] ~= 'active' or cur[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'next_planned', ARGV[2], 'updated_at', ARGV[3])
if ARGV[2] == '' then
  redis.call('HSET', KEYS[1], 'status', 'finished')
  redis.call('SREM', KEYS[2], ARGV[5])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
end
return 1
"""


def plan_of(record: dict[str, str]) -> Plan:
    """The timing of a stored schedule."""
    return Plan(kind=record["kind"], duration_s=int(record["duration_s"]),  # type: ignore[arg-type]
                start=int(record["start"]) if record.get("start") else None,
                every_s=int(record["every_s"]) if record.get("every_s") else None,
                cron=record.get("cron") or None, timezone=record.get("timezone") or None)


def windows_of(record: dict[str, str]) -> list[tuple[int, int]]:
    """Pause windows as (offset s, duration s), in order."""
    return [(int(o), int(d)) for o, d in json.loads(record.get("pause_windows") or "[]")]


def render(record: dict[str, str]) -> dict[str, Any]:
    """The public schedule resource for a stored schedule hash."""
    sid = record["id"]
    plan = plan_of(record)
    nxt = record.get("next_planned")
    return {
        "id": sid,
        "room_id": record["room_id"],
        "kind": plan.kind,
        "start_at": iso(plan.start) if plan.start is not None else None,
        "cron": plan.cron,
        "timezone": record.get("timezone") or None,
        "every": format_duration(plan.every_s) if plan.every_s else None,
        "duration": format_duration(plan.duration_s),
        "recording": json.loads(record["recording"]),
        "pause_windows": [{"offset": format_duration(o), "duration": format_duration(d)}
                          for o, d in windows_of(record)],
        "status": record["status"],
        "next_run_at": iso(int(nxt)) if nxt else None,
        "created_at": record["created_at"],
        "updated_at": record.get("updated_at") or record["created_at"],
        "cancelled_at": record.get("cancelled_at") or None,
        "links": {"self": f"/v1/recording-schedules/{sid}", "runs": f"/v1/recording-schedules/{sid}/runs"},
    }


def render_run(run: dict[str, str], commands: list[dict[str, str]]) -> dict[str, Any]:
    """The public run resource: one occurrence, what it did and how it ended."""
    steps = {v: k.removeprefix("cmd:") for k, v in run.items() if k.startswith("cmd:")}
    return {
        "planned_at": iso(int(run["planned"])),
        "state": run["state"],
        "call_connection_id": run.get("call_connection_id") or None,
        "recording_id": run.get("recording_id") or None,
        "commands": [{"id": c["id"], "step": steps.get(c["id"]), "type": c.get("type"), "status": c.get("status"),
                      "links": {"self": f"/v1/commands/{c['id']}"}} for c in commands],
        "error": json.loads(run["error"]) if run.get("error") else None,
        "started_at": run.get("started_at") or None,
        "ended_at": run.get("ended_at") or None,
        "updated_at": run.get("updated_at") or None,
    }


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
