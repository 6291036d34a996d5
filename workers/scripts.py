"""Running callq's Lua scripts: by SHA, and from the API pipelined across concurrent requests.

A script's text (kilobytes) crosses the wire once per Redis server, not once per call: both runners send
``EVALSHA`` and fall back to ``EVAL`` only when Redis answers ``NOSCRIPT`` (after a restart or
``SCRIPT FLUSH``), which also loads the script for the next call.

``AutoPipeline`` is the API's runner. Under load many requests reach their script in the same event-loop
turn; their calls go out together as one pipeline (one connection taken from the pool, one write, the
replies read back in order) instead of one round trip each: the same idea as ioredis's auto-pipelining.
Each script still runs atomically on its own, so nothing about what a script guarantees changes; a caller
that awaits its answer before making its next call (as ``correlation.ingest`` does for the events of one
POST) keeps its own calls in order. A single request pays one extra event-loop turn at most.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError


@functools.lru_cache(maxsize=64)  # callq has a dozen scripts
def sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


def run(r: redis.Redis, script: str, keys: list[str], args: list[Any]) -> Any:
    """One script call on a blocking client."""
    try:
        return r.evalsha(sha(script), len(keys), *keys, *args)
    except NoScriptError:
        return r.eval(script, len(keys), *keys, *args)


_Call = tuple[str, list[str], list[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    """Script calls made by concurrent tasks on one event loop, sent to Redis as one pipeline per turn."""

    def __init__(self, r: aioredis.Redis) -> None:
        self._redis = r
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def run(self, script: str, keys: list[str], args: list[Any]) -> Any:
        """The script's reply; Redis errors (connection, timeout, a script error) are raised to this caller."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._pending.append((script, keys, args, answer))
        if len(self._pending) == 1:
            # The task's first step runs on the next turn, after every request already woken on this one
            # has queued its call: that is the batch.
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await answer

    async def _send(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await self._answer(batch)
        finally:  # cancelled (shutdown) or failed while re-running: nobody may wait for ever
            for *_, answer in batch:
                if not answer.done():
                    answer.set_exception(redis.ConnectionError("The pipeline to Redis was interrupted."))

    async def _answer(self, batch: list[_Call]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args, _ in batch:
            pipe.evalsha(sha(script), len(keys), *keys, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # the connection failed: nobody in this batch got an answer
            for *_, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (script, keys, args, answer), reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):
                # Every call of this script in the batch failed alike, so re-running them in batch order
                # keeps a caller's calls in order.
                try:
                    reply = await self._redis.eval(script, len(keys), *keys, *args)
                except Exception as exc:
                    reply = exc
            if answer.done():  # its caller was cancelled; the script ran all the same
                continue
            if isinstance(reply, Exception):
                answer.set_exception(reply)
            else:
                answer.set_result(reply)
