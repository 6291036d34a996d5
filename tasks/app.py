"""The Celery application: all Celery configuration lives here.

``celery -A tasks.app worker`` / ``beat`` / ``flower`` load the module-level ``app``.
"""

from __future__ import annotations

import ssl
import time
from typing import Any
from urllib.parse import quote

from celery import Celery
from kombu.entity import Exchange, Queue

from tasks import broker, observe  # noqa: F401  (observe connects the logging and metrics signal handlers)
from workers import redis_clients
from workers.settings import Settings, process_settings

SCHEDULE_SWEEP_EVERY_S = 15.0
RECONCILE_TASK = "callq.reconcile"
STEPS_GLOB = "callq.schedule_*"  # beat re-sends lost wake-ups and re-books lost fires of scheduled recordings
AUTOMATION_GLOB = "callq.automation_*"  # a room call's automation run (tasks.automations)


def countdown_until(app: Celery, at: float) -> float | None:
    """A Celery countdown to ``at`` (epoch s), capped at half the visibility timeout (kombu #337: a longer one is
    redelivered early; the step it wakes finds nothing due and sleeps again). None: now."""
    cap_s = app.conf.callq_settings.visibility_timeout_s / 2
    return min(max(0.0, at - time.time()), cap_s) or None


def task_name(command_type: str) -> str:
    """The Celery task that runs commands of this type (``callq.connect``, ``callq.hang_up``, ...)."""
    return f"callq.{command_type}"


def _broker(settings: Settings) -> dict[str, Any]:
    """Where the broker is: the URL and transport, plus Sentinel's options when callq runs behind Sentinel."""
    if not settings.redis_sentinels:
        # redis:// is kombu's Redis transport reusing one client per channel (tasks.broker.register).
        return {"broker_url": settings.redis_url}
    # kombu: `sentinel://` per Sentinel, `;`-separated; a URL's user and password (and db) are the primary's.
    master = redis_clients.master_params(settings)
    auth = ""
    if "password" in master:
        auth = f"{quote(master.get('username', ''), safe='')}:{quote(master['password'], safe='')}@"
    url = ";".join(f"sentinel://{auth}{_host(h)}:{p}/{master['db']}" for h, p in settings.redis_sentinels)
    conf: dict[str, Any] = {
        "broker_url": url,
        "broker_transport_options": {"master_name": settings.redis_sentinel_master,
                                     "sentinel_kwargs": redis_clients.sentinel_kwargs(settings)},
        # redbeat: its own scheme and option names (`service_name`, not kombu's `master_name`).
        "redbeat_redis_url": "redis-sentinel://",
        "redbeat_redis_options": {"sentinels": list(settings.redis_sentinels),
                                  "service_name": settings.redis_sentinel_master,
                                  "sentinel_kwargs": redis_clients.sentinel_kwargs(settings),
                                  **{k: v for k, v in master.items() if k != "ssl"}},
    }
    if master.get("ssl"):
        conf["broker_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        conf["redbeat_redis_use_ssl"] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    return conf


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def create_celery(settings: Settings) -> Celery:
    """Build the Celery app for these settings (tests build their own)."""
    broker.register()
    located = _broker(settings)
    app = Celery("callq", broker=located.pop("broker_url"),
                 include=["tasks.calls", "tasks.schedules", "tasks.automations", "tasks.webhooks"])
    exchange = Exchange(settings.queue, type="direct")  # type: ignore[no-untyped-call]  # kombu: unannotated
    queues = [Queue(name, exchange, routing_key=name)  # type: ignore[no-untyped-call]  # as above
              for name in (settings.queue, settings.steps_queue)]
    app.conf.update(
        task_queues=queues,
        # Commands' sends on the command queue (filled by the fair dispatch); everything else (reconciles, schedule
        # steps, beat's fires) on the steps queue, which workers consume in turn with it (Settings.steps_queue).
        task_routes={STEPS_GLOB: {"queue": settings.steps_queue, "routing_key": settings.steps_queue},
                     AUTOMATION_GLOB: {"queue": settings.steps_queue, "routing_key": settings.steps_queue},
                     RECONCILE_TASK: {"queue": settings.steps_queue, "routing_key": settings.steps_queue}},
        task_default_queue=settings.queue,
        task_default_exchange=settings.queue,
        task_default_routing_key=settings.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # the command record in Redis is the result; no result backend needed
        # A worker killed mid-task (SIGKILL, OOM) must not lose the command: ack only after the task
        # returns, and requeue when the child dies. Tasks are idempotent by command id.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A task holds its message only while it sends one request (callbacks are not awaited in a slot),
        # plus countdowns of retries, which the tasks cap at half of this. A dead worker's message comes
        # back after this long; the restore sweep runs every interval (kombu's default sweep is ~100 s).
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s,
                                  "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 4)),
                                  "unacked_restore_throttle": 1},
        broker_connection_retry_on_startup=True,
        # Never give up on the broker: through a failover or an outage of any length a worker waits and reconnects
        # (Celery's default gives up after 100 tries and the worker exits, to stay down when unsupervised).
        broker_connection_max_retries=None,
        # Task events (received/started/succeeded, one Redis PUBLISH each) only feed monitors: profiled, they were
        # ~15 % of a worker's CPU per command. A worker sends them when started with -E (callq up, compose.yaml and
        # the Kubernetes worker do: they run Flower) or while a monitor asks (Flower re-enables them every 5 s).
        worker_send_task_events=False,
        task_send_sent_event=True,
        worker_hijack_root_logger=False,
        redbeat_redis_url=settings.redis_url,
        redbeat_key_prefix="callq:redbeat",
        # redbeat's own Redis client options (none): without this it falls back to broker_transport_options,
        # which is deprecated and holds kombu's options, not the client's.
        redbeat_redis_options={},
        # Beat fail-over. Only the beat holding redbeat's lock sends anything; it renews the lock on every
        # tick (at most beat_max_loop_interval apart) and a standby polls for it as often. When the holder
        # dies, a standby takes over within lock timeout + one interval. 25 s (5 ticks) rides out a Redis
        # blip or a GC pause of up to ~20 s without a false takeover, and a takeover costs little: an
        # occurrence fires late by that much, never twice (occurrences are claimed, not trusted to the lock),
        # and a deposed beat exits at its next tick (LockNotOwnedError). The tick is a fifth of the lock so
        # a short test lock still allows four missed renewals.
        beat_max_loop_interval=min(5.0, settings.beat_lock_timeout_s / 5),
        redbeat_lock_timeout=settings.beat_lock_timeout_s,
        # Scheduled recordings' safety net: re-sends lost wake-ups and re-books lost fires.
        beat_schedule={":schedules-sweep": {"task": "callq.schedule_sweep", "schedule": SCHEDULE_SWEEP_EVERY_S}},
        enable_utc=True,
    )
    sentinel_options = located.pop("broker_transport_options", {})
    app.conf.broker_transport_options = {**app.conf.broker_transport_options, **sentinel_options}
    app.conf.update(located)  # the broker's transport; behind Sentinel also redbeat's URL and options
    app.conf.callq_settings = settings
    return app


app = create_celery(process_settings())
