"""The front door on fakeredis: auth, Idempotency-Key rules, validation, and that rejects enqueue nothing."""

from __future__ import annotations

import json

import fakeredis
import pytest
from starlette.testclient import TestClient

from tests.conftest import OTHER_API_KEY, TEST_API_KEY
from workers import keys


def auth(key: str = TEST_API_KEY, idem: str | None = "key-1") -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    return headers


def queued(r: fakeredis.FakeRedis) -> int:
    return int(r.llen(keys.queue_key("callq")))


def test_connect_is_accepted_with_a_command_resource_and_one_task(client: TestClient, sync_redis) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/rooms/room-1/connect", headers=auth())
    assert resp.status_code == 202
    body = resp.json()
    assert body["id"].startswith("cmd_") and body["type"] == "connect" and body["status"] == "queued"
    assert body["links"]["self"] == f"/v1/commands/{body['id']}"
    assert "Idempotent-Replayed" not in resp.headers
    assert queued(sync_redis) == 1
    message = json.loads(sync_redis.lindex("callq", 0))
    assert message["headers"]["task"] == "callq.connect"
    assert message["headers"]["id"] == body["id"]


def test_same_key_same_body_replays_the_same_command(client: TestClient, sync_redis) -> None:  # type: ignore[no-untyped-def]
    first = client.post("/v1/rooms/room-1/connect", headers=auth())
    again = client.post("/v1/rooms/room-1/connect", headers=auth())
    assert again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert queued(sync_redis) == 1


def test_same_key_other_route_is_422(client: TestClient, sync_redis) -> None:  # type: ignore[no-untyped-def]
    client.post("/v1/rooms/room-1/connect", headers=auth())
    resp = client.post("/v1/rooms/room-2/connect", headers=auth())
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "idempotency_key_reused"
    assert queued(sync_redis) == 1


def test_keys_are_scoped_per_client(client: TestClient, sync_redis) -> None:  # type: ignore[no-untyped-def]
    a = client.post("/v1/rooms/room-1/connect", headers=auth(TEST_API_KEY))
    b = client.post("/v1/rooms/room-1/connect", headers=auth(OTHER_API_KEY))
    assert a.json()["id"] != b.json()["id"]
    assert "Idempotent-Replayed" not in b.headers
    assert queued(sync_redis) == 2
    # Bob cannot read Alice's command: it looks like it does not exist.
    resp = client.get(f"/v1/commands/{a.json()['id']}", headers=auth(OTHER_API_KEY, idem=None))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "command_not_found"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({"Authorization": f"Bearer {TEST_API_KEY}"}, 400, "idempotency_key_missing"),
        ({"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": "has space"}, 400, "idempotency_key_invalid"),
        ({"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": "x" * 256}, 400, "idempotency_key_invalid"),
        ({"Idempotency-Key": "k"}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong-key-0123456789", "Idempotency-Key": "k"}, 401, "unauthorized"),
        ({"Authorization": f"Basic {TEST_API_KEY}", "Idempotency-Key": "k"}, 401, "unauthorized"),
    ],
)
def test_bad_headers_are_rejected_and_nothing_is_enqueued(client, sync_redis, headers, status, code) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/rooms/room-1/connect", headers=headers)
    assert resp.status_code == status
    error = resp.json()["error"]
    assert error["code"] == code and error["message"]
    assert queued(sync_redis) == 0
    assert TEST_API_KEY not in resp.text


def test_quoted_structured_header_key_is_accepted(client: TestClient) -> None:
    resp = client.post("/v1/rooms/room-1/connect", headers=auth(idem='"8e03978e-40d5-43e8-bc93-6894a57f9324"'))
    assert resp.status_code == 202


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "invalid_json"),
        (b'{"for_everyone": true}', "text/plain", 415, "unsupported_media_type"),
        (b'{"unexpected": 1}', "application/json", 422, "validation_error"),
        (b"x" * 20_000, "application/json", 413, "body_too_large"),
    ],
)
def test_bad_bodies_get_stable_codes(client, sync_redis, body, content_type, status, code) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/rooms/room-1/connect", content=body,
                       headers={**auth(), "Content-Type": content_type})
    assert resp.status_code == status
    assert resp.json()["error"]["code"] == code
    assert queued(sync_redis) == 0


def test_hang_up_for_an_unknown_call_is_404(client: TestClient, sync_redis) -> None:  # type: ignore[no-untyped-def]
    resp = client.post("/v1/calls/nope/hang-up", json={"for_everyone": True}, headers=auth())
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "call_not_found"
    assert queued(sync_redis) == 0


def test_hang_up_for_an_ended_call_is_409(client: TestClient, sync_redis) -> None:  # type: ignore[no-untyped-def]
    sync_redis.hset(keys.call_key("cc-1"), mapping={"client": "alice", "state": "disconnected"})
    resp = client.post("/v1/calls/cc-1/hang-up", json={"for_everyone": True}, headers=auth())
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "call_ended"


def test_get_command_wait_out_of_range_is_422(client: TestClient) -> None:
    cid = client.post("/v1/rooms/room-1/connect", headers=auth()).json()["id"]
    resp = client.get(f"/v1/commands/{cid}?wait=61", headers=auth(idem=None))
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_wait"
    resp = client.get(f"/v1/commands/{cid}", headers=auth(idem=None))
    assert resp.status_code == 200 and resp.json()["status"] == "queued"


def test_unknown_route_is_a_json_404(client: TestClient) -> None:
    resp = client.get("/v1/nothing-here")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
