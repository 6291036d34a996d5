"""Every command route on fakeredis: bodies map to command params, bad input gets its stable code."""

from __future__ import annotations

import json
from collections.abc import Iterator

import fakeredis
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.openapi import document
from api.routes import COMMANDS
from tests.conftest import TEST_API_KEY
from workers import keys
from workers.settings import Settings

CC = "cc-1"
PHONE = {"phone_number": "+14255550123"}


@pytest.fixture
def r(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    r.hset(keys.call_key(CC), mapping={"client": "alice", "state": "connected", "server_call_id": "scid-1"})
    r.hset(keys.recording_key("rec-1"), mapping={"client": "alice", "call_connection_id": CC})
    return r


def make_client(settings: Settings, server: fakeredis.FakeServer) -> TestClient:
    return TestClient(create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True)))


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer, r: fakeredis.FakeRedis) -> Iterator[TestClient]:
    with make_client(settings, server) as c:
        yield c


def post(client: TestClient, path: str, body: dict | None = None, key: str = "k1"):  # type: ignore[no-untyped-def,type-arg]
    return client.post(path, json=body, headers={"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": key})


def params_of(r: fakeredis.FakeRedis, command_id: str) -> dict:  # type: ignore[type-arg]
    return json.loads(r.hget(keys.command_key(command_id), "params"))


@pytest.mark.parametrize(("path", "body", "type_", "params"), [
    (f"/v1/calls/{CC}/participants", {**PHONE, "source_caller_id": "+18005550199", "invitation_timeout": 30},
     "add_participant", {"participant": "4:+14255550123", "source_caller_id": "+18005550199",
                         "invitation_timeout": 30}),
    (f"/v1/calls/{CC}/participants", {"communication_user": "8:acs:abc_123"}, "add_participant",
     {"participant": "8:acs:abc_123"}),
    (f"/v1/calls/{CC}/participants/remove", PHONE, "remove_participant", {"participant": "4:+14255550123"}),
    (f"/v1/calls/{CC}/participants/cancel-add", {"invitation_id": "inv-1"}, "cancel_add_participant",
     {"invitation_id": "inv-1"}),
    (f"/v1/calls/{CC}/dtmf", {**PHONE, "tones": "12#*"}, "send_dtmf",
     {"participant": "4:+14255550123", "tones": ["1", "2", "#", "*"]}),
    (f"/v1/calls/{CC}/play", {"file_url": "https://example.org/a.wav"}, "play",
     {"source": {"file_url": "https://example.org/a.wav"}, "loop": False, "targets": []}),
    (f"/v1/calls/{CC}/recognize", {**PHONE, "max_tones": 4, "stop_tones": ["#"]}, "recognize",
     {"participant": "4:+14255550123", "input_type": "dtmf", "max_tones": 4, "stop_tones": ["#"],
      "interrupt_prompt": False}),
    (f"/v1/calls/{CC}/continuous-dtmf/start", PHONE, "continuous_dtmf_start", {"participant": "4:+14255550123"}),
    (f"/v1/calls/{CC}/continuous-dtmf/stop", PHONE, "continuous_dtmf_stop", {"participant": "4:+14255550123"}),
    (f"/v1/calls/{CC}/media/cancel", None, "cancel_media", {}),
    (f"/v1/calls/{CC}/recordings", {"format": "mp3"}, "start_recording",
     {"content": "audio", "channel": "mixed", "format": "mp3", "server_call_id": "scid-1"}),
    ("/v1/recordings/rec-1/pause", None, "pause_recording", {}),
    ("/v1/recordings/rec-1/stop", None, "stop_recording", {}),
    (f"/v1/calls/{CC}/hang-up", {"for_everyone": False}, "hang_up", {"for_everyone": False}),
])
def test_each_route_creates_its_command(client, r, path, body, type_, params) -> None:  # type: ignore[no-untyped-def]
    resp = post(client, path, body)
    assert resp.status_code == 202, resp.text
    command = resp.json()
    assert command["type"] == type_ and command["call_connection_id"] == CC
    assert params_of(r, command["id"]) == params
    assert command["id"] in r.lrange(keys.call_commands_key(CC), 0, -1)
    assert json.loads(r.lindex("callq", 0))["headers"]["task"] == f"callq.{type_}"


def test_recording_commands_are_listed_under_their_recording(client, r) -> None:  # type: ignore[no-untyped-def]
    command = post(client, "/v1/recordings/rec-1/resume").json()
    assert command["recording_id"] == "rec-1"
    assert r.lrange(keys.recording_commands_key("rec-1"), 0, -1) == [command["id"]]


@pytest.mark.parametrize(("path", "body", "status", "code"), [
    (f"/v1/calls/{CC}/participants", {"phone_number": "555-1234", "source_caller_id": "+18005550199"}, 422,
     "invalid_phone_number"),
    (f"/v1/calls/{CC}/participants", PHONE, 422, "source_caller_id_required"),
    (f"/v1/calls/{CC}/participants", {**PHONE, "source_caller_id": "+18005550199", "invitation_timeout": 181}, 422,
     "timeout_out_of_range"),
    (f"/v1/calls/{CC}/participants", {**PHONE, "communication_user": "8:acs:x"}, 422, "invalid_participant"),
    (f"/v1/calls/{CC}/dtmf", {**PHONE, "tones": "12Z"}, 422, "invalid_tone"),
    (f"/v1/calls/{CC}/dtmf", {**PHONE, "tones": "1" * 19}, 422, "too_many_tones"),
    (f"/v1/calls/{CC}/dtmf", {"communication_user": "8:acs:x", "tones": "1"}, 422, "pstn_target_required"),
    (f"/v1/calls/{CC}/play", {"file_url": "ftp://x/a.wav"}, 422, "invalid_media_url"),
    (f"/v1/calls/{CC}/play", {"file_url": "https://x/a.wav", "text": "hi"}, 422, "invalid_media_source"),
    (f"/v1/calls/{CC}/recognize", {**PHONE, "initial_silence_timeout": 301}, 422, "timeout_out_of_range"),
    (f"/v1/calls/{CC}/recordings", {"content": "audioVideo", "format": "wav"}, 422,
     "incompatible_recording_options"),
    (f"/v1/calls/{CC}/recordings", {"format": "ogg"}, 422, "validation_error"),
    (f"/v1/calls/{CC}/dtmf", {**PHONE}, 422, "validation_error"),
    ("/v1/calls/other/dtmf", {**PHONE, "tones": "1"}, 404, "call_not_found"),
    ("/v1/recordings/nope/pause", None, 404, "recording_not_found"),
])
def test_bad_input_gets_its_code_and_enqueues_nothing(client, r, path, body, status, code) -> None:  # type: ignore[no-untyped-def]
    resp = post(client, path, body)
    assert resp.status_code == status, resp.text
    error = resp.json()["error"]
    assert error["code"] == code and error["message"]
    assert r.llen("callq") == 0


def test_recording_a_call_that_is_not_connected_yet_is_409(client, r) -> None:  # type: ignore[no-untyped-def]
    r.hset(keys.call_key("cc-2"), mapping={"client": "alice", "state": "connecting"})
    resp = post(client, "/v1/calls/cc-2/recordings", {})
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "call_not_connected"


def test_real_acs_only_takes_https_media(settings: Settings, server, r) -> None:  # type: ignore[no-untyped-def]
    real = settings.with_(acs_endpoint="https://x.communication.azure.com")
    with make_client(real, server) as client:
        resp = post(client, f"/v1/calls/{CC}/play", {"file_url": "http://example.org/a.wav"})
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "insecure_media_url"
        assert post(client, f"/v1/calls/{CC}/play", {"file_url": "https://example.org/a.wav"}, key="k2"
                    ).status_code == 202


def test_openapi_describes_every_command_route(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert doc == document()
    for spec in COMMANDS:
        op = doc["paths"][spec.path]["post"]
        ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
        assert ref in doc["components"]["schemas"]
        assert any(p["name"] == "Idempotency-Key" for p in op["parameters"])
    assert "get" in doc["paths"]["/v1/commands/{command_id}"]
    assert client.get("/docs").status_code == 200
