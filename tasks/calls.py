"""Every callq task: one per command type (readable names in Flower), each a line over the runtime.

Task arguments are only the command id: parameters live in the command record, secrets nowhere.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown

from tasks.app import RECONCILE_TASK, app, task_name
from tasks.publish import task_message
from workers import heap, keys, redis_clients
from workers.operations import OPERATIONS
from workers.runtime import RetryLater, Runtime
from workers.settings import Settings

log = logging.getLogger("callq.tasks")
HEARTBEAT_EVERY_S = 2.0
LOST_COMMANDS_SWEEP_EVERY_S = 5.0  # one worker at a time looks for commands whose task was lost
DUE_EVERY_S = 0.25  # a waiting command is reconciled at most this long after its outcome deadline (plus queueing)
MAX_INTERNAL_RETRIES = 10
RECONCILE = RECONCILE_TASK


class CommandTask(Task):  # type: ignore[misc]  # Celery's Task is untyped (Any)
    """Base task: builds the process's Runtime on first use (after the prefork/thread pool starts)."""

    _runtime: Runtime | None = None
    _lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        return _shared_runtime()


def _shared_runtime() -> Runtime:
    """The process's one Runtime (thread-safe), shared by its task threads and its deadline checker."""
    with CommandTask._lock:
        if CommandTask._runtime is None:
            CommandTask._runtime = Runtime.from_settings(app.conf.callq_settings, _Scheduler(app))
        return CommandTask._runtime


class _Scheduler:
    """The runtime's Scheduler: more work is more Celery messages, with countdowns capped (_capped)."""

    def __init__(self, celery: Celery) -> None:
        self._app = celery

    def message(self, command_type: str, command_id: str) -> str:
        settings = self._app.conf.callq_settings
        return task_message(self._app, task_name(command_type), str(uuid.uuid4()), [command_id], queue=settings.queue)

    def command(self, command_type: str, command_id: str, countdown_s: float) -> None:
        self._app.send_task(task_name(command_type), args=[command_id], countdown=_capped(self._app, countdown_s))

    def check(self, command_id: str, countdown_s: float) -> None:
        self._app.send_task(RECONCILE, args=[command_id], countdown=_capped(self._app, countdown_s))


def _capped(celery: Celery, countdown_s: float) -> float:
    # On Redis a countdown longer than the visibility timeout is redelivered early (kombu #337); a step
    # that wakes early simply schedules itself again for the rest.
    return float(min(countdown_s, celery.conf.callq_settings.visibility_timeout_s / 2))


def _guarded(task: CommandTask, command_id: str, step: Callable[[str], str]) -> str:
    try:
        return step(command_id)
    except RetryLater as later:
        # A new message with a countdown: the slot is released while the command waits.
        raise task.retry(countdown=_capped(task.app, later.delay_s)) from None
    except Exception as exc:
        # A bug or an outage (Redis down): the message would be acked and the command left unsent, so
        # try again later; after enough tries record the failure rather than retry forever.
        headers = task.request.headers or {}
        internal = int(headers.get("callq_internal_retries", 0))
        log.exception("command %s: unexpected %s", command_id, type(exc).__name__, extra={"command_id": command_id})
        if internal < MAX_INTERNAL_RETRIES:
            raise task.retry(countdown=min(2.0**internal, 60.0),
                             headers={"callq_internal_retries": internal + 1}) from None
        return task.runtime.give_up(command_id, exc)


def _run(self: CommandTask, command_id: str) -> str:
    return _guarded(self, command_id, self.runtime.run)


def _reconcile(self: CommandTask, command_id: str) -> str:
    return _guarded(self, command_id, self.runtime.reconcile)


# max_retries=None: the runtime bounds attempts itself (Celery's default of 3 would drop a command that
# was merely rate-limited a few times).
for _type in OPERATIONS:
    app.task(name=task_name(_type), base=CommandTask, bind=True, acks_late=True, max_retries=None)(_run)
app.task(name=RECONCILE, base=CommandTask, bind=True, acks_late=True, max_retries=None)(_reconcile)


_stop_heartbeat = threading.Event()


def _heartbeat(settings: Settings, name: str) -> None:
    """Let the API's /readyz see live workers; and, one worker at a time, sweep for lost commands."""
    client = redis_clients.sync_client(settings, decode_responses=False)
    while not _stop_heartbeat.is_set():
        try:
            client.zadd(keys.WORKERS_ZSET, {name: time.time()})
            # Whichever worker takes the lock sweeps this round; the lock outlives the round, not the worker.
            if client.set(keys.SWEEP_LOCK, name, nx=True, px=int(LOST_COMMANDS_SWEEP_EVERY_S * 1000)):
                runtime = _shared_runtime()
                runtime.sweep()
                runtime.sweep_calls()
        except Exception as exc:
            log.warning("worker heartbeat or sweep failed: %s", type(exc).__name__)
        _stop_heartbeat.wait(HEARTBEAT_EVERY_S)
    with contextlib.suppress(redis.RedisError):  # shutting down with Redis gone: the entry just goes stale
        client.zrem(keys.WORKERS_ZSET, name)


def _check_deadlines() -> None:
    """Have waiting commands reconciled as their outcome deadlines pass (``Runtime.check_due``), and keep the
    command queue filled from the fair dispatch (``Runtime.dispatch``; claims refill it too)."""
    failing = False
    while not _stop_heartbeat.wait(DUE_EVERY_S):
        try:
            runtime = _shared_runtime()
            runtime.check_due()
            runtime.dispatch()
            failing = False
        except Exception as exc:
            if not failing:  # once per outage, not four times a second
                log.warning("checking outcome deadlines failed: %s", type(exc).__name__)
            failing = True


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    name = getattr(sender, "hostname", None) or socket.gethostname()
    threading.Thread(target=_heartbeat, args=(app.conf.callq_settings, name),
                     name="callq-heartbeat", daemon=True).start()
    threading.Thread(target=_check_deadlines, name="callq-deadlines", daemon=True).start()
    heap.freeze_startup_heap()  # the worker is ready: all it imported and built lives as long as it does


@worker_shutdown.connect
def _end_heartbeat(**_: Any) -> None:
    _stop_heartbeat.set()
