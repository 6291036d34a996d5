"""Every Redis client callq builds, from settings: one URL, or the primary that Sentinel names.

With ``Settings.redis_sentinels`` a client asks the Sentinels for the primary of ``redis_sentinel_master`` whenever
it opens a connection (redis-py's ``SentinelConnectionPool``): after a failover the next connection goes to the
promoted replica, and a connection still on the demoted primary fails its first write with READONLY, which
redis-py turns into a ``ConnectionError`` and a disconnect, so the retry goes through discovery again. No
process restart is needed. Celery's broker and redbeat build their own clients from ``tasks/app.py``'s
configuration, which takes its pieces from here (``master_params``, ``sentinel_kwargs``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import Sentinel

from workers.settings import Settings

# A Sentinel that does not answer within this is skipped for the next one: discovery runs on every reconnect, so
# one dead Sentinel must cost little. A primary's own timeouts are the caller's.
SENTINEL_TIMEOUT_S = 0.5


def master_params(settings: Settings) -> dict[str, Any]:
    """The primary's database, credentials and TLS, from ``redis_url`` (its host and port are Sentinel's to say)."""
    url = urlsplit(settings.redis_url)
    path = url.path.lstrip("/")
    params: dict[str, Any] = {"db": int(path) if path.isdigit() else 0}
    if url.username:
        params["username"] = unquote(url.username)
    if url.password:
        params["password"] = unquote(url.password)
    if url.scheme == "rediss":
        params["ssl"] = True
    return params


def sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    """How to talk to the Sentinels themselves (their password is their own, not the primary's)."""
    kwargs: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT_S, "socket_connect_timeout": SENTINEL_TIMEOUT_S}
    if settings.redis_sentinel_password:
        kwargs["password"] = settings.redis_sentinel_password
    if settings.redis_sentinel_tls:
        kwargs["ssl"] = True
    return kwargs


class _Primary(redis.Redis):
    """The primary's client; closing it also closes its connections to the Sentinels, which redis-py leaves open."""

    def close(self) -> None:
        super().close()
        for sentinel in getattr(getattr(self.connection_pool, "sentinel_manager", None), "sentinels", []):
            sentinel.close()


class _AsyncPrimary(aioredis.Redis):
    """The same for asyncio clients (an open transport left for the garbage collector warns, and leaks a socket)."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in getattr(getattr(self.connection_pool, "sentinel_manager", None), "sentinels", []):
            await sentinel.aclose()


def sync_client(settings: Settings, *, decode_responses: bool = True, **options: Any) -> redis.Redis:
    """A blocking client (workers, beat helpers, the CLI); ``options`` are redis-py's (socket_timeout, ...)."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url, decode_responses=decode_responses, **options)
    sentinel = Sentinel(list(settings.redis_sentinels),  # type: ignore[no-untyped-call]  # redis-py: unannotated
                        sentinel_kwargs=sentinel_kwargs(settings))
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]  # as above
        settings.redis_sentinel_master, redis_class=_Primary, decode_responses=decode_responses,
        **master_params(settings), **options)
    return client


class _BlockingSentinelPool(AsyncSentinelPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (discovery on connect) with the blocking pool's wait for a free connection.

    The MRO puts Sentinel's connection handling over BlockingConnectionPool's get/release, which is what the API
    needs: a burst waits for a connection rather than failing with "too many connections".
    """


def async_client(settings: Settings, *, max_connections: int | None = None, pool_wait_s: float | None = None,
                 **options: Any) -> aioredis.Redis:
    """An asyncio client with decoded responses; with ``pool_wait_s`` a request waits that long for a free
    connection of the ``max_connections`` instead of failing (the API's pools)."""
    if pool_wait_s is not None:
        options["max_connections"] = max_connections
        options["timeout"] = pool_wait_s
    elif max_connections is not None:
        options["max_connections"] = max_connections
    if not settings.redis_sentinels:
        if pool_wait_s is not None:
            return aioredis.Redis.from_pool(aioredis.BlockingConnectionPool.from_url(
                settings.redis_url, decode_responses=True, **options))
        return aioredis.Redis.from_url(settings.redis_url, decode_responses=True, **options)
    sentinel = AsyncSentinel(list(settings.redis_sentinels),  # type: ignore[no-untyped-call]  # redis-py: unannotated
                             sentinel_kwargs=sentinel_kwargs(settings))
    pool_class = _BlockingSentinelPool if pool_wait_s is not None else AsyncSentinelPool
    client: aioredis.Redis = sentinel.master_for(settings.redis_sentinel_master, redis_class=_AsyncPrimary,
                                                 connection_pool_class=pool_class, decode_responses=True,
                                                 **master_params(settings), **options)
    return client


def describe(settings: Settings) -> str:
    """Where Redis is, for messages: the URL (password hidden) or the Sentinels and the primary's name."""
    if settings.redis_sentinels:
        hosts = ",".join(f"{h}:{p}" for h, p in settings.redis_sentinels)
        return f"primary {settings.redis_sentinel_master!r} of Sentinels {hosts}"
    url = urlsplit(settings.redis_url)
    if url.password is None:
        return settings.redis_url
    return url._replace(netloc=f"{url.username or ''}:***@{url.hostname}" + (f":{url.port}" if url.port else "")
                        ).geturl()
