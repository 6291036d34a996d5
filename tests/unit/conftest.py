"""The API on fakeredis (the store and its clients are in tests/conftest.py), shared by the unit tests of its routes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
import requests
from azure.core.pipeline import PipelineContext, PipelineResponse
from azure.core.pipeline.transport import RequestsTransportResponse
from azure.core.rest import HttpRequest
from starlette.testclient import TestClient

from api.app import create_app
from workers.settings import Settings


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer) -> Iterator[TestClient]:
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app) as c:
        yield c


@pytest.fixture(params=["fake", "real"])
def fake_and_real_redis(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """Each test that takes it runs twice: on fakeredis, and on the suite's real redis-server."""
    if request.param == "fake":
        yield fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)
    else:
        yield redis.Redis.from_url(request.getfixturevalue("redis_url"), decode_responses=True)


def acs_response(status: int, headers: dict[str, str], body: bytes = b"") -> PipelineResponse[Any, Any]:
    """A response as the SDK's requests transport hands it to the pipeline (no network)."""
    raw = requests.Response()
    raw.status_code, raw._content = status, body
    raw.headers.update(headers)
    request = HttpRequest("GET", "https://res.communication.azure.com/calling/callConnections/cc")
    return PipelineResponse(request, RequestsTransportResponse(request, raw), PipelineContext(None))
