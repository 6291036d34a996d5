"""HMAC request authentication as ACS does it, and the callback JWTs with their OpenID/JWKS endpoints."""

from __future__ import annotations

import base64
import json
from email.utils import formatdate

import jwt
import pytest
from azure.communication.callautomation import CallAutomationClient, CommunicationUserIdentifier
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError
from simharness import KEY, Sim, sign_headers

PATH = "/calling/callConnections:connect?api-version=2026-03-12"


def _connect_body(sim: Sim, room_id: str) -> bytes:
    return json.dumps({"callLocator": {"roomId": room_id, "kind": "roomCallLocator"},
                       "callbackUri": sim.callback_url}).encode()


def _post(sim: Sim, body: bytes, headers: dict[str, str]):
    return sim.admin.post(sim.base + PATH, content=body, headers={"Content-Type": "application/json", **headers})


def test_correctly_signed_raw_request_is_accepted(sim: Sim) -> None:
    room_id, _ = sim.room()
    body = _connect_body(sim, room_id)
    assert _post(sim, body, sign_headers(KEY, "POST", sim.base + PATH, body)).status_code == 200


@pytest.mark.parametrize("tamper", ["signature", "body", "no-auth", "no-date", "no-hash", "stale-date", "path"])
def test_bad_hmac_is_401_7509_and_executes_nothing(sim: Sim, tamper: str) -> None:
    room_id, _ = sim.room()
    body = _connect_body(sim, room_id)
    signed_url = sim.base + ("/calling/callConnections:connect?api-version=2025-06-15" if tamper == "path" else PATH)
    date = formatdate(timeval=0, usegmt=True) if tamper == "stale-date" else None
    headers = sign_headers(KEY, "POST", signed_url, body, date=date)
    if tamper == "signature":
        headers["Authorization"] = headers["Authorization"][:-6] + "AAAAA="
    elif tamper == "body":
        body = body.replace(b"roomCallLocator", b"roomCallLocatoR")
    elif tamper == "no-auth":
        del headers["Authorization"]
    elif tamper == "no-date":
        del headers["x-ms-date"]
    elif tamper == "no-hash":
        del headers["x-ms-content-sha256"]
    response = _post(sim, body, headers)
    assert response.status_code == 401
    assert response.json() == {"error": {"code": "7509", "message": "HMAC-SHA256 validation failed"}}
    assert sim.log() == []


def test_sdk_with_wrong_key_gets_client_authentication_error(sim: Sim) -> None:
    wrong = base64.b64encode(b"not-the-key").decode()
    with CallAutomationClient(sim.base, AzureKeyCredential(wrong), retry_total=0) as client:
        with pytest.raises(ClientAuthenticationError) as err:
            client.get_call_connection("abc").get_call_properties()
    assert err.value.status_code == 401 and err.value.error.code == "7509"


def test_trailing_slash_endpoint_signature_is_accepted(sim: Sim) -> None:
    room_id, _ = sim.room()
    with CallAutomationClient(sim.base + "/", AzureKeyCredential(KEY), retry_total=0) as client:
        assert client.connect_call(callback_url=sim.callback_url, room_id=room_id).call_connection_id


def test_percent_encoded_participant_path_verifies(sim: Sim, client) -> None:
    room_id, _ = sim.room(participants=("8:acs:res_alice",))
    conn = sim.connect(client, room_id)
    assert conn.get_participant(CommunicationUserIdentifier("8:acs:res_alice")).identifier.raw_id == "8:acs:res_alice"


def test_openid_and_jwks_need_no_signature_and_verify_callback_jwt(sim: Sim, client) -> None:
    config = sim.admin.get("/calling/.well-known/acsopenidconfiguration").json()
    assert config["issuer"] == "https://acscallautomation.communication.azure.com"
    assert config["jwks_uri"] == f"{sim.base}/calling/keys"
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    room_id, _ = sim.room()
    sim.connect(client, room_id)
    posts = sim.receiver.posts(sim.path)
    scheme, token = posts[0].headers["authorization"].split()
    assert scheme == "Bearer"
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=sim.settings.resource_id, issuer=config["issuer"])
    assert claims["exp"] - claims["iat"] == 300
    assert claims["nbf"] == claims["iat"]
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(token, key, algorithms=["RS256"], audience="someone-else", issuer=config["issuer"])
