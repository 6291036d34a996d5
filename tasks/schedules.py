"""Scheduled-recording tasks, and redbeat entries as the occurrences' alarm clock.

Each schedule has at most one beat entry: its next occurrence, named ``:sched:{id}:{planned}`` (key
``callq:redbeat:sched:{id}:{planned}``), a one-shot ``rrule`` at the planned UTC second whose task is
``callq.schedule_fire``. Planned times are computed by ``workers.recurrence`` in the schedule's own
IANA zone, not by redbeat: redbeat's crontab runs in the app's zone and its rrule stores a fixed UTC
offset, so neither would keep a Paris 10:00 class at 10:00 across a DST change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

from celery import Celery, Task
from redbeat.schedulers import (
    RedBeatSchedulerEntry,
    ensure_conf,
    get_redis,
)
from redbeat.schedules import rrule

from tasks.app import app, countdown_until, task_name
from tasks.automations import AutomationTask
from tasks.publish import task_message
from workers import redis_clients
from workers.occurrences import Occurrences

log = logging.getLogger("callq.tasks.schedules")
FIRE, ADVANCE, BOOK, CANCEL, SWEEP = ("callq.schedule_fire", "callq.schedule_advance", "callq.schedule_book",
                                      "callq.schedule_cancel", "callq.schedule_sweep")
MAX_INTERNAL_RETRIES = 10
P = ParamSpec("P")
R = TypeVar("R")


class RedBeatTimers:
    """``workers.occurrences.Timers`` on redbeat (fires) and Celery countdowns (steps)."""

    def __init__(self, celery: Celery) -> None:
        self._app = celery
        ensure_conf(celery)  # redbeat's settings object on the app (key prefix), as beat itself does

    @staticmethod
    def entry_name(schedule_id: str, planned: int) -> str:
        return f":sched:{schedule_id}:{planned}"  # after the "callq:redbeat" prefix

    def book(self, schedule_id: str, planned: int) -> None:
        at = datetime.fromtimestamp(planned, UTC)
        entry = RedBeatSchedulerEntry(self.entry_name(schedule_id, planned), FIRE,
                                      rrule("SECONDLY", dtstart=at, count=1), args=[schedule_id, planned],
                                      app=self._app)
        now = datetime.now(UTC)
        # Celery's ScheduleEntry starts last_run_at at "now", which scores a future one-shot at its planned
        # time (beat loads it only then). For a time already past (a catch-up) that would mean "ran after its
        # only run", never due: with no last run it is due at once.
        entry.last_run_at = now if at > now else None
        entry.save()

    def unbook(self, schedule_id: str, planned: int) -> None:
        RedBeatSchedulerEntry(self.entry_name(schedule_id, planned), app=self._app).delete()

    def booked(self, schedule_id: str, planned: int) -> bool:
        key = RedBeatSchedulerEntry.generate_key(self._app, self.entry_name(schedule_id, planned))
        return bool(get_redis(self._app).exists(key))

    def wake(self, schedule_id: str, planned: int, token: str | None, at: float) -> None:
        self._app.send_task(ADVANCE, args=[schedule_id, planned, token], countdown=countdown_until(self._app, at))


class ScheduleTask(Task):  # type: ignore[misc]  # Task is Any to mypy: Celery ships no type hints
    """Base task: builds the process's Occurrences on first use (after the pool starts)."""

    _occurrences: Occurrences | None = None
    _lock = threading.Lock()

    @property
    def occurrences(self) -> Occurrences:
        with ScheduleTask._lock:
            if ScheduleTask._occurrences is None:
                settings = self.app.conf.callq_settings
                ScheduleTask._occurrences = Occurrences(
                    settings, redis_clients.sync_client(settings),
                    RedBeatTimers(self.app),
                    lambda type_, cid: task_message(self.app, task_name(type_), cid, [cid], queue=settings.queue))
            return ScheduleTask._occurrences


def _retrying(task: ScheduleTask, what: str, exc: Exception) -> Any:
    """An outage or a bug: try again later (every step is idempotent), then give up loudly."""
    retries = int(task.request.retries or 0)
    log.exception("%s failed: %s", what, type(exc).__name__)
    if retries < MAX_INTERNAL_RETRIES:
        raise task.retry(countdown=min(2.0**retries, 60.0)) from None
    return "gave_up"


def _task(name: str, *, max_retries: int | None) -> Callable[[Callable[Concatenate[ScheduleTask, P], R]],
                                                              Callable[P, R]]:
    """``app.task`` for a bound, late-acked ScheduleTask, with the type Celery's untyped decorator cannot give."""
    decorator = app.task(name=name, base=ScheduleTask, bind=True, acks_late=True, max_retries=max_retries)
    # A bound task is called without its ``self``: Callable[P, R] is what calling it takes and gives.
    return cast("Callable[[Callable[Concatenate[ScheduleTask, P], R]], Callable[P, R]]", decorator)


@_task(FIRE, max_retries=None)
def fire(self: ScheduleTask, schedule_id: str, planned: int) -> str:
    """Beat: an occurrence is due. The task id is the claim, so only this message (or its redelivery) runs it."""
    try:
        return self.occurrences.fire(schedule_id, int(planned), claim=self.request.id)
    except Exception as exc:
        return str(_retrying(self, f"fire {schedule_id}@{planned}", exc))


@_task(ADVANCE, max_retries=None)
def advance(self: ScheduleTask, schedule_id: str, planned: int, token: str | None) -> str:
    try:
        return self.occurrences.advance(schedule_id, int(planned), token)
    except Exception as exc:
        return str(_retrying(self, f"advance {schedule_id}@{planned}", exc))


@_task(BOOK, max_retries=None)
def book(self: ScheduleTask, schedule_id: str) -> str:
    """The API created a schedule: save its first beat entry."""
    try:
        return self.occurrences.ensure_booked(schedule_id)
    except Exception as exc:
        return str(_retrying(self, f"book {schedule_id}", exc))


@_task(CANCEL, max_retries=None)
def cancel(self: ScheduleTask, schedule_id: str) -> int:
    """The API cancelled a schedule: drop its beat entry, stop its running occurrence."""
    try:
        return self.occurrences.cancel(schedule_id)
    except Exception as exc:
        _retrying(self, f"cancel {schedule_id}", exc)
        return 0


@_task(SWEEP, max_retries=0)
def sweep(self: ScheduleTask) -> list[int]:
    """Beat, every few seconds: re-send lost wake-ups, re-book lost fires (the next sweep retries failures); the
    same for room calls' automation runs."""
    poked, checked = self.occurrences.sweep()
    return [poked, checked, AutomationTask().runs.sweep()]
