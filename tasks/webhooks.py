"""The webhook deliverer's life in a worker process: started when the worker is ready, stopped at shutdown.

Deliveries are not Celery tasks (``workers.delivery`` says why): they run beside the pool, in the same process, so
scaling workers scales delivery too.
"""

from __future__ import annotations

from typing import Any

from celery.signals import worker_ready, worker_shutdown

from tasks.app import app
from workers.delivery import DelivererThread

_running: list[DelivererThread] = []


@worker_ready.connect
def _start_deliverer(**_: Any) -> None:
    thread = DelivererThread(app.conf.callq_settings)
    thread.start()
    _running.append(thread)


@worker_shutdown.connect
def _stop_deliverer(**_: Any) -> None:
    while _running:
        _running.pop().stop()
