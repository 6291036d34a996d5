"""The API on fakeredis, shared by the unit tests of its routes; a test module may override any of these."""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from workers.settings import Settings


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def sync_redis(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis(server=server, decode_responses=True)


@pytest.fixture
def r(sync_redis: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    return sync_redis


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer) -> Iterator[TestClient]:
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app) as c:
        yield c
