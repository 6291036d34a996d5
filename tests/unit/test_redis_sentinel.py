"""Sentinel settings and what every client, the broker and redbeat are built with from them."""

from __future__ import annotations

import pytest
from redis.asyncio.sentinel import SentinelConnectionPool as AsyncSentinelPool
from redis.sentinel import SentinelConnectionPool

from tasks import broker
from tasks.app import create_celery
from workers import redis_clients
from workers.errors import ConfigError
from workers.settings import Settings

SENTINEL_ENV = {"CALLQ_REDIS_SENTINELS": "s1:26379, s2:26380,[::1]:26381", "CALLQ_REDIS_SENTINEL_MASTER": "callq"}


def test_sentinels_parse_into_host_port_pairs_and_imply_an_external_redis() -> None:
    s = Settings.from_env(SENTINEL_ENV)
    assert s.redis_sentinels == (("s1", 26379), ("s2", 26380), ("::1", 26381))
    assert s.redis_sentinel_master == "callq"
    assert s.external_redis


@pytest.mark.parametrize(("env", "names"), [
    ({"CALLQ_REDIS_SENTINELS": "s1"}, "CALLQ_REDIS_SENTINELS"),
    ({"CALLQ_REDIS_SENTINELS": "s1:port"}, "CALLQ_REDIS_SENTINELS"),
    ({"CALLQ_REDIS_SENTINELS": "s1:70000"}, "CALLQ_REDIS_SENTINELS"),
    ({"CALLQ_REDIS_SENTINELS": "s1:26379"}, "CALLQ_REDIS_SENTINEL_MASTER"),
    ({"CALLQ_REDIS_SENTINEL_MASTER": "callq"}, "CALLQ_REDIS_SENTINELS"),
    ({**SENTINEL_ENV, "CALLQ_REDIS_SENTINEL_TLS": "maybe"}, "CALLQ_REDIS_SENTINEL_TLS"),
    ({**SENTINEL_ENV, "CALLQ_REDIS_URL": "unix:///tmp/redis.sock"}, "CALLQ_REDIS_URL"),
])
def test_bad_sentinel_settings_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_sentinel_password_is_never_printed() -> None:
    s = Settings.from_env({**SENTINEL_ENV, "CALLQ_REDIS_SENTINEL_PASSWORD": "sentinel-secret"})
    assert s.redis_sentinel_password == "sentinel-secret"
    assert "sentinel-secret" not in repr(s)


def test_the_primary_takes_db_credentials_and_tls_from_the_url_and_sentinels_their_own() -> None:
    s = Settings.from_env({**SENTINEL_ENV, "CALLQ_REDIS_URL": "rediss://app:p%40ss@ignored:1/3",
                           "CALLQ_REDIS_SENTINEL_PASSWORD": "sp", "CALLQ_REDIS_SENTINEL_TLS": "true"})
    assert redis_clients.master_params(s) == {"db": 3, "username": "app", "password": "p@ss", "ssl": True}
    assert redis_clients.sentinel_kwargs(s) == {"socket_timeout": redis_clients.SENTINEL_TIMEOUT_S,
                                                "socket_connect_timeout": redis_clients.SENTINEL_TIMEOUT_S,
                                                "password": "sp", "ssl": True}
    assert "p@ss" not in redis_clients.describe(s) and "s1:26379" in redis_clients.describe(s)


def test_clients_behind_sentinel_use_sentinel_pools_for_the_master() -> None:
    s = Settings.from_env({**SENTINEL_ENV, "CALLQ_REDIS_URL": "redis://:pw@x/2"})
    sync = redis_clients.sync_client(s)
    assert isinstance(sync.connection_pool, SentinelConnectionPool)
    assert sync.connection_pool.service_name == "callq"
    assert sync.connection_pool.connection_kwargs["db"] == 2
    api_pool = redis_clients.async_client(s, max_connections=7, pool_wait_s=3.0).connection_pool
    assert isinstance(api_pool, AsyncSentinelPool) and api_pool.max_connections == 7
    assert api_pool.timeout == 3.0  # type: ignore[attr-defined]  # the blocking pool's wait


def test_without_sentinels_clients_use_the_url() -> None:
    s = Settings(redis_url="redis://127.0.0.1:1/4")
    assert redis_clients.sync_client(s).connection_pool.connection_kwargs["db"] == 4
    assert redis_clients.async_client(s, max_connections=3, pool_wait_s=1.0).connection_pool.max_connections == 3


def test_broker_and_redbeat_behind_sentinel() -> None:
    s = Settings.from_env({**SENTINEL_ENV, "CALLQ_REDIS_URL": "redis://:p%3Bw@x/1",
                           "CALLQ_REDIS_SENTINEL_PASSWORD": "sp"})
    conf = create_celery(s).conf
    assert conf.broker_url == "sentinel://:p%3Bw@s1:26379/1;sentinel://:p%3Bw@s2:26380/1;sentinel://:p%3Bw@[::1]:26381/1"
    assert isinstance(create_celery(s).connection_for_write().transport, broker.SentinelTransport)
    options = conf.broker_transport_options
    assert options["master_name"] == "callq" and options["sentinel_kwargs"]["password"] == "sp"
    assert options["visibility_timeout"] == s.visibility_timeout_s  # callq's own options are kept
    assert conf.redbeat_redis_url.startswith("redis-sentinel://")
    assert conf.redbeat_redis_options["service_name"] == "callq"
    assert conf.redbeat_redis_options["sentinels"] == list(s.redis_sentinels)
    assert conf.redbeat_redis_options["password"] == "p;w" and conf.redbeat_redis_options["db"] == 1


def test_broker_without_sentinel_is_unchanged() -> None:
    conf = create_celery(Settings(redis_url="redis://127.0.0.1:1/0")).conf
    assert conf.broker_url == "redis://127.0.0.1:1/0" and conf.broker_transport is None  # redis:// names it
    assert "master_name" not in conf.broker_transport_options
    assert conf.redbeat_redis_url == "redis://127.0.0.1:1/0"


def test_the_sentinel_channel_keeps_one_client_and_kombus_sentinel_pool() -> None:
    mro = broker.SentinelChannel.__mro__
    assert mro.index(broker.Channel) < mro.index(broker.kombu_redis.SentinelChannel)
    assert broker.SentinelChannel.conn_or_acquire is broker.Channel.conn_or_acquire
    assert broker.SentinelChannel._get_pool is broker.kombu_redis.SentinelChannel._get_pool
