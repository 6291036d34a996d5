"""Celery signal handlers for logs and metrics in worker and beat processes (imported by ``tasks/app.py``).

* ``celeryd_init`` / ``setup_logging``: Celery leaves logging to us (one callq format for every process, secrets
  scrubbed). In json mode workers and beat run with ``celery --quiet`` (``callq up``, compose, Kubernetes): Celery's
  banner is plain text, so they log its facts as one line; the worker logs its shutdown notice instead of printing it.
* ``worker_ready`` / ``beat_init`` / ``worker_shutting_down``: those lines.
* ``task_prerun`` / ``task_postrun``: the task's command id is the log context of everything it logs.
* ``worker_ready`` / ``worker_process_init`` / ``worker_shutdown``: a flusher writes this process's metrics to Redis.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from typing import Any

import celery
from celery.apps.worker import install_worker_term_handler
from celery.signals import (
    beat_init,
    celeryd_init,
    setup_logging,
    task_postrun,
    task_prerun,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)

from workers import logs, metrics, redis_clients
from workers.settings import process_settings

log = logging.getLogger("callq.celery")
_tokens: dict[str, contextvars.Token[dict[str, Any] | None]] = {}
_flusher: metrics.Flusher | None = None


def _process_name() -> str:
    """``worker``, ``beat`` or ``flower``: the Celery sub-command this process runs."""
    return next((a for a in sys.argv[1:] if a in ("worker", "beat", "flower")), "celery")


@setup_logging.connect
def _setup_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connecting this signal is what stops Celery from installing its own handlers and format.
    logs.setup(process_settings(), process=_process_name(), level=loglevel or None)


@celeryd_init.connect
def _setup_logging_early(**_: Any) -> None:
    # Celery checks the user right after this signal and, as root (a dev box), warns as bare text; set up now so
    # that warning is a line in our format. setup_logging sets up again later, at the level asked for.
    logs.setup(process_settings(), process="worker")


@worker_ready.connect
def _log_worker_ready(sender: Any = None, **_: Any) -> None:
    """The banner's facts as one line (json mode runs without the banner); and a quiet SIGTERM handler."""
    worker = sender.controller
    pool = worker.pool_cls if isinstance(worker.pool_cls, str) else worker.pool_cls.__module__
    log.info("%s: celery %s, queues %s, concurrency %s (%s), task events %s", worker.hostname, celery.__version__,
             ", ".join(sorted(sender.app.amqp.queues.consume_from)), worker.concurrency, pool.rsplit(".", 1)[-1],
             "on" if worker.task_events else "off")
    if process_settings().log_format == "json":
        # Celery's handler prints "worker: Warm shutdown (MainProcess)" as bare text; the same handler without
        # that print, and _log_shutdown logs it instead. (An older Celery has no such option: its line stays.)
        try:
            install_worker_term_handler(worker, verbose=False)
        except TypeError:
            pass


@worker_shutting_down.connect
def _log_shutdown(how: str = "", sig: str = "", **_: Any) -> None:
    if process_settings().log_format == "json":
        log.info("worker: %s shutdown (%s)", how, sig)


@beat_init.connect
def _log_beat_ready(sender: Any = None, **_: Any) -> None:
    """The beat banner's facts as one line (json mode runs without the banner)."""
    scheduler = sender.scheduler_cls if isinstance(sender.scheduler_cls, str) else sender.scheduler_cls.__name__
    log.info("beat: celery %s, scheduler %s, max interval %s s", celery.__version__, scheduler, sender.max_interval)


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
        _flusher = metrics.Flusher(redis_clients.sync_client(process_settings(), decode_responses=False)).start()


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
