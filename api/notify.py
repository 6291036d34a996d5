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

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen())
        await asyncio.wait_for(self._ready.wait(), timeout=10)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen(self) -> None:
        while True:
            try:
                async with self._redis.pubsub() as pubsub:
                    await pubsub.subscribe(keys.COMMAND_DONE_CHANNEL)
                    self._ready.set()
                    async for message in pubsub.listen():
                        if message["type"] == "message":
                            for event in self._waiters.get(message["data"], ()):
                                event.set()
            except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                log.warning("command notifications lost their Redis connection (%s); resubscribing", exc)
                # Wake everyone so they re-read the record instead of waiting out their timeout blind.
                for events in self._waiters.values():
                    for event in events:
                        event.set()
                await asyncio.sleep(0.5)

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
