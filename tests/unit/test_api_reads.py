"""ACS reads through the API: a spent budget (callq's or ACS's own) is 429 rate_limited with Retry-After, never 502."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import fakeredis
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from api.app import create_app
from tests.conftest import TEST_API_KEY
from tests.unit.test_acs_client import _Proxy, serving
from workers import keys
from workers.acs import create_client
from workers.ratelimit import RateLimiter
from workers.settings import Settings

CC = "cc-1"
READS = [f"/v1/calls/{CC}", f"/v1/calls/{CC}/participants", f"/v1/calls/{CC}/participants/4:+14255550123",
         "/v1/recordings/rec-1"]
AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


@pytest.fixture
def app(settings: Settings, server: fakeredis.FakeServer, r: fakeredis.FakeRedis) -> Starlette:
    r.hset(keys.call_key(CC), mapping={"client": "alice", "state": "connected", "server_call_id": "scid-1"})
    r.hset(keys.recording_key("rec-1"), mapping={"client": "alice", "call_connection_id": CC})
    return create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))


def _use_acs(client: TestClient, settings: Settings, endpoint: str, limiter: RateLimiter | None = None) -> None:
    client.app_state["acs"].close()
    client.app_state["acs"] = create_client(dataclasses.replace(settings, acs_endpoint=endpoint), limiter)


class _Throttling(_Proxy):
    """ACS refusing every request with 429 and a Retry-After."""

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        body = b'{"error": {"code": "429", "message": "Too many requests."}}'
        self.send_response(429)
        self.send_header("Retry-After", "7")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def throttling_acs() -> Iterator[str]:
    with serving(_Throttling) as url:
        yield url


@pytest.mark.parametrize("path", READS)
def test_a_spent_budget_makes_an_acs_read_429_with_retry_after(app: Starlette, settings: Settings,
                                                                r: fakeredis.FakeRedis, path: str) -> None:
    limiter = RateLimiter(r, "acs.test", rate_per_s=1.0, burst=1)
    limiter.pause(30.0)  # a 429 seen by someone else: nobody may send for 30 s, far over rate_wait_max_s
    with TestClient(app) as client:
        # The policy raises before the transport: the endpoint is never reached.
        _use_acs(client, settings, "http://127.0.0.1:9", limiter)
        resp = client.get(path, headers=AUTH)
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(resp.headers["Retry-After"]) <= 30


@pytest.mark.parametrize("path", READS)
def test_acs_throttling_a_read_is_429_with_its_retry_after(app: Starlette, settings: Settings,
                                                           throttling_acs: str, path: str) -> None:
    with TestClient(app) as client:
        _use_acs(client, settings, throttling_acs)
        resp = client.get(path, headers=AUTH)
    assert resp.status_code == 429, resp.text
    assert resp.json()["error"]["code"] == "rate_limited"
    assert resp.headers["Retry-After"] == "7"
