"""Automations: what callq does on its own when a room's call starts, run once per room call.

An automation is a list of steps, ``{"type", "body"}`` each, the same types and bodies as the command routes
(the API validates them and stores each step's command parameters). The first step connects to the room call;
the others address the call callq joined. A room has its own automation, or uses its client's default.

When Event Grid's ``CallStarted`` arrives for a managed room, room_event.lua opens the run of that room call
(``callq:room:{room}:run:{serverCallId}``, at most one, whatever delivers the event how often) and queues its
first ``advance``. ``advance`` is a reconciler, like a scheduled recording's occurrence: it looks at the run and its
commands and does what is due:

1. the connect, created through the same front door as the API's commands with an idempotency key derived from
   the room call and the step (``auto:{room}:{serverCallId}:{index}``), so a step that runs twice gets the first
   command back;
2. once the connect succeeded, every other step at once, in order: per-call order then runs them one after
   another as it does for any client's commands, under the same rate budget, retries and correlation;
3. the run ends ``succeeded`` when every step succeeded, ``failed`` when one failed (a connect that failed ends
   it at once), or ``ended`` when the call ended first (its unfinished steps fail ``call_ended``).

Wake-ups are Celery countdowns carrying a token (only the latest is honoured); a CallEnded also wakes the run.
The beat's sweep re-sends a wake-up that is long overdue, should a message be lost.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis

from workers import command, commands, keys, metrics, scripts
from workers.command import Status
from workers.settings import Settings

log = logging.getLogger("callq.automations")
POLL_S = 0.5  # while the connect is on its way
WATCH_S = 2.0  # while the steps run
END_GRACE_S = 5.0  # how long a failed step waits for news that the call ended (then the run is failed)
LATE_S = 60.0
LOCK_MS = 30_000
RUN_TERMINAL = frozenset({"succeeded", "failed", "ended"})
WAKES = "callq:automation:wakes"  # zset "room serverCallId" → when the run next needs a look (epoch s)


class Waker(Protocol):
    """Sends ``advance`` for a run later (the task layer implements it on Celery)."""

    def wake(self, room_id: str, server_call_id: str, token: str | None, at: float) -> None: ...


def _member(room_id: str, scid: str) -> str:
    return f"{room_id} {scid}"


def idempotency_key(room_id: str, scid: str, index: int) -> str:
    return f"auto:{room_id}:{scid}:{index}"


def release_lock(*, room_id: str, server_call_id: str, token: str) -> scripts.ScriptCall[bool]:
    return scripts.call("lock_release", [keys.room_run_lock_key(room_id, server_call_id)], [token],
                        lambda released: bool(released))


def _error(code: str, message: str, cause: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, **({"cause": cause} if cause else {})}


@dataclass
class Runs:
    settings: Settings
    redis: redis.Redis  # decode_responses=True
    waker: Waker
    message_for: commands.MessageFor
    clock: Callable[[], float] = time.time

    def advance(self, room_id: str, scid: str, token: str | None) -> str:
        """Do what is due for one run now and arrange the next look; returns the run's state."""
        lock = uuid.uuid4().hex
        if not self.redis.set(keys.room_run_lock_key(room_id, scid), lock, nx=True, px=LOCK_MS):
            self.waker.wake(room_id, scid, token, self.clock() + 1.0)
            return "busy"
        try:
            run = self._hash(keys.room_run_key(room_id, scid))
            if not run or run.get("state") in RUN_TERMINAL:
                self.redis.zrem(WAKES, _member(room_id, scid))
                return run.get("state") or "missing"
            if token is not None and token != run.get("wake_token"):
                return "stale"
            at = self._step(room_id, scid, run)
            if at is not None and run["state"] not in RUN_TERMINAL:
                new_token = uuid.uuid4().hex
                self._set(room_id, scid, run, wake_token=new_token)
                self.redis.zadd(WAKES, {_member(room_id, scid): at})
                self.waker.wake(room_id, scid, new_token, at)
            return run["state"]
        finally:
            scripts.run(self.redis, release_lock(room_id=room_id, server_call_id=scid, token=lock))

    def sweep(self) -> int:
        """Re-send wake-ups long overdue (a lost message); returns how many."""
        now = self.clock()
        overdue = cast("list[str]", self.redis.zrangebyscore(WAKES, 0, now - LATE_S))
        for member in overdue:
            room_id, scid = member.split(" ", 1)
            self.waker.wake(room_id, scid, None, now)
        return len(overdue)

    def _step(self, room_id: str, scid: str, run: dict[str, str]) -> float | None:
        steps: list[dict[str, Any]] = json.loads(run["automation"])["on_call_started"]
        connect = self._status(self._command(room_id, scid, run, 0, steps[0], cc=""))
        if connect["status"] not in (Status.SUCCEEDED, Status.FAILED):
            return self.clock() + POLL_S
        if connect["status"] == Status.FAILED:
            if run.get("call_ended") == "1":
                return self._finish(room_id, scid, run, "ended", _error(
                    "call_ended", "The call ended before callq joined it.", connect.get("error")))
            return self._finish(room_id, scid, run, "failed", _error(
                "connect_failed", "callq could not join the room's call.", connect.get("error")))
        cc = connect["call_connection_id"] or ""
        if run.get("call_connection_id") != cc:
            self._set(room_id, scid, run, call_connection_id=cc)
            if self.redis.hget(keys.room_key(room_id), "server_call_id") == scid:
                self.redis.hset(keys.room_key(room_id), "call_connection_id", cc)
        call = self._hash(keys.call_key(cc))
        ended = run.get("call_ended") == "1" or call.get("state") == "disconnected"
        ids = self._ids(room_id, scid)
        if not ended:
            for index in range(len(ids), len(steps)):
                step = steps[index]
                refused = self._accept(room_id, scid, run, index, step, cc=cc,
                                       server_call_id=call.get("server_call_id") or scid)
                if refused is not None:  # the door's limits: the step waits its turn like a client would
                    self._set(room_id, scid, run, state="running")
                    return self.clock() + refused
            ids = self._ids(room_id, scid)
            if run["state"] != "running":
                self._set(room_id, scid, run, state="running")
        return self._outcome(room_id, scid, run, [self._status(i) for i in ids], len(steps), ended=ended)

    def _outcome(self, room_id: str, scid: str, run: dict[str, str], statuses: list[dict[str, Any]], steps: int, *,
                 ended: bool) -> float | None:
        """Once every accepted step has ended: how the run ended."""
        if any(s["status"] not in (Status.SUCCEEDED, Status.FAILED) for s in statuses):
            return self.clock() + WATCH_S
        failed = next((s for s in statuses if s["status"] == Status.FAILED), None)
        if failed and not ended and (failed.get("error") or {}).get("code") != "call_ended":
            # A step that failed as the call ended (a play cut off, say) may be told before the call's end is (the
            # callback and Event Grid are separate channels): give the end a moment to arrive before calling the
            # run failed rather than ended.
            ended = self._call_over(room_id, scid, run)
            first_seen = float(run.get("failure_seen_at") or 0) or self.clock()
            if not ended and self.clock() - first_seen < END_GRACE_S:
                if not run.get("failure_seen_at"):
                    self._set(room_id, scid, run, failure_seen_at=str(first_seen))
                return self.clock() + POLL_S
        if ended and len(statuses) < steps or failed and (
                ended or (failed.get("error") or {}).get("code") == "call_ended"):
            return self._finish(room_id, scid, run, "ended", _error(
                "call_ended", "The call ended before every step had run.", failed.get("error") if failed else None))
        if failed:
            return self._finish(room_id, scid, run, "failed", _error(
                "step_failed", f"Step {statuses.index(failed)} ({failed['type']}) failed.", failed.get("error")))
        return self._finish(room_id, scid, run, "succeeded")

    def _call_over(self, room_id: str, scid: str, run: dict[str, str]) -> bool:
        fresh = self._hash(keys.room_run_key(room_id, scid))
        cc = fresh.get("call_connection_id") or run.get("call_connection_id") or ""
        return fresh.get("call_ended") == "1" or (bool(cc) and self.redis.hget(keys.call_key(cc), "state") ==
                                                  "disconnected")

    def _ids(self, room_id: str, scid: str) -> list[str]:
        return cast("list[str]", self.redis.lrange(keys.room_run_commands_key(room_id, scid), 0, -1))

    def _command(self, room_id: str, scid: str, run: dict[str, str], index: int, step: dict[str, Any], *,
                 cc: str) -> str:
        """The run's connect (index 0): created once."""
        if run.get("cmd:0"):
            return run["cmd:0"]
        refused = self._accept(room_id, scid, run, index, step, cc=cc, server_call_id=scid)
        if refused is not None:
            raise RuntimeError("the door refused an automation's connect")  # retried by the task
        return run["cmd:0"]

    def _accept(self, room_id: str, scid: str, run: dict[str, str], index: int, step: dict[str, Any], *, cc: str,
                server_call_id: str) -> float | None:
        """Create step ``index``'s command (a replay returns the first); returns a wait when the door refused it."""
        params = dict(step.get("params") or {})
        if step["type"] == "connect":
            params["room_id"] = room_id
        elif step["type"] == "start_recording":
            params["server_call_id"] = server_call_id
        # A step's command type may differ from its route's (a play that barges in is a play_barge_in).
        new = commands.new(client=run["client"], type_=step.get("command_type") or step["type"], params=params,
                           idempotency_key=idempotency_key(room_id, scid, index),
                           route=f"automation {room_id}", call_connection_id=cc,
                           room_id=room_id if step["type"] == "connect" else "")
        found = commands.accept(self.redis, self.settings, self.message_for, new)
        if found.refused:
            return max(found.retry_after_ms / 1000, POLL_S)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.room_run_key(room_id, scid), f"cmd:{index}", found.command_id)
        pipe.rpush(keys.room_run_commands_key(room_id, scid), found.command_id)
        pipe.expire(keys.room_run_commands_key(room_id, scid), self.settings.command_ttl_s)
        pipe.execute()
        run[f"cmd:{index}"] = found.command_id
        log.info("automation of room %s, call %s: step %d (%s) → %s", room_id, scid[:16], index, step["type"],
                 found.command_id)
        return None

    def _status(self, command_id: str) -> dict[str, Any]:
        found = cast("list[str | None]", self.redis.hmget(keys.command_key(command_id),
                                                          ["status", "error", "call_connection_id", "type"]))
        status, error, cc, type_ = found
        if status is None:
            return {"status": Status.FAILED, "type": "unknown",
                    "error": {"code": "command_expired", "message": "The command expired."}}
        return {"status": status, "error": json.loads(error) if error else None, "call_connection_id": cc,
                "type": type_}

    def _set(self, room_id: str, scid: str, run: dict[str, str], **fields: str) -> None:
        changes = {**fields, "updated_at": command.now_iso()}
        self.redis.hset(keys.room_run_key(room_id, scid), items=[i for pair in changes.items() for i in pair])
        run.update(changes)

    def _finish(self, room_id: str, scid: str, run: dict[str, str], state: str,
                error: dict[str, Any] | None = None) -> float | None:
        """End the run; returns None, "no further look", so a step can ``return self._finish(...)``."""
        self._set(room_id, scid, run, state=state, ended_at=command.now_iso(),
                  error=json.dumps(error) if error else "", wake_token="")
        self.redis.zrem(WAKES, _member(room_id, scid))
        metrics.RECORDER.inc("callq_automation_runs", state)
        log.info("automation of room %s, call %s ended %s%s", room_id, scid[:16], state,
                 f" ({error['code']})" if error else "")
        return None

    def _hash(self, key: str) -> dict[str, str]:
        return cast("dict[str, str]", self.redis.hgetall(key))


def render_run(run: dict[str, str], cmds: list[dict[str, str | None]]) -> dict[str, Any]:
    """A run as the API lists it."""
    steps = json.loads(run.get("automation") or "{}").get("on_call_started", [])
    by_index = {int(k.removeprefix("cmd:")): v for k, v in run.items() if k.startswith("cmd:")}
    status = {c["id"]: c for c in cmds}
    return {
        "id": run.get("id"),
        "room_id": run.get("room_id"),
        "server_call_id": run.get("server_call_id"),
        "correlation_id": run.get("correlation_id") or None,
        "call_connection_id": run.get("call_connection_id") or None,
        "state": run.get("state"),
        "automation": run.get("source"),
        "call_started_at": run.get("call_started_at") or None,
        "created_at": run.get("created_at"),
        "updated_at": run.get("updated_at"),
        "ended_at": run.get("ended_at") or None,
        "error": json.loads(run["error"]) if run.get("error") else None,
        "steps": [{"index": i, "type": s["type"], "command_id": by_index.get(i),
                   "status": (status.get(by_index.get(i) or "") or {}).get("status")} for i, s in enumerate(steps)],
    }
