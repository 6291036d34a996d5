"""Shared fixtures: settings, fake Redis, and a real redis-server on a free port."""

from __future__ import annotations

import base64
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import fakeredis
import pytest
import redis

from workers.settings import Settings

TEST_API_KEY = "test-key-0123456789abcdef"
OTHER_API_KEY = "other-key-0123456789abcdef"
TEST_ACS_KEY = base64.b64encode(b"callq-test-access-key-32-bytes!!").decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate, *, timeout_s: float, what: str, interval_s: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll a condition with a deadline: the only way tests synchronise. Returns the truthy value."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)  # sleep-ok: polling interval inside a bounded wait, not synchronisation


@pytest.fixture
def settings() -> Settings:
    return Settings(api_keys={"alice": TEST_API_KEY, "bob": OTHER_API_KEY}, acs_access_key=TEST_ACS_KEY)


@pytest.fixture
def server() -> fakeredis.FakeServer:
    """One fake Redis store per test; every fakeredis client a test builds on it sees the same data."""
    return fakeredis.FakeServer()


@pytest.fixture
def sync_redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server, decode_responses=True)


@pytest.fixture
def r(sync_redis: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    return sync_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A private redis-server for the test session, on a free port (never 6379)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs it) or `apt-get install redis-server`")
    port = free_port()
    data_dir = tempfile.mkdtemp(prefix="callq-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", data_dir, "--maxmemory-policy", "noeviction"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)

    def pings() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            assert proc.poll() is None, "redis-server exited during start-up"
            return False

    try:
        wait_until(pings, timeout_s=10, what="redis-server to answer PING")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's real Redis, flushed for this test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server
