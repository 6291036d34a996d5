"""Acknowledged means replicated: ``WAIT`` after the writes callq answers for (``CALLQ_REDIS_MIN_REPLICAS``).

Redis replicates asynchronously: it answers a write before any replica has it, so a primary that dies right
after can take an accepted command, an acknowledged ACS event or a claim with it, and Sentinel promotes a
replica that never saw them. With ``min_replicas`` > 0 every write callq acknowledges to the outside (the 202
of a command, the 200 to ACS or Event Grid, a schedule, room or webhook write) and every claim a worker makes
before it sends to ACS is followed, on the same connection, by ``WAIT min_replicas timeout_ms``. Fewer
confirmations in time raise :class:`NotReplicated`: the API answers 503 ``not_replicated`` (retrying with the
same Idempotency-Key is safe: the write is there, or it is not and the retry makes it), a worker does not send.

``WAIT`` covers the writes *of its connection* up to that connection's last one (Redis keeps the replication
offset per client). So it always follows one write of a barrier key: that write's offset is past every write
the primary had taken, whichever connection made it. A request that wrote nothing itself (the replay of an
Idempotency-Key whose first answer was a 503) is then not acknowledged before the write it replays is on a
replica, and a write made in a transaction or on another pooled connection is covered too.

What it does not promise (Redis' own words): a write on a replica can still be lost if that replica is not the
one promoted, or on a partition; ``WAIT`` is receipt, not fsync. Zero keeps today's behaviour and costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis

from workers import keys
from workers.settings import Settings


class NotReplicated(redis.RedisError):
    """Fewer replicas than required confirmed a write in time (the write itself is on the primary)."""

    def __init__(self, reached: int, wanted: int, timeout_ms: int) -> None:
        super().__init__(f"{reached} of {wanted} replica(s) confirmed the write within {timeout_ms} ms")
        self.reached, self.wanted = reached, wanted


@dataclass(frozen=True)
class Replication:
    """How many replicas must confirm a write (0: none, no ``WAIT``), and how long to wait for them."""

    min_replicas: int = 0
    timeout_ms: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> Replication:
        return cls(settings.redis_min_replicas, settings.redis_replication_timeout_ms)

    @property
    def enabled(self) -> bool:
        return self.min_replicas > 0

    def add_wait(self, pipe: redis.client.Pipeline | aioredis.client.Pipeline) -> None:
        """End a non-transactional ``pipe`` with the barrier write and the ``WAIT`` (when enabled; inside MULTI
        ``WAIT`` would not block); ``check`` reads their replies."""
        if self.enabled:
            pipe.set(keys.REPLICATION_BARRIER, "1")
            pipe.execute_command("WAIT", self.min_replicas, self.timeout_ms)

    def check(self, replies: list[Any]) -> list[Any]:
        """The replies before the ones ``add_wait`` added; raises NotReplicated if ``WAIT`` fell short."""
        if not self.enabled:
            return replies
        for reply in replies[-2:]:
            if isinstance(reply, Exception):  # e.g. READONLY: the barrier met a demoted primary
                raise reply
        if int(replies[-1]) < self.min_replicas:
            raise NotReplicated(int(replies[-1]), self.min_replicas, self.timeout_ms)
        return replies[:-2]

    def confirm(self, r: redis.Redis) -> None:
        """Wait for the replicas to have every write the primary took before now (any connection's)."""
        if self.enabled:
            pipe = r.pipeline(transaction=False)
            self.add_wait(pipe)
            self.check(pipe.execute())

    async def confirm_async(self, r: aioredis.Redis) -> None:
        """The same on an asyncio client: the API calls it after its writes outside the script pipeline."""
        if self.enabled:
            pipe = r.pipeline(transaction=False)
            self.add_wait(pipe)
            self.check(await pipe.execute())
