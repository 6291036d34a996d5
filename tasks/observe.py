"""Celery signal handlers for logs and metrics in worker and beat processes (imported by ``tasks/app.py``).

* ``setup_logging``: Celery leaves logging to us (one callq format for every process, secrets scrubbed).
* ``task_prerun`` / ``task_postrun``: the task's command id is the log context of everything it logs.
* ``worker_ready`` / ``worker_process_init`` / ``worker_shutdown``: a flusher writes this process's metrics to Redis.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

from celery.signals import setup_logging, task_postrun, task_prerun, worker_process_init, worker_ready, worker_shutdown

from workers import logs, metrics
from workers.settings import Settings

_tokens: dict[str, contextvars.Token[dict[str, Any] | None]] = {}
_flusher: metrics.Flusher | None = None


def _process_name() -> str:
    """``worker``, ``beat`` or ``flower``: the Celery sub-command this process runs."""
    return next((a for a in sys.argv[1:] if a in ("worker", "beat", "flower")), "celery")


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connecting this signal is what stops Celery from installing its own handlers and format.
    logs.setup(Settings.from_env(), process=_process_name(), level=loglevel or logging.INFO)


@task_prerun.connect
def _bind_task(task_id: str = "", task: Any = None, args: Any = None, **_: Any) -> None:
    command_id = args[0] if args and isinstance(args[0], str) else None
    _tokens[task_id] = logs.bind(command_id=command_id, task=getattr(task, "name", None))


@task_postrun.connect
def _unbind_task(task_id: str = "", **_: Any) -> None:
    token = _tokens.pop(task_id, None)
    if token is not None:
        try:
            logs.unbind(token)
        except ValueError:
            pass  # bound in another context (a pool that runs prerun and postrun apart): nothing to restore


def _start_flusher() -> None:
    global _flusher
    if _flusher is None:
        _flusher = metrics.Flusher(Settings.from_env().redis_url).start()


@worker_ready.connect
def _flush_from_worker(**_: Any) -> None:
    _start_flusher()


@worker_process_init.connect
def _flush_from_child(**_: Any) -> None:
    _start_flusher()  # prefork children record too, and worker_ready fires only in the parent


@worker_shutdown.connect
def _final_flush(**_: Any) -> None:
    global _flusher
    if _flusher is not None:
        _flusher.stop()
        _flusher = None
