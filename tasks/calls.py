"""Every callq task: one per command type (readable names in Flower), each a line over the runtime.

Task arguments are only the command id: parameters live in the command record, secrets nowhere.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import redis
from celery import Task
from celery.signals import worker_ready, worker_shutdown

from tasks.app import app, task_name
from workers import keys
from workers.operations import OPERATIONS
from workers.runtime import RetryLater, Runtime

log = logging.getLogger("callq.tasks")
HEARTBEAT_EVERY_S = 2.0


class CommandTask(Task):  # type: ignore[misc]
    """Base task: builds the process's Runtime on first use (after the prefork/thread pool starts)."""

    _runtime: Runtime | None = None
    _lock = threading.Lock()

    @property
    def runtime(self) -> Runtime:
        with CommandTask._lock:
            if CommandTask._runtime is None:
                CommandTask._runtime = Runtime.from_settings(self.app.conf.callq_settings, self._enqueue)
            return CommandTask._runtime

    def _enqueue(self, command_type: str, command_id: str) -> None:
        self.app.send_task(task_name(command_type), args=[command_id])


def _run(self: CommandTask, command_id: str) -> str:
    try:
        return self.runtime.run(command_id)
    except RetryLater as later:
        # A new message with a countdown: the slot is released while the command waits to retry. On Redis
        # a countdown longer than the visibility timeout would be redelivered early, so it is capped.
        countdown = min(later.delay_s, self.app.conf.callq_settings.visibility_timeout_s / 2)
        raise self.retry(countdown=countdown, max_retries=None) from None


for _type in OPERATIONS:
    app.task(name=task_name(_type), base=CommandTask, bind=True, acks_late=True)(_run)


_stop_heartbeat = threading.Event()


def _heartbeat(redis_url: str, name: str) -> None:
    """Let the API's /readyz see live workers without a broadcast round trip to every worker."""
    client = redis.Redis.from_url(redis_url)
    while not _stop_heartbeat.is_set():
        try:
            client.zadd(keys.WORKERS_ZSET, {name: time.time()})
        except redis.RedisError as exc:
            log.warning("worker heartbeat failed: %s", exc)
        _stop_heartbeat.wait(HEARTBEAT_EVERY_S)
    client.zrem(keys.WORKERS_ZSET, name)


@worker_ready.connect
def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    name = getattr(sender, "hostname", None) or socket.gethostname()
    threading.Thread(target=_heartbeat, args=(app.conf.callq_settings.redis_url, name),
                     name="callq-heartbeat", daemon=True).start()


@worker_shutdown.connect
def _end_heartbeat(**_: Any) -> None:
    _stop_heartbeat.set()
