"""Redis that cannot take writes (a failover in progress) is a 503 for the API and a lost connection for kombu."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis
from redis.exceptions import MasterDownError, ReadOnlyError, ResponseError
from starlette.requests import Request

from api.app import redis_refused
from api.reads import replicas
from tasks import broker


def _answer(exc: Exception) -> tuple[int, str, str | None]:
    request = Request({"type": "http", "method": "POST", "path": "/v1/calls/x/play", "headers": []})
    resp = asyncio.run(redis_refused(request, exc))
    return resp.status_code, json.loads(bytes(resp.body))["error"]["code"], resp.headers.get("retry-after")


@pytest.mark.parametrize("exc", [ReadOnlyError("You can't write against a read only replica."),
                                 MasterDownError("Link with MASTER is down"),
                                 ResponseError("NOREPLICAS Not enough good replicas to write.")])
def test_a_store_that_cannot_write_now_is_a_503_to_retry(exc: Exception) -> None:
    assert _answer(exc) == (503, "unavailable", "1")


def test_any_other_redis_error_answer_stays_a_500() -> None:
    assert _answer(ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"))[0] == 500


def test_kombu_treats_a_replica_as_a_lost_connection() -> None:
    for transport in (broker.Transport, broker.SentinelTransport):
        assert ReadOnlyError in transport.connection_errors and MasterDownError in transport.connection_errors
        assert redis.ConnectionError in transport.connection_errors


def test_readyz_lists_replicas_with_their_lag() -> None:
    info = {"role": "master", "connected_slaves": 1,
            "slave0": {"ip": "10.0.0.2", "port": 6380, "state": "online", "offset": 42, "lag": 1}}
    assert replicas(info) == [{"address": "10.0.0.2:6380", "state": "online", "lag_s": 1}]
