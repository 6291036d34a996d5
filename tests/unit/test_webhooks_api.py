"""The webhook routes on fakeredis: validation codes, the secret shown only on create and rotation, idempotent
POSTs, isolation between clients, the endpoint limit, paging of deliveries, replay's choice of messages.

Delivery itself runs on the real stack in tests/integration/test_webhooks.py."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient

from tests.conftest import OTHER_API_KEY, TEST_API_KEY
from workers import keys, ledger, scripts
from workers.command import Status

ALICE = {"Authorization": f"Bearer {TEST_API_KEY}"}
BOB = {"Authorization": f"Bearer {OTHER_API_KEY}"}
URL = "http://203.0.113.9/hooks"  # an IP literal: no DNS needed; TEST-NET-3 is not global, so allowed below


@pytest.fixture
def client(settings: Any, server: fakeredis.FakeServer) -> Any:
    from api.app import create_app
    settings = settings.with_(webhook_allowed_networks=("203.0.113.0/24",), webhook_max_endpoints=3)
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app) as c:
        yield c


def post(client: TestClient, path: str, body: Any = None, *, key: str = "k1", who: dict[str, str] = ALICE) -> Any:
    return client.post(path, json=body, headers={**who, "Idempotency-Key": key})


def create(client: TestClient, key: str = "k1", **body: Any) -> dict[str, Any]:
    resp = post(client, "/v1/webhooks", {"url": URL, **body}, key=key)
    assert resp.status_code == 201, resp.text
    return dict(resp.json())


def test_create_answers_the_secret_once_and_reads_never_show_it(client: TestClient) -> None:
    hook = create(client, events=["command.failed", "call.event"], description="clinic app")
    assert hook["secret"].startswith("whsec_") and hook["events"] == ["call.event", "command.failed"]
    read = client.get(f"/v1/webhooks/{hook['id']}", headers=ALICE).json()
    assert "secret" not in read and read["description"] == "clinic app" and read["state"] == "healthy"
    assert [h["id"] for h in client.get("/v1/webhooks", headers=ALICE).json()["items"]] == [hook["id"]]
    assert hook["secret"] not in client.get("/v1/webhooks", headers=ALICE).text


def test_a_retried_create_answers_the_same_endpoint_and_secret(client: TestClient) -> None:
    first = create(client, key="same")
    again = post(client, "/v1/webhooks", {"url": URL}, key="same")
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first
    other = post(client, "/v1/webhooks", {"url": URL, "events": ["room.event"]}, key="same")
    assert (other.status_code, other.json()["error"]["code"]) == (422, "idempotency_key_reused")
    assert len(client.get("/v1/webhooks", headers=ALICE).json()["items"]) == 1


@pytest.mark.parametrize(("body", "code"), [
    ({"url": "http://169.254.169.254/"}, "webhook_url_forbidden"),
    ({"url": "http://[::ffff:127.0.0.1]/"}, "webhook_url_forbidden"),
    ({"url": "gopher://example.com/"}, "webhook_url_invalid"),
    ({"url": URL, "events": ["command.exploded"]}, "validation_error"),
    ({"url": URL, "events": []}, "validation_error"),
    ({"url": URL, "secret": "mine"}, "validation_error"),
])
def test_bad_endpoints_are_refused_with_a_code_and_nothing_is_made(client: TestClient, body: dict[str, Any],
                                                                    code: str) -> None:
    resp = post(client, "/v1/webhooks", body)
    assert (resp.status_code, resp.json()["error"]["code"]) == (422, code), resp.text
    assert client.get("/v1/webhooks", headers=ALICE).json()["items"] == []
    assert create(client)["id"]  # the key is still free


def test_a_client_has_at_most_its_limit_of_endpoints(client: TestClient) -> None:
    for i in range(3):
        create(client, key=f"k{i}")
    resp = post(client, "/v1/webhooks", {"url": URL}, key="k9")
    assert (resp.status_code, resp.json()["error"]["code"]) == (409, "too_many_webhooks")


def test_another_clients_endpoint_is_404_everywhere(client: TestClient) -> None:
    hook = create(client)
    base = f"/v1/webhooks/{hook['id']}"
    for resp in (client.get(base, headers=BOB), client.patch(base, json={"enabled": False}, headers=BOB),
                 client.delete(base, headers=BOB), post(client, f"{base}/rotate-secret", who=BOB),
                 post(client, f"{base}/test", who=BOB), client.get(f"{base}/deliveries", headers=BOB),
                 post(client, f"{base}/replay", {"since": "2026-01-01T00:00:00Z"}, who=BOB)):
        assert (resp.status_code, resp.json()["error"]["code"]) == (404, "webhook_not_found"), resp.request.url
    assert client.get(base, headers=ALICE).json()["enabled"] is True


def test_patch_changes_fields_and_refuses_nulls_and_empty_bodies(client: TestClient) -> None:
    hook = create(client)
    base = f"/v1/webhooks/{hook['id']}"
    changed = client.patch(base, json={"events": ["room.event"], "enabled": False}, headers=ALICE).json()
    assert changed["events"] == ["room.event"] and (changed["enabled"], changed["state"]) == (False, "disabled")
    for body in ({}, {"url": None}):
        resp = client.patch(base, json=body, headers=ALICE)
        assert (resp.status_code, resp.json()["error"]["code"]) == (422, "validation_error")
    forbidden = client.patch(base, json={"url": "http://127.0.0.1:9/"}, headers=ALICE)
    assert forbidden.json()["error"]["code"] == "webhook_url_forbidden"


def test_rotation_is_idempotent_and_keeps_the_old_secret_for_its_grace(client: TestClient,
                                                                       sync_redis: fakeredis.FakeRedis) -> None:
    hook = create(client)
    rotated = post(client, f"/v1/webhooks/{hook['id']}/rotate-secret", key="rot")
    assert rotated.status_code == 200
    again = post(client, f"/v1/webhooks/{hook['id']}/rotate-secret", key="rot")
    assert again.json() == rotated.json() and again.headers["Idempotent-Replayed"] == "true"
    record = sync_redis.hgetall(keys.webhook_key(hook["id"]))
    assert (record["secret"], record["old_secret"]) == (rotated.json()["secret"], hook["secret"])
    read = client.get(f"/v1/webhooks/{hook['id']}", headers=ALICE).json()
    assert read["previous_secret_expires_at"] == rotated.json()["previous_secret_expires_at"]


def test_test_makes_one_message_per_key_and_the_deliveries_page(client: TestClient) -> None:
    hook = create(client)
    base = f"/v1/webhooks/{hook['id']}"
    made = [post(client, f"{base}/test", key=f"t{i}").json()["id"] for i in range(5)]
    assert post(client, f"{base}/test", key="t0").json()["id"] == made[0]
    page = client.get(f"{base}/deliveries?limit=2", headers=ALICE).json()
    assert [d["id"] for d in page["items"]] == made[:-3:-1]
    seen = [d["id"] for d in page["items"]]
    while page["next"]:
        page = client.get(page["next"], headers=ALICE).json()
        seen += [d["id"] for d in page["items"]]
    assert seen == made[::-1]
    assert [d["seq"] for d in page["items"]][-1] == 1
    one = client.get(f"{base}/deliveries/{made[0]}", headers=ALICE).json()
    assert (one["type"], one["status"], one["attempts"]) == ("webhook.test", "pending", 0)
    missing = client.get(f"{base}/deliveries/msg_nope", headers=ALICE)
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "delivery_not_found")
    bad = client.get(f"{base}/deliveries?status=lost", headers=ALICE)
    assert bad.json()["error"]["code"] == "invalid_status_filter"


def test_replay_since_seq_queues_only_that_calls_later_messages(client: TestClient,
                                                               sync_redis: fakeredis.FakeRedis) -> None:
    hook = create(client, events=["command.succeeded"])
    for i, call in enumerate(["call-A", "call-A", "call-B", "call-A"]):
        cid = f"cmd_{i}"
        sync_redis.hset(keys.command_key(cid), mapping={"id": cid, "type": "play", "status": "waiting",
                                                       "client": "alice", "call_connection_id": call})
        scripts.run(sync_redis, ledger.transition(cid, Status.SUCCEEDED, {}))
    lane = keys.webhook_lane_key(hook["id"], "call-A")
    for mid in sync_redis.lrange(lane, 0, -1):  # as if delivered
        sync_redis.hset(keys.webhook_message_key(mid), "status", "succeeded")
    sync_redis.delete(lane)
    resp = post(client, f"/v1/webhooks/{hook['id']}/replay", {"since_seq": 2, "call_connection_id": "call-A"},
                key="replay")
    assert resp.status_code == 202 and resp.json() == {"queued": 2, "already_waiting": 0, "truncated": False}
    seqs = [sync_redis.hget(keys.webhook_message_key(m), "seq") for m in sync_redis.lrange(lane, 0, -1)]
    assert seqs == ["2", "3"]
    for body in ({}, {"since_seq": 1}, {"since": "2026-01-01T00:00:00"}):
        bad = post(client, f"/v1/webhooks/{hook['id']}/replay", body, key=f"bad{len(body)}{body!s}")
        assert bad.json()["error"]["code"] == "validation_error", body


def test_delete_stops_the_fan_out(client: TestClient, sync_redis: fakeredis.FakeRedis) -> None:
    hook = create(client)
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=ALICE).status_code == 204
    assert sync_redis.hgetall(keys.client_webhooks_key("alice")) == {}
    assert client.get(f"/v1/webhooks/{hook['id']}", headers=ALICE).status_code == 404
    assert client.delete(f"/v1/webhooks/{hook['id']}", headers=ALICE).status_code == 404


@pytest.mark.parametrize("limit", ["²", "1" * 5000, "-1", "0", "201", "ten", ""])
def test_a_limit_that_is_not_a_whole_number_in_range_is_422(client: TestClient, limit: str) -> None:
    # "²".isdigit() is True and int("²") raises, as does int() of 5,000 digits: both were 500s.
    hook = create(client)
    resp = client.get(f"/v1/webhooks/{hook['id']}/deliveries", params={"limit": limit}, headers=ALICE)
    assert (resp.status_code, resp.json()["error"]["code"]) == (422, "invalid_limit")


@pytest.mark.parametrize("path", ["rotate-secret", "test", "deliveries/{delivery}/retry"])
def test_posts_without_parameters_take_no_body_or_an_empty_one(client: TestClient, path: str) -> None:
    hook = create(client)
    base = f"/v1/webhooks/{hook['id']}"
    url = f"{base}/{path.format(delivery=post(client, f'{base}/test', key='made').json()['id'])}"
    for i, body in enumerate(({"secret": "whsec_mine"}, ["x"], 5)):
        resp = post(client, url, body, key=f"bad{i}")
        assert (resp.status_code, resp.json()["error"]["code"]) == (422, "validation_error"), body
    assert post(client, url, {}, key="empty").status_code in (200, 202)
    assert post(client, url, key="none").status_code in (200, 202)


def test_a_resolver_that_does_not_answer_does_not_hold_a_create(client: TestClient,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from api import webhooks as routes
    from workers.egress import Policy, Target

    async def never(self: Policy, target: Target) -> list[str]:
        await asyncio.Event().wait()  # a resolver whose server never answers
        return []

    monkeypatch.setattr(Policy, "resolve", never)
    monkeypatch.setattr(routes, "RESOLVE_TIMEOUT_S", 0.01)
    resp = post(client, "/v1/webhooks", {"url": "https://hooks.example.com/"}, key="slow-dns")
    assert resp.status_code == 201, resp.text  # as an unresolvable name is: checked again at every delivery


def test_openapi_describes_every_webhook_route_with_an_idempotency_key_on_each_post() -> None:
    from api.openapi import document
    from api.webhooks import webhook_routes

    doc = document()
    for route in webhook_routes:
        for method in route.methods or ():
            if method == "HEAD":
                continue
            op = doc["paths"][route.path][method.lower()]
            params = {p["name"] for p in op.get("parameters", [])}
            assert (method == "POST") == ("Idempotency-Key" in params), (method, route.path)
            for response in op["responses"].values():
                ref = response.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
                assert not ref or ref.rsplit("/", 1)[-1] in doc["components"]["schemas"], ref
    assert "secret" in doc["components"]["schemas"]["WebhookEndpointWithSecret"]["required"]
    assert "secret" not in doc["components"]["schemas"]["WebhookEndpoint"]["properties"]
