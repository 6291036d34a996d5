"""The naive Celery baselines: a plain Celery app on the same Redis, used the way most projects use it.

Loaded by baseline processes (``celery -A bench.naive worker``, ``bench.baselines``), which get their
configuration from ``BENCH_*`` variables because they are separate processes started by the suite.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
import requests
from azure.communication.callautomation import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from celery import Celery
from celery.signals import worker_ready, worker_shutdown
from standardwebhooks import Webhook

QUEUE = "naive"
LIVE_SET = "bench:naive:workers"
DONE_LIST = "bench:naive:done"
RATE_LIMIT = os.environ.get("BENCH_RATE_LIMIT", "50/s")  # the rate scenario's workers get it from the suite



def create_app(redis_url: str) -> Celery:
    """A plain Celery app on ``redis_url``: defaults except JSON and no result backend (callq has none either)."""
    celery = Celery("bench_naive", broker=redis_url)
    celery.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                       task_default_queue=QUEUE, worker_hijack_root_logger=False,
                       broker_connection_retry_on_startup=True)
    return celery


app = create_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6390/0"))
_local = threading.local()


def _redis() -> redis.Redis:
    client: redis.Redis | None = getattr(_local, "redis", None)
    if client is None:
        client = _local.redis = redis.Redis.from_url(app.conf.broker_url)
    return client


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def noop(value: str) -> None:
    """What the naive accept endpoint enqueues (no worker runs in that scenario)."""


@app.task(name="bench.stamp")  # type: ignore[untyped-decorator]
def stamp(key: str) -> None:
    """Record when the task started: the far end of the queue-overhead baseline."""
    _redis().rpush(key, repr(time.time()))


@app.task(name="bench.stamp_limited", rate_limit=RATE_LIMIT)  # type: ignore[untyped-decorator]
def stamp_limited(key: str) -> None:
    """Celery's own rate limit (a token bucket per worker process) on the same recording task."""
    _redis().rpush(key, repr(time.time()))


def _acs() -> CallAutomationClient:
    client: CallAutomationClient | None = getattr(_local, "acs", None)
    if client is None:
        client = _local.acs = CallAutomationClient(os.environ["BENCH_ACS_ENDPOINT"],
                                                   AzureKeyCredential(os.environ["BENCH_ACS_KEY"]))
    return client


@app.task(name="bench.connect")  # type: ignore[untyped-decorator]
def connect(room_id: str, callback_url: str, operation_context: str, done_key: str) -> None:
    """Send the connect callq sends, with the same SDK (the overhead scenario's like-for-like baseline)."""
    _acs().connect_call(callback_url=callback_url, room_id=room_id, operation_context=operation_context)
    _redis().rpush(done_key, "1")


@app.task(name="bench.connect_and_wait")  # type: ignore[untyped-decorator]
def connect_and_wait(room_id: str, callback_url: str, timeout_s: float) -> None:
    """Connect with the SDK, then hold this worker slot until the CallConnected callback arrives."""
    props = _acs().connect_call(callback_url=callback_url, room_id=room_id)
    r = _redis()
    if r.blpop([f"bench:cb:{props.call_connection_id}"], timeout=timeout_s):
        r.rpush(DONE_LIST, repr(time.time()))


def _session() -> requests.Session:
    session: requests.Session | None = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
    return session


@app.task(name="bench.webhook")  # type: ignore[untyped-decorator]
def webhook(url: str, secret: str, message_id: str, payload: str) -> None:
    """Sign and POST one webhook: the webhook_throughput baseline, a task per delivery.

    ``requests`` on a session per worker thread (kept-alive connections: a stronger baseline than a bare
    ``requests.post``); signed as callq signs, with ``standardwebhooks``; a non-2xx raises (no retries).
    """
    at = datetime.now(UTC)
    headers = {"content-type": "application/json", "user-agent": "bench-naive-webhooks/1", "webhook-id": message_id,
               "webhook-timestamp": str(int(at.timestamp())),
               "webhook-signature": Webhook(secret).sign(message_id, at, payload)}
    _session().post(url, data=payload.encode(), headers=headers, timeout=15).raise_for_status()


@worker_ready.connect  # type: ignore[untyped-decorator]
def _ready(sender: Any = None, **_: Any) -> None:
    _redis().sadd(LIVE_SET, getattr(sender, "hostname", None) or socket.gethostname())


@worker_shutdown.connect  # type: ignore[untyped-decorator]
def _gone(sender: Any = None, **_: Any) -> None:
    _redis().srem(LIVE_SET, getattr(sender, "hostname", None) or socket.gethostname())
