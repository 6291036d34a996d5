"""``POST /v1/eventgrid/events`` on fakeredis with a fake Entra tenant: refused deliveries answer 401 and store
nothing, handshakes are answered, accepted events are recorded once, and a CallEnded ends callq's call."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import httpx
import pytest
from starlette.testclient import TestClient

import api.app
from api.eventgrid_auth import EventGridVerifier
from api.jwks import SigningKeys
from tests.unit.test_eventgrid_auth import CLIENT_ID, OPENID_URL, OTHER_TENANT, TENANT, KeyServer, token, v2_claims
from workers import keys
from workers.settings import Settings

QUERY = "eventgrid-query-token-0123456789"
ROOM, SCID = "99199690362660524", "aHR0cHM6Ly9jb252"
TOPIC = "/subscriptions/s/resourcegroups/g/providers/microsoft.communication/communicationservices/acs"


def grid_event(kind: str, event_id: str, **data: Any) -> dict[str, Any]:
    return {"id": event_id, "topic": TOPIC, "subject": f"call/{SCID}", "eventType": f"Microsoft.Communication.{kind}",
            "dataVersion": "1.0", "metadataVersion": "1", "eventTime": "2026-12-03T10:00:00.1234567Z",
            "data": {"serverCallId": SCID, "room": {"id": ROOM}, "correlationId": "corr", "isRoomsCall": True,
                     "startedBy": {"communicationIdentifier": {"rawId": "8:acs:teacher"}, "role": "Presenter"},
                     **data}}


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    configured = settings.with_(eventgrid_tenant_id=TENANT, eventgrid_audience=(CLIENT_ID,),
                                eventgrid_openid_url=OPENID_URL, eventgrid_query_tokens=(QUERY,))
    entra = httpx.AsyncClient(transport=httpx.MockTransport(KeyServer()))

    def verifier(s: Settings, http: httpx.AsyncClient) -> EventGridVerifier:
        return EventGridVerifier(s, http, keys=SigningKeys(OPENID_URL, entra))

    monkeypatch.setattr(api.app, "EventGridVerifier", verifier)
    app = api.app.create_app(configured, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app) as c:
        yield c


def now_claims(**changes: Any) -> dict[str, Any]:
    now = time.time()
    return v2_claims(**{"iat": now - 10, "nbf": now - 10, "exp": now + 3600, **changes})


def post(client: TestClient, body: Any, *, bearer: str | None = None, query: str | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return client.post("/v1/eventgrid/events" + (f"?token={query}" if query is not None else ""), json=body,
                       headers={**({"Authorization": f"Bearer {bearer}"} if bearer else {}), **(headers or {})})


@pytest.mark.parametrize(("credentials", "code"), [
    ({}, "missing_token"),
    ({"bearer": "not-a-jwt"}, "invalid_token"),
    ({"bearer": "AUDIENCE"}, "wrong_audience"),
    ({"bearer": "EXPIRED"}, "expired_token"),
    ({"bearer": "TENANT"}, "wrong_tenant"),
    ({"query": "not-the-query-token-0123456789"}, "bad_query_token"),
])
def test_a_refused_delivery_is_401_and_stores_nothing(client: TestClient, r: fakeredis.FakeRedis,
                                                      credentials: dict[str, str], code: str) -> None:
    forged = {"AUDIENCE": token(now_claims(aud="api://someone-else")),
              "EXPIRED": token(now_claims(exp=time.time() - 3600, nbf=time.time() - 7200, iat=time.time() - 7200)),
              "TENANT": token(now_claims(tid=OTHER_TENANT, iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"))}
    if "bearer" in credentials:
        credentials = {"bearer": forged.get(credentials["bearer"], credentials["bearer"])}
    resp = post(client, [grid_event("CallStarted", "e1")], **credentials)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == code
    assert r.keys("callq:room:*") == [] and r.keys("callq:eg:*") == []


def test_both_ways_in_record_the_event_once(client: TestClient, r: fakeredis.FakeRedis) -> None:
    first = post(client, [grid_event("CallStarted", "e1")], bearer=token(now_claims()))
    assert first.status_code == 200 and first.json() == {"stored": 1, "duplicates": 0, "ignored": 0}
    again = post(client, [grid_event("CallStarted", "e1")], query=QUERY)
    assert again.json() == {"stored": 0, "duplicates": 1, "ignored": 0}
    assert r.xlen(keys.room_events_key(ROOM)) == 1 and r.get(keys.room_live_key(ROOM)) == SCID


def test_the_validation_handshake_is_answered_even_without_credentials(client: TestClient,
                                                                        r: fakeredis.FakeRedis) -> None:
    validation = [{"id": "v1", "topic": TOPIC, "subject": "", "eventType":
                   "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2026-12-03T10:00:00Z",
                   "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6", "validationUrl": "https://x"},
                   "dataVersion": "1", "metadataVersion": "1"}]
    resp = post(client, validation, headers={"aeg-event-type": "SubscriptionValidation"})
    assert resp.status_code == 200 and resp.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    # Events with no credentials are still refused.
    assert post(client, [grid_event("CallStarted", "e1")]).status_code == 401
    options = client.options("/v1/eventgrid/events", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert options.status_code == 200 and options.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert r.keys("callq:room:*") == []


def test_events_of_calls_that_are_not_room_calls_are_acknowledged_and_dropped(client: TestClient,
                                                                               r: fakeredis.FakeRedis) -> None:
    group_call = grid_event("CallStarted", "e9")
    group_call["data"].pop("room")
    group_call["data"]["isRoomsCall"] = False
    resp = post(client, [group_call], query=QUERY)
    assert resp.json() == {"stored": 0, "duplicates": 0, "ignored": 1} and r.keys("callq:room:*") == []


def test_call_ended_ends_callqs_call_and_fails_its_pending_commands(client: TestClient,
                                                                    r: fakeredis.FakeRedis) -> None:
    r.set(keys.room_call_key(ROOM), "cc-1")
    r.hset(keys.call_key("cc-1"), mapping={"state": "connected", "server_call_id": SCID, "client": "alice"})
    r.rpush(keys.call_commands_key("cc-1"), "cmd-play")
    r.hset(keys.command_key("cmd-play"), mapping={"id": "cmd-play", "type": "play", "status": "waiting",
                                                  "client": "alice", "call_connection_id": "cc-1"})
    ended = grid_event("CallEnded", "e2", callDurationInSeconds=49.7,
                       reason={"code": 0, "subCode": 0, "phrase": "ended"})
    assert post(client, [ended], query=QUERY).json()["stored"] == 1
    assert r.hget(keys.call_key("cc-1"), "state") == "disconnected"
    assert r.hget(keys.command_key("cmd-play"), "status") == "failed"
    assert '"call_ended"' in (r.hget(keys.command_key("cmd-play"), "error") or "")
    # A redelivery of the CallEnded changes nothing more.
    assert post(client, [ended], query=QUERY).json()["duplicates"] == 1
