"""Long-poll support: one Redis subscription per API process wakes every request waiting on a command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from workers import keys

log = logging.getLogger("callq.api")


class Notifier:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self, ready_timeout_s: float = 5.0) -> None:
        """Subscribe in the background; the API starts even when Redis is down (readyz then says so)."""
        self._task = asyncio.create_task(self._listen())
        try:
            await asyncio.wait_for(self._ready.wait(), timeout=ready_timeout_s)
        except TimeoutError:
            log.warning("command notifications are not subscribed yet; long-polls re-read at their deadline")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        outage = False
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.COMMAND_DONE_CHANNEL)
                    self._ready.set()
                    if outage:
                        log.warning("command notifications resubscribed")
                        outage = False
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            for event in self._waiters.get(message["data"], ()):
                                event.set()
            except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                if not outage:
                    log.warning("command notifications lost their Redis connection (%s); retrying", exc)
                    outage = True
                # Wake everyone so they re-read the record instead of waiting out their timeout blind.
                for events in self._waiters.values():
                    for event in events:
                        event.set()
                await asyncio.sleep(1.0)  # sleep-ok: reconnect back-off, not synchronisation

    @contextlib.asynccontextmanager
    async def watch(self, command_id: str) -> AsyncIterator[asyncio.Event]:
        """Register before reading the record, so a resolution between read and wait is not missed."""
        event = asyncio.Event()
        self._waiters[command_id].add(event)
        try:
            yield event
        finally:
            self._waiters[command_id].discard(event)
            if not self._waiters[command_id]:
                del self._waiters[command_id]
