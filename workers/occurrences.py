"""Run scheduled recordings: each occurrence fires once, then steps connect → start → pauses → stop.

Exactly once per occurrence, whatever fires it (two beats, a beat catching up after a restart, a
redelivered message):

* the fire moves the schedule on to its next occurrence by compare-and-set and books that occurrence's
  beat entry (a deterministic name, so booking twice is one entry);
* it then claims the occurrence with ``SET NX`` on ``(schedule id, planned time)``; only the claimant
  (or a redelivery of the very same message, which carries the same task id) runs it;
* every command the occurrence issues is created through ``workers.commands`` with an idempotency key
  derived from the occurrence and the step (``sched:{id}:{planned}:start``), so a step that runs twice
  gets the first command back. Commands then go through the runtime like the API's: rate limits,
  retries, per-call order and correlation all apply.

An occurrence is driven by ``advance``: a reconciler that looks at the run, the clock and its commands,
does whatever is due, and says when it next needs to look. Wake-ups are Celery countdowns capped below
the visibility timeout; one that arrives early (kombu #337) just finds nothing due and sleeps again.
Each wake carries a token and only the latest is honoured, so duplicated wake-ups do not multiply. The
beat's sweep re-sends a wake (or re-books a fire) that is long overdue, should a message be lost.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, cast

import redis

from workers import command, commands, keys, scripts
from workers import schedules as s
from workers.command import Status
from workers.recurrence import iso
from workers.settings import Settings

log = logging.getLogger("callq.schedules")
POLL_S = 0.5  # while one of the occurrence's commands is on its way
WATCH_S = 30.0  # longest sleep while recording: how soon a call that ended early is noticed
LOCK_MS = 30_000  # one advance at a time per occurrence (longer than a step takes)
LATE_S = 60.0  # a wake-up or a fire this overdue was lost: the sweep sends it again
CONNECT_RETRY_CAP_S = 30.0
ROOM_WAIT_S = 1.0  # how often an occurrence looks whether its room call has started (Event Grid's CallStarted)


def release_lock(*, schedule_id: str, planned: int, token: str) -> scripts.ScriptCall[bool]:
    """Release the occurrence's advance lock if ``token`` still holds it (True: released)."""
    return scripts.call("lock_release", [s.run_lock_key(schedule_id, planned)], [token],
                        lambda released: bool(released))


class Timers(Protocol):
    """Beat entries and delayed steps, without knowing Celery or redbeat (the task layer implements it)."""

    def book(self, schedule_id: str, planned: int) -> None:
        """Save the beat entry that fires this occurrence at its planned time (idempotent)."""

    def unbook(self, schedule_id: str, planned: int) -> None:
        """Remove that beat entry, if it is there."""

    def booked(self, schedule_id: str, planned: int) -> bool:
        """Whether that beat entry exists."""

    def wake(self, schedule_id: str, planned: int, token: str | None, at: float) -> None:
        """Run ``advance`` for the occurrence at ``at`` (epoch s); ``token`` None pokes it at once."""


@dataclass
class _Occ:
    """One advance's view of an occurrence."""

    sched: dict[str, str]
    run: dict[str, str]
    planned: int
    now: float

    @property
    def id(self) -> str:
        return self.sched["id"]

    @property
    def end(self) -> int:
        return self.planned + int(self.sched["duration_s"])

    @property
    def cc(self) -> str:
        return self.run.get("call_connection_id") or ""

    @property
    def rid(self) -> str:
        return self.run.get("recording_id") or ""

    @property
    def done(self) -> bool:
        return self.run.get("state") in s.RUN_TERMINAL


def _error(code: str, message: str, cause: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, **({"cause": cause} if cause else {})}


@dataclass
class Occurrences:
    settings: Settings
    redis: redis.Redis  # built with decode_responses=True: every reply is text (the casts below rely on it)
    timers: Timers
    message_for: commands.MessageFor
    clock: Callable[[], float] = time.time

    # -- the beat side: booking, firing, cancelling ------------------------------------------------------

    def ensure_booked(self, schedule_id: str, *, repair_late: bool = False) -> str:
        """Make sure the schedule's next occurrence has its beat entry (after create, a fire, or a loss)."""
        status, nxt = self._hmget(s.schedule_key(schedule_id), "status", "next_planned")
        if status != "active" or not nxt:
            return "idle"
        planned = int(nxt)
        if self.redis.exists(s.claim_key(schedule_id, planned)):
            return "fired"
        if self.timers.booked(schedule_id, planned):
            if not (repair_late and planned < self.clock() - LATE_S):
                return "booked"
            # Due long ago, never claimed: its fire message was lost. A fresh entry makes beat send it again
            # (if the first was only slow, the claim turns the second into a no-op).
            self.timers.unbook(schedule_id, planned)
        self.timers.book(schedule_id, planned)
        return "booked"

    def fire(self, schedule_id: str, planned: int, claim: str) -> str:
        """Beat says an occurrence is due; ``claim`` is the task id (the same on a redelivery)."""
        sched = self._hash(s.schedule_key(schedule_id))
        if not sched or sched["status"] == "cancelled":
            self.timers.unbook(schedule_id, planned)
            return "cancelled"
        self._move_on(sched, planned)
        if not self._claim(schedule_id, planned, claim):
            self.timers.unbook(schedule_id, planned)
            log.info("occurrence %s@%s already claimed; duplicate fire dropped", schedule_id, iso(planned))
            return "duplicate"
        self._open_run(schedule_id, planned, claim)
        self.timers.unbook(schedule_id, planned)
        return self.advance(schedule_id, planned, None)

    def cancel(self, schedule_id: str) -> int:
        """After the API cancelled a schedule: drop its beat entry, and wake its unfinished runs to stop."""
        cancelled_next = self._hget(s.schedule_key(schedule_id), "cancelled_next")
        if cancelled_next:
            self.timers.unbook(schedule_id, int(cancelled_next))
        poked = 0
        for member in cast("list[str]", self.redis.zrange(s.runs_key(schedule_id), -3, -1)):
            if self._hget(s.run_key(schedule_id, int(member)), "state") not in (None, *s.RUN_TERMINAL):
                self.timers.wake(schedule_id, int(member), None, self.clock())
                poked += 1
        return poked

    def sweep(self) -> tuple[int, int]:
        """Re-send lost wake-ups and re-book lost fires; returns (runs poked, schedules checked)."""
        now = self.clock()
        overdue = cast("list[str]", self.redis.zrangebyscore(s.WAKES, 0, now - LATE_S))
        for member in overdue:
            schedule_id, planned = member.split(" ")
            self.timers.wake(schedule_id, int(planned), None, now)
        checked = 0
        for schedule_id in cast("Iterator[str]", self.redis.sscan_iter(s.ACTIVE_SCHEDULES)):
            self.ensure_booked(schedule_id, repair_late=True)
            checked += 1
        return len(overdue), checked

    def _move_on(self, sched: dict[str, str], planned: int) -> None:
        nxt = s.plan_of(sched).next_open(planned, int(self.clock()))
        scripts.run(self.redis, s.move_on(schedule_id=sched["id"], planned=planned, to=nxt, now_iso=command.now_iso(),
                                          retention_s=self.settings.command_ttl_s))
        self.ensure_booked(sched["id"])

    def _claim(self, schedule_id: str, planned: int, claim: str) -> bool:
        key = s.claim_key(schedule_id, planned)
        if self.redis.set(key, claim, nx=True, ex=self.settings.command_ttl_s):
            return True
        return bool(self.redis.get(key) == claim)  # a redelivery of the claiming message carries on

    def _open_run(self, schedule_id: str, planned: int, claim: str) -> None:
        now = command.now_iso()
        fields: dict[str, str | int] = {"schedule_id": schedule_id, "planned": planned, "planned_at": iso(planned),
                                        "state": "starting", "claimed_by": claim, "created_at": now, "updated_at": now}
        pipe = self.redis.pipeline(transaction=True)
        for name, value in fields.items():  # HSETNX: a redelivered fire must not reset a run in progress
            pipe.hsetnx(s.run_key(schedule_id, planned), name, value)
        pipe.zadd(s.runs_key(schedule_id), {str(planned): planned})
        pipe.zremrangebyrank(s.runs_key(schedule_id), 0, -(s.MAX_RUNS + 1))
        pipe.execute()

    # -- the occurrence side: one step at a time ---------------------------------------------------------

    def advance(self, schedule_id: str, planned: int, token: str | None) -> str:
        """Do what is due for one occurrence now and arrange the next look; returns the run's state."""
        lock = uuid.uuid4().hex
        lock_key = s.run_lock_key(schedule_id, planned)
        if not self.redis.set(lock_key, lock, nx=True, px=LOCK_MS):
            self.timers.wake(schedule_id, planned, token, self.clock() + 1.0)  # another step is running
            return "busy"
        try:
            run = self._hash(s.run_key(schedule_id, planned))
            if not run or run.get("state") in s.RUN_TERMINAL:
                self.redis.zrem(s.WAKES, s.wake_member(schedule_id, planned))
                return run.get("state") or "missing"
            if token is not None and token != run.get("wake_token"):
                return "stale"  # a newer wake-up owns this occurrence's timeline
            sched = self._hash(s.schedule_key(schedule_id)) or {"id": schedule_id, "status": "cancelled",
                                                                "duration_s": "0"}
            occ = _Occ(sched, run, planned, self.clock())
            self._schedule_wake(occ, self._step(occ))
            return occ.run["state"]
        finally:
            scripts.run(self.redis, release_lock(schedule_id=schedule_id, planned=planned, token=lock))

    def _step(self, o: _Occ) -> float | None:
        if o.sched.get("status") == "cancelled":
            return self._cancelled(o)
        if not o.cc:
            at = self._connect(o)
            if at is not None or o.done:
                return at
        call = self._hash(keys.call_key(o.cc))
        if call.get("state") == "disconnected":
            return self._call_ended(o)
        if call.get("state") != "connected":  # connect sent, CallConnected not here yet
            if o.now >= o.end:
                return self._finish(o, "missed", _error("session_over", "The call was not connected before the "
                                                        "session's end."))
            return o.now + POLL_S
        if not o.rid:
            at = self._start(o, call)
            if at is not None or o.done:
                return at
        return self._record(o)

    def _connect(self, o: _Occ) -> float | None:
        """Find callq's live connection to the room call, or connect; retry within the grace window."""
        live = self._live_call(o)
        if live:
            self._set(o, call_connection_id=live)
            return None
        attempt = int(o.run.get("connect_attempts") or 0)
        if not attempt and self.settings.eventgrid_configured and not self.redis.exists(
                keys.room_live_key(o.sched["room_id"])):
            # Event Grid says when the room call starts: wait for its CallStarted rather than ask ACS to connect
            # to a call that is not there.
            if o.now >= min(o.planned + self.settings.schedule_grace_s, o.end):
                return self._finish(o, "missed", _error(
                    "room_call_not_started", f"Room {o.sched['room_id']}'s call had not started (no CallStarted from "
                    f"Event Grid) {self.settings.schedule_grace_s} s after the planned start."))
            return o.now + ROOM_WAIT_S
        if attempt:
            cmd = self._status(o.run[f"cmd:connect:{attempt}"])
            if cmd["status"] in Status.PENDING:
                return o.now + POLL_S
            if cmd["status"] == "succeeded" and cmd.get("call_connection_id"):
                self._set(o, call_connection_id=cmd["call_connection_id"])
                return None
            retry_at = float(o.run.get("connect_retry_at") or 0)
            if not retry_at:
                retry_at = o.now + min(2.0 ** (attempt - 1), CONNECT_RETRY_CAP_S)
                self._set(o, connect_retry_at=retry_at)
            if retry_at >= min(o.planned + self.settings.schedule_grace_s, o.end):
                return self._finish(o, "missed", _error(
                    "room_call_not_started", f"callq could not connect to room {o.sched['room_id']} within "
                    f"{self.settings.schedule_grace_s} s of the planned start ({attempt} attempts); "
                    "has the call started?", cmd.get("error")))
            if o.now < retry_at:
                return retry_at
        elif o.now >= o.end:
            return self._finish(o, "missed", _error("session_over", "The session had ended before callq could "
                                                    "start it (were beat or the workers down?)."))
        self._command(o, f"connect:{attempt + 1}", "connect", params={"room_id": o.sched["room_id"]},
                      room_id=o.sched["room_id"])
        self._set(o, connect_attempts=attempt + 1, connect_retry_at="")
        return o.now + POLL_S

    def _live_call(self, o: _Occ) -> str | None:
        cc = cast("str | None", self.redis.get(keys.room_call_key(o.sched["room_id"])))
        if not cc:
            return None
        state, client = self._hmget(keys.call_key(cc), "state", "client")
        # Another client's connection is not ours to command (the API would refuse it too).
        return cc if state == "connected" and client == o.sched["client"] else None

    def _start(self, o: _Occ, call: dict[str, str]) -> float | None:
        start = o.run.get("cmd:start")
        if not start:
            if o.now >= o.end:
                return self._finish(o, "missed", _error("session_over", "The session had ended before the "
                                                        "recording could start."))
            if not call.get("server_call_id"):
                return o.now + POLL_S
            params = {**json.loads(o.sched["recording"]), "server_call_id": call["server_call_id"]}
            self._command(o, "start", "start_recording", params=params, cc=o.cc)
            return o.now + POLL_S
        cmd = self._status(start)
        if cmd["status"] in Status.PENDING:
            return o.now + POLL_S
        if cmd["status"] != "succeeded" or not cmd.get("recording_id"):
            return self._finish(o, "failed", _error("start_failed", "ACS did not start the recording.",
                                                    cmd.get("error")))
        self._set(o, recording_id=cmd["recording_id"], state="recording", started_at=command.now_iso())
        return None

    def _record(self, o: _Occ) -> float | None:
        """Pause and resume at the windows' times, stop at the end; wake at the next of those times."""
        windows = [(o.planned + off, o.planned + off + dur) for off, dur in s.windows_of(o.sched)]
        if "cmd:stop" not in o.run:
            for i, (pause_at, resume_at) in enumerate(windows):
                # A window whose pause time passed while nothing ran (an outage) is skipped, not replayed.
                if pause_at <= o.now < resume_at and pause_at < o.end:
                    self._command(o, f"pause:{i}", "pause_recording", cc=o.cc, rid=o.rid)
                if o.now >= resume_at and resume_at < o.end and f"cmd:pause:{i}" in o.run:
                    self._command(o, f"resume:{i}", "resume_recording", cc=o.cc, rid=o.rid)
            if o.now >= o.end:
                self._command(o, "stop", "stop_recording", cc=o.cc, rid=o.rid)
        if "cmd:stop" in o.run:
            return self._stopping(o, "completed")
        paused = any(f"cmd:pause:{i}" in o.run and f"cmd:resume:{i}" not in o.run for i in range(len(windows)))
        if o.run.get("state") != ("paused" if paused else "recording"):
            self._set(o, state="paused" if paused else "recording")
        upcoming = [t for t in (*(t for w in windows for t in w), o.end) if t > o.now]
        return min([*upcoming, o.now + WATCH_S])

    def _stopping(self, o: _Occ, final: str) -> float | None:
        cmd = self._status(o.run["cmd:stop"])
        if cmd["status"] in Status.PENDING:
            if o.run.get("state") != "stopping":
                self._set(o, state="stopping")
            return o.now + POLL_S
        if cmd["status"] == "succeeded":
            return self._finish(o, final)
        return self._finish(o, "failed", _error("stop_failed", "ACS did not stop the recording.", cmd.get("error")))

    def _call_ended(self, o: _Occ) -> float | None:
        if "cmd:stop" in o.run and self._status(o.run["cmd:stop"])["status"] == "succeeded":
            return self._finish(o, "cancelled" if o.sched.get("status") == "cancelled" else "completed")
        started = o.rid or ("cmd:start" in o.run and self._status(o.run["cmd:start"])["status"] == "succeeded")
        if started:
            return self._finish(o, "completed_early", _error("call_ended", "The call ended before the session "
                                                             "did; the recording ended with it."))
        return self._finish(o, "missed", _error("call_ended", "The call ended before the recording started."))

    def _cancelled(self, o: _Occ) -> float | None:
        """The schedule was deleted: stop a recording this occurrence started, then end it as cancelled."""
        cancelled = _error("schedule_cancelled", "The schedule was deleted.")
        start = o.run.get("cmd:start")
        if not start:
            return self._finish(o, "cancelled", cancelled)
        if self._hget(keys.call_key(o.cc), "state") == "disconnected":
            return self._call_ended(o)
        if not o.rid:
            cmd = self._status(start)
            if cmd["status"] in Status.PENDING:
                return o.now + POLL_S  # stop only a recording known to be ours, never the call's "current" one
            if cmd["status"] != "succeeded" or not cmd.get("recording_id"):
                return self._finish(o, "cancelled", cancelled)
            self._set(o, recording_id=cmd["recording_id"])
        self._command(o, "stop", "stop_recording", cc=o.cc, rid=o.rid)
        return self._stopping(o, "cancelled")

    # -- helpers -------------------------------------------------------------------------------------------

    def _command(self, o: _Occ, step: str, type_: str, *, params: dict[str, Any] | None = None, cc: str = "",
                 rid: str = "", room_id: str = "") -> str:
        """The occurrence's command for ``step``: created once, through the same front door as the API's."""
        field = f"cmd:{step}"
        if o.run.get(field):
            return o.run[field]
        new = commands.new(
            client=o.sched["client"], type_=type_, params=params or {},
            idempotency_key=f"sched:{o.id}:{iso(o.planned)}:{step}", route=f"schedule {o.id}",
            call_connection_id=cc, room_id=room_id, recording_id=rid)
        # A replay returns the first command.
        command_id = commands.accept(self.redis, self.settings, self.message_for, new).command_id
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(s.run_key(o.id, o.planned), field, command_id)
        pipe.rpush(s.run_commands_key(o.id, o.planned), command_id)
        pipe.execute()
        o.run[field] = command_id
        log.info("occurrence %s@%s: %s → %s", o.id, iso(o.planned), step, command_id)
        return command_id

    def _status(self, command_id: str) -> dict[str, Any]:
        status, error, cc, rid, result = self._hmget(keys.command_key(command_id), "status", "error",
                                                     "call_connection_id", "recording_id", "result")
        if status is None:
            return {"status": "failed", "error": {"code": "command_expired", "message": "The command expired."}}
        # The event can resolve a start a moment before the worker stores the recording id it got from ACS's
        # answer; the event's result names it too.
        rid = rid or ((json.loads(result) or {}).get("recording_id") if result else None)
        return {"status": status, "error": json.loads(error) if error else None, "call_connection_id": cc,
                "recording_id": rid}

    def _set(self, o: _Occ, **fields: Any) -> None:
        changes = {k: str(v) for k, v in fields.items()} | {"updated_at": command.now_iso()}
        # A flat field/value list: redis-py types ``mapping`` with invariant keys, which a dict[str, str] fails.
        self.redis.hset(s.run_key(o.id, o.planned), items=[item for pair in changes.items() for item in pair])
        o.run.update(changes)

    def _finish(self, o: _Occ, state: str, error: dict[str, Any] | None = None) -> float | None:
        """End the run; returns None, "no further wake-up", so a step can ``return self._finish(...)``."""
        self._set(o, state=state, ended_at=command.now_iso(), error=json.dumps(error) if error else "", wake_token="")
        pipe = self.redis.pipeline(transaction=True)
        pipe.expire(s.run_key(o.id, o.planned), self.settings.command_ttl_s)
        pipe.expire(s.run_commands_key(o.id, o.planned), self.settings.command_ttl_s)
        pipe.zrem(s.WAKES, s.wake_member(o.id, o.planned))
        pipe.execute()
        log.info("occurrence %s@%s ended %s%s", o.id, iso(o.planned), state, f" ({error['code']})" if error else "")
        return None

    # Reads, typed as what the decoding client returns (redis-py's hints say bytes | str whatever the client).

    def _hash(self, key: str) -> dict[str, str]:
        return cast("dict[str, str]", self.redis.hgetall(key))

    def _hget(self, key: str, field: str) -> str | None:
        return cast("str | None", self.redis.hget(key, field))

    def _hmget(self, key: str, *fields: str) -> list[str | None]:
        return cast("list[str | None]", self.redis.hmget(key, list(fields)))

    def _schedule_wake(self, o: _Occ, at: float | None) -> None:
        if at is None or o.done:
            return
        token = uuid.uuid4().hex
        self._set(o, wake_token=token, wake_at=at)
        self.redis.zadd(s.WAKES, {s.wake_member(o.id, o.planned): at})
        self.timers.wake(o.id, o.planned, token, at)
