"""kombu's Redis transport with one Redis client per channel, instead of a new one for every publish and ack.

Stock kombu builds a fresh ``redis.Redis`` (on the channel's shared connection pool) in ``conn_or_acquire`` for
each fanout publish (every Celery task event), and for each message's unacked bookkeeping and its ack. With
redis-py 8 building a client is not free (it copies the response-callback table): profiled on a worker running
connect commands one at a time, it was ~13 % of the worker's CPU. A ``redis.Redis`` is safe to share between
threads (each command borrows a connection from the pool), so the channel keeps one and hands it out.

``tasks.app.create_celery`` registers it (``register``) for ``redis://`` brokers, and ``SentinelTransport`` (the
same channel over kombu's SentinelChannel, whose pool asks the Sentinels for the primary on every connect) for
``sentinel://``; everything else about the transport (BRPOP, visibility timeout, unacked restore) is kombu's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis.exceptions
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis

from tasks.versions import require_tested

require_tested("kombu")  # the overrides below match kombu 5.7's Channel; refuse any other minor

TRANSPORT = "tasks.broker:Transport"
SENTINEL_TRANSPORT = "tasks.broker:SentinelTransport"


def register() -> None:
    """Have ``redis://`` and ``sentinel://`` broker URLs mean callq's transports in this process.

    Through kombu's own alias table rather than Celery's ``broker_transport`` (a class path): a connection then
    keeps its standard scheme in ``as_uri()``, which Flower reads to pick how to list the queues on its broker page
    (it knows ``redis`` and ``sentinel``, not a class path). ``rediss://`` keeps kombu's transport, whose TLS
    defaults come from that scheme's name.
    """
    TRANSPORT_ALIASES["redis"] = TRANSPORT
    TRANSPORT_ALIASES["sentinel"] = SENTINEL_TRANSPORT


# Redis answers, but not as a writable primary: the address in use is a replica not yet promoted (READONLY), or one
# that lost its primary (MASTERDOWN). kombu files these under channel errors, which Celery's consumer treats as
# unrecoverable: the worker exits. They are a failover in progress, so they count as a lost connection here, and
# the consumer reconnects (with Sentinel, to whichever server is the primary by then) and carries on.
NOT_PRIMARY_ERRORS: tuple[type[Exception], ...] = (redis.exceptions.ReadOnlyError, redis.exceptions.MasterDownError)


class Channel(kombu_redis.Channel):
    _shared_client: Any = None

    def _brpop_read(self, **options: Any) -> Any:
        try:
            return super()._brpop_read(**options)  # type: ignore[no-untyped-call]  # kombu: unannotated
        except redis.exceptions.ResponseError as exc:
            # A server turned replica answers a blocked BRPOP with "UNBLOCKED ... (master -> replica?)".
            if str(exc).startswith("UNBLOCKED") or isinstance(exc, NOT_PRIMARY_ERRORS):
                self.client.connection.disconnect()
                raise redis.exceptions.ConnectionError(str(exc)) from exc
            raise

    @contextlib.contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client is None:
            if self._shared_client is None:
                if getattr(self.connection, "client", None) is None:
                    # Celery collects a connection it lost (which drops the transport's client) and then closes it,
                    # which closes this channel again and restores its unacked messages: with no broker URL left
                    # kombu would fail on an AttributeError, which ends the worker. A connection error instead is
                    # one that close ignores; the messages stay in Redis' unacked index, and come back when their
                    # visibility timeout passes (or the sweeper revives their commands).
                    raise redis.exceptions.ConnectionError("the broker connection was already closed")
                self._shared_client = self._create_client()  # type: ignore[no-untyped-call]  # kombu: unannotated
            client = self._shared_client
        yield client

    def _disconnect_pools(self) -> None:
        # After a fork or on close the pools are dropped; the next use builds a client on the new pool.
        self._shared_client = None
        super()._disconnect_pools()  # type: ignore[no-untyped-call]  # kombu: unannotated


class Transport(kombu_redis.Transport):
    Channel = Channel
    connection_errors = (*kombu_redis.Transport.connection_errors, *NOT_PRIMARY_ERRORS)


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The shared client over kombu's Sentinel-managed pool (MRO: our conn_or_acquire, kombu's _get_pool)."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
    connection_errors = Transport.connection_errors
