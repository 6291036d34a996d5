"""Long-poll support: one Redis subscription per API process wakes every request waiting on a command.

A command's terminal transition publishes its record with its id (lib.lua's ``transition``), so a woken
request answers with that record instead of reading it back: the read would queue behind the rest of the
callback that resolved the command, on this process's event loop and on Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from workers import keys, ledger

log = logging.getLogger("callq.api")


class Waiter:
    """One long-poll's wake-up: ``record`` is the command as it ended, or None when it must be read again."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.record: dict[str, str] | None = None

    def set(self, record: dict[str, str] | None) -> None:
        self.record = record
        self._event.set()

    async def wait(self) -> None:
        await self._event.wait()


class Notifier:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._waiters: dict[str, set[Waiter]] = defaultdict(set)
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
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                # Leaving the subscription sends UNSUBSCRIBE; with Redis gone that fails, and shutdown goes on.
                log.info("command notifications closed without Redis (%s)", type(exc).__name__)

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
                            self._wake(message["data"])
            except (aioredis.ConnectionError, aioredis.TimeoutError) as exc:
                if not outage:
                    log.warning("command notifications lost their Redis connection (%s); retrying", exc)
                    outage = True
                # Wake everyone so they re-read the record instead of waiting out their timeout blind.
                for waiters in self._waiters.values():
                    for waiter in waiters:
                        waiter.set(None)
                await asyncio.sleep(1.0)  # sleep-ok: reconnect back-off, not synchronisation

    def _wake(self, message: str) -> None:
        command_id = message.partition(" ")[0]
        waiters = self._waiters.get(command_id)
        if waiters:  # most announcements concern commands nobody here waits for: parse only the wanted ones
            record = ledger.announced(message)[1]
            for waiter in waiters:
                waiter.set(record)

    @contextlib.asynccontextmanager
    async def watch(self, command_id: str) -> AsyncIterator[Waiter]:
        """Register before reading the record, so a resolution between read and wait is not missed."""
        waiter = Waiter()
        self._waiters[command_id].add(waiter)
        try:
            yield waiter
        finally:
            self._waiters[command_id].discard(waiter)
            if not self._waiters[command_id]:
                del self._waiters[command_id]
