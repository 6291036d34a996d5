"""Callback JWT verification against an OpenID/JWKS endpoint the test controls (as ACS's would be)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.app import create_app
from api.callbacks import AcsTokenVerifier
from tests.conftest import free_port
from tests.integration.conftest import ThreadServer
from workers import keys
from workers.settings import Settings

ISSUER = "https://acscallautomation.communication.azure.com"
AUDIENCE = "11111111-2222-4333-8444-555555555555"
PORT = free_port()
SIGNING: dict[str, Any] = {}  # kid -> private key; the JWKS server publishes their public halves


def _new_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = f"k{len(SIGNING) + 1}"
    SIGNING[kid] = key
    return kid


async def _openid(request: Request) -> JSONResponse:
    return JSONResponse({"issuer": ISSUER, "jwks_uri": f"http://127.0.0.1:{PORT}/calling/keys"})


async def _jwks(request: Request) -> JSONResponse:
    published = [{**json.loads(RSAAlgorithm.to_jwk(k.public_key())), "kid": kid, "alg": "RS256", "use": "sig"}
                 for kid, k in SIGNING.items()]
    return JSONResponse({"keys": published})


def jwks_app() -> Starlette:
    return Starlette(routes=[Route("/calling/.well-known/acsopenidconfiguration", _openid),
                             Route("/calling/keys", _jwks)])


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[ThreadServer]:
    SIGNING.clear()
    _new_key()
    server = ThreadServer("tests.integration.test_callback_auth:jwks_app", {}, PORT).start()
    yield server
    server.stop()


@pytest.fixture
def client(settings: Settings, jwks_server: ThreadServer, server: fakeredis.FakeServer) -> Iterator[TestClient]:
    s = settings.with_(acs_resource_id=AUDIENCE, callback_token="url-secret-0123",
                       acs_openid_url=f"{jwks_server.url}/calling/.well-known/acsopenidconfiguration")
    app = create_app(s, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app) as c:
        c.app_state["verifier"] = AcsTokenVerifier(s, c.app_state["http"], refresh_min_s=0)  # rotation is immediate
        yield c


def token(kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 300, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SIGNING[kid], algorithm="RS256",
                      headers={"kid": kid})


def deliver(client: TestClient, tok: str, event_id: str, query: str = "?token=url-secret-0123") -> int:
    event = [{"id": event_id, "type": "Microsoft.Communication.PlayCompleted", "source": "calling/x",
              "data": {"callConnectionId": "cc-auth", "operationContext": "cmd_none"}}]
    return client.post(f"/v1/acs/events{query}", json=event, headers={"Authorization": f"Bearer {tok}"}).status_code


def test_a_valid_token_is_accepted_and_the_event_stored(client: TestClient, r: fakeredis.FakeRedis) -> None:
    assert deliver(client, token(), "ok-1") == 200
    assert r.exists(keys.event_seen_key("ok-1"))


@pytest.mark.parametrize("claims", [
    {"exp": int(time.time()) - 10},
    {"aud": "another-resource"},
    {"iss": "https://evil.example.com"},
    {"nbf": int(time.time()) + 600},
    {"exp": None},
], ids=["expired", "wrong-audience", "wrong-issuer", "not-yet-valid", "no-expiry"])
def test_bad_claims_are_401_and_store_nothing(client: TestClient, r: fakeredis.FakeRedis,
                                              claims: dict[str, Any]) -> None:
    assert deliver(client, token(**claims), "bad-1") == 401
    assert not r.exists(keys.event_seen_key("bad-1")) and not r.exists(keys.call_events_key("cc-auth"))


def test_the_url_token_is_checked_too(client: TestClient, r: fakeredis.FakeRedis) -> None:
    assert deliver(client, token(), "q-1", query="?token=wrong") == 401
    assert deliver(client, token(), "q-2", query="") == 401
    assert not r.exists(keys.call_events_key("cc-auth"))


def test_a_rotated_key_is_fetched_when_first_seen(client: TestClient) -> None:
    assert deliver(client, token("k1"), "rot-1") == 200  # keys cached
    kid = _new_key()  # ACS publishes a new key and starts signing with it
    assert deliver(client, token(kid), "rot-2") == 200


def test_the_event_grid_handshake_is_answered(client: TestClient) -> None:
    validation = [{"id": "v1", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
                   "data": {"validationCode": "abc-123"}}]
    resp = client.post("/v1/acs/events?token=url-secret-0123", json=validation,
                       headers={"aeg-event-type": "SubscriptionValidation"})
    assert resp.status_code == 200 and resp.json() == {"validationResponse": "abc-123"}


def test_the_no_expiry_token_really_has_none() -> None:
    # Guard for the helper above: without this, the no-expiry case could pass for the wrong reason.
    assert "exp" not in jwt.decode(token(exp=None), options={"verify_signature": False})


def test_a_verified_token_is_remembered_until_it_expires(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    verifier: AcsTokenVerifier = client.app_state["verifier"]
    checked: list[str] = []
    real = verifier._verify

    async def spy(tok: str) -> dict[str, Any]:
        checked.append(tok)
        return await real(tok)

    monkeypatch.setattr(verifier, "_verify", spy)
    tok = token()
    assert [deliver(client, tok, f"mem-{i}") for i in range(3)] == [200, 200, 200]
    assert checked == [tok]  # the signature was checked once
    forged = tok[:-4] + ("AAAA" if not tok.endswith("AAAA") else "BBBB")
    assert deliver(client, forged, "mem-forged") == 401  # other text: checked, and refused
    assert deliver(client, forged, "mem-forged") == 401 and checked.count(forged) == 2  # a failure is not kept
    exp = jwt.decode(tok, options={"verify_signature": False})["exp"]
    monkeypatch.setattr("api.callbacks.time.time", lambda: exp + 1.0)
    deliver(client, tok, "mem-late")
    assert checked.count(tok) == 2  # past its exp the cache no longer vouches: PyJWT judges it again
