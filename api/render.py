"""The public JSON resources (commands, recording schedules and their runs), with their ``/v1/...`` links.

Built from the stored records; the API also renders the answer an accept, create or cancel gives, and hands it
to that request's script to store, so a replay answers it byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from workers.command import Command, resource
from workers.recurrence import format_duration, iso
from workers.schedules import plan_of, windows_of


def schedule(record: Mapping[str, str]) -> dict[str, Any]:
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


def schedule_run(run: Mapping[str, str], commands: list[dict[str, str | None]]) -> dict[str, Any]:
    """The public run resource: one occurrence, what it did and how it ended."""
    steps = {v: k.removeprefix("cmd:") for k, v in run.items() if k.startswith("cmd:")}
    rid = run.get("recording_id")
    return {
        "planned_at": iso(int(run["planned"])),
        "state": run["state"],
        "call_connection_id": run.get("call_connection_id") or None,
        "recording_id": run.get("recording_id") or None,
        "commands": [{"id": c["id"], "step": steps.get(c["id"] or ""), "type": c.get("type"),
                      "status": c.get("status"), "links": {"self": f"/v1/commands/{c['id']}"}} for c in commands],
        "error": json.loads(run["error"]) if run.get("error") else None,
        "started_at": run.get("started_at") or None,
        "ended_at": run.get("ended_at") or None,
        "updated_at": run.get("updated_at") or None,
        # The recording this occurrence made, and its files once ACS has announced them.
        "links": {"recording": f"/v1/recordings/{rid}", "files": f"/v1/recordings/{rid}/files"} if rid else {},
    }


_COMPACT = json.JSONEncoder(separators=(",", ":"))



def command(cmd: Command) -> dict[str, Any]:
    """The public command resource (the same one webhooks carry: ``workers.command.resource``)."""
    return resource(cmd)


def command_record(record: Mapping[str, str]) -> dict[str, Any]:
    """The public command resource of a stored command hash."""
    return command(Command.from_hash(record))


def command_json(cmd: Command) -> str:
    return _COMPACT.encode(command(cmd))
