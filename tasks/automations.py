"""Automation tasks: advance a room call's run (``workers.automations``), on the steps queue."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery, Task

from tasks.app import app, countdown_until, task_name
from tasks.publish import task_message
from workers import redis_clients
from workers.automations import Runs

log = logging.getLogger("callq.tasks.automations")
ADVANCE = "callq.automation_advance"
MAX_INTERNAL_RETRIES = 10


class CeleryWaker:
    """``workers.automations.Waker`` on Celery countdowns."""

    def __init__(self, celery: Celery) -> None:
        self._app = celery

    def wake(self, room_id: str, server_call_id: str, token: str | None, at: float) -> None:
        self._app.send_task(ADVANCE, args=[room_id, server_call_id, token], countdown=countdown_until(self._app, at))


class AutomationTask(Task):  # type: ignore[misc]  # Task is Any to mypy: Celery ships no type hints
    """Base task: builds the process's Runs on first use (after the pool starts)."""

    _runs: Runs | None = None
    _lock = threading.Lock()

    @property
    def runs(self) -> Runs:
        with AutomationTask._lock:
            if AutomationTask._runs is None:
                settings = self.app.conf.callq_settings
                AutomationTask._runs = Runs(
                    settings, redis_clients.sync_client(settings), CeleryWaker(self.app),
                    lambda type_, cid: task_message(self.app, task_name(type_), cid, [cid], queue=settings.queue))
            return AutomationTask._runs


@app.task(name=ADVANCE, base=AutomationTask, bind=True, acks_late=True, max_retries=None)
def advance(self: AutomationTask, room_id: str, server_call_id: str, token: str | None = None) -> Any:
    """Do what is due for a room call's automation run (every step of it is idempotent)."""
    try:
        return self.runs.advance(room_id, server_call_id, token)
    except Exception as exc:
        retries = int(self.request.retries or 0)
        log.exception("automation advance of room %s failed: %s", room_id, type(exc).__name__)
        if retries < MAX_INTERNAL_RETRIES:
            raise self.retry(countdown=min(2.0**retries, 60.0)) from None
        return "gave_up"
