"""The webhook deliverer: one per worker process, on its own thread and event loop, beside Celery's pool.

Why not a Celery task per delivery: an endpoint that answers slowly would hold a worker slot for as long as it
takes (up to the timeout), and a hundred slow endpoints would stop every command. Here a delivery in flight is a
socket on an event loop: a slow endpoint costs nothing but that socket, connections to an endpoint are kept alive
across deliveries, and the workers' slots stay with commands (so deliveries cannot starve them, #18).

The record in Redis is the truth, as for commands: ``WEBHOOKS_DUE`` says which lane is due when; a deliverer
claims lanes from it (``webhook_claim.lua``) for a lease longer than the request timeout (:func:`lease_s`); a
deliverer that dies mid-delivery (SIGKILL) simply lets its leases lapse and another one sends the same message again
(same ``webhook-id``). A new message wakes every deliverer at once (a Redis PUBLISH); without one they look every
second anyway, which is also when retries that came due are picked up.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from workers import keys, metrics, redis_clients, webhooks
from workers.egress import EgressRefused, Policy, parse_url
from workers.scripts import AutoPipeline
from workers.sender import Sender
from workers.settings import Settings

log = logging.getLogger("callq.webhooks")
POLL_S = 1.0  # retries come due without a wake-up: look this often
LEASE_MARGIN_S = 30.0  # the most a claim outlives the request's timeout by (see lease_s)


def lease_s(timeout_s: float) -> float:
    """How long a deliverer's claim on a lane lasts: the timeout, plus as much again up to ``LEASE_MARGIN_S``.

    The lease must outlive the attempt it covers: one attempt is bounded by the timeout (resolution and request
    together, ``Sender.post``), and the margin covers what comes around it (two Redis reads before, the result
    script after, a GC or GIL pause, clocks of hosts a little apart: claims are timed by the deliverer's clock).
    Milliseconds in practice, so the timeout again is ample, and the margin shrinks with short timeouts (a test's
    2 s) instead of holding a killed deliverer's lanes 30 s. A lease that does lapse mid-attempt costs a duplicate,
    never order: the result of a claim that is no longer the message's is ``stale`` and moves nothing
    (``webhook_result.lua``), so the lane goes on only from the new holder's attempt.
    """
    return timeout_s + min(LEASE_MARGIN_S, timeout_s)


class Deliverer:
    """Claims due lanes and delivers their messages, at most ``settings.webhook_concurrency`` lanes at once."""

    def __init__(self, settings: Settings, redis: aioredis.Redis, sender: Sender, *,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._redis = redis
        self._scripts = AutoPipeline(redis)
        self._sender = sender
        self._rng = rng or random.Random()
        self._clock = clock
        self._lease_ms = int(lease_s(settings.webhook_timeout_s) * 1000)
        self._tokens = (f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{n}" for n in itertools.count())
        self._lanes: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then let the deliveries in flight finish (their leases cover them)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            failing = False
            while not stop.is_set():
                try:
                    if not pubsub.subscribed:  # first, and again after Redis came back
                        await pubsub.subscribe(keys.WEBHOOKS_CHANNEL)
                    full = await self.round()
                    failing = False
                except Exception as exc:  # Redis down: try again at the next poll, never give up
                    if not failing:  # once per outage, not once a second
                        log.warning("webhook deliverer: claiming failed: %s", type(exc).__name__)
                    failing, full = True, False
                await self._wait(pubsub, stop, full)
        finally:
            if self._lanes:
                await asyncio.wait(set(self._lanes), timeout=self._settings.webhook_timeout_s + 1)
            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py's PubSub.aclose is unannotated

    async def _wait(self, pubsub: Any, stop: asyncio.Event, full: bool) -> None:
        """Until a slot frees (when every slot was taken and more may be due), else a wake-up, a poll or stop."""
        self._freed.clear()
        if full:
            await _first(self._freed.wait(), stop.wait(), timeout=POLL_S)
            return
        if not pubsub.subscribed:
            await _first(stop.wait(), timeout=POLL_S)
            return
        try:
            message = await pubsub.get_message(timeout=POLL_S)
            while message is not None:  # a burst of messages added is one wake-up
                message = await pubsub.get_message(timeout=0)
        except Exception:  # the subscription broke (Redis restart): reconnects on the next read; poll meanwhile
            await _first(stop.wait(), timeout=POLL_S)

    async def round(self) -> bool:
        """Claim what is due and start delivering it; True when every slot is now taken."""
        free = self._settings.webhook_concurrency - len(self._lanes)
        if free <= 0:
            return True
        claims = await self._scripts.run(webhooks.claim(now_ms=self._now_ms(), lease_ms=self._lease_ms, most=free,
                                                        token=next(self._tokens)))
        for c in claims:
            task = asyncio.get_running_loop().create_task(self._lane(c))
            self._lanes.add(task)
            task.add_done_callback(self._done)
        return len(claims) >= free

    def _done(self, task: asyncio.Task[None]) -> None:
        self._lanes.discard(task)
        self._freed.set()
        if not task.cancelled() and task.exception() is not None:
            # Its lease lapses and the message goes out again: logged, never lost.
            log.warning("webhook delivery failed: %s", type(task.exception()).__name__)

    async def _lane(self, c: webhooks.Claim | None) -> None:
        """Deliver the claimed message, then the lane's next ones while they come straight after it."""
        while c is not None:
            c = await self.attempt(c)

    async def attempt(self, c: webhooks.Claim) -> webhooks.Claim | None:
        """One attempt of the claimed message; the lane's next claim when it moved straight on.

        Two Redis round trips per message at most, one when a lane's messages follow each other: the claim (or the
        previous message's result) brings the message, the snapshot of its command its body is made from, and the
        endpoint; the result script records the answer, stores the body made at the first attempt, and claims the
        lane's next message.
        """
        message, endpoint = c.message, c.endpoint
        if not message or not endpoint.get("secret"):  # expired, or the endpoint was deleted meanwhile
            return None
        new_body = "body" not in message
        payload = message["body"].encode() if not new_body else webhooks.body(message, c.command or None)
        now_ms = self._now_ms()
        at = datetime.fromtimestamp(now_ms / 1000, UTC)
        status: int | None = None
        retry_after: float | None = None
        try:
            target = parse_url(endpoint.get("url", ""))
            answer = await self._sender.post(target, payload, webhooks.headers(
                c.message_id, at, payload, webhooks.signing_secrets(endpoint, now_ms)))
            status, retry_after, error = answer.status, answer.retry_after_s, answer.error
        except EgressRefused as exc:
            error = exc.code
        outcome, wait_s = webhooks.verdict(status, retry_after, round_=int(message.get("round") or 0),
                                           schedule=self._settings.webhook_retry_schedule, rng=self._rng)
        done_ms = self._now_ms()
        moved = await self._scripts.run(webhooks.record_result(
            c, outcome=outcome, now_ms=done_ms, next_ms=done_ms + int(wait_s * 1000) if outcome == "retry" else 0,
            status=status, error=error, lease_ms=self._lease_ms, next_token=next(self._tokens),
            body=payload if new_body else b""))
        # In memory: the worker's flusher writes it with everything else, about once a second (no Redis command here).
        metrics.RECORDER.inc("callq_webhook_deliveries", "stale" if moved.state == "stale" else outcome)
        if outcome == "gone" and moved.state == "disabled":
            log.warning("webhook endpoint %s answered 410 Gone: disabled", c.endpoint_id)
        return moved.next


async def _first(*waits: Any, timeout: float) -> None:
    """Wait until the first of these awaitables finishes (or ``timeout``), cancelling the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class DelivererThread:
    """A ``Deliverer`` on its own thread and event loop (a worker process runs one)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="callq-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()
        self._started.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout_s)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        settings = self._settings
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        redis = redis_clients.async_client(settings, max_connections=settings.webhook_concurrency + 8,
                                           health_check_interval=30)
        sender = Sender(Policy(settings.webhook_allowed_networks), timeout_s=settings.webhook_timeout_s,
                        max_connections=settings.webhook_concurrency)
        self._started.set()
        try:
            await Deliverer(settings, redis, sender).run(self._stop)
        finally:
            await sender.aclose()
            await redis.aclose()
