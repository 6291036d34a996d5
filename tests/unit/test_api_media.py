"""Media in full at the API: play sources, SSML, barge-in, recognize's options, live transcription; each body maps to
its command's type and parameters, each bad one gets its stable code, and today's bodies keep today's parameters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient

from tests.conftest import TEST_API_KEY
from tests.unit.test_api_commands import CC, PHONE, make_client, params_of, post
from workers import commands, keys
from workers.settings import Settings

SSML = '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">Hello</speak>'
WSS = "wss://transcripts.example.org/acs"
VOICE_ENDPOINT = "2c3a9a6e-5d1f-4b1e-9f7e-0c5b3a1d2e4f"  # a custom voice's Azure AI Speech deployment


@pytest.fixture
def r(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    r.hset(keys.call_key(CC), mapping={"client": "alice", "state": "connected", "server_call_id": "scid-1"})
    r.hset(keys.room_key("room-1"), mapping={"id": "room-1", "client": "alice"})
    return r


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer, r: fakeredis.FakeRedis) -> Iterator[TestClient]:
    with make_client(settings, server) as c:
        yield c


@pytest.mark.parametrize(("path", "body", "type_", "params"), [
    # today's bodies: today's parameters (so a retry across the upgrade is still the same request)
    ("play", {"text": "Hello", "voice_name": "en-US-JennyNeural"}, "play",
     {"source": {"text": "Hello", "voice_name": "en-US-JennyNeural"}, "loop": False, "targets": []}),
    ("play", {"ssml": SSML, "loop": True}, "play", {"source": {"ssml": SSML}, "loop": True, "targets": []}),
    ("play", {"sources": [{"file_url": "https://example.org/chime.wav"}, {"text": "Class starts"}, {"ssml": SSML}],
              "voice_name": "en-GB-SoniaNeural", "targets": [PHONE]}, "play",
     {"sources": [{"file_url": "https://example.org/chime.wav"},
                  {"text": "Class starts", "voice_name": "en-GB-SoniaNeural"}, {"ssml": SSML}],
      "loop": False, "targets": ["4:+14255550123"]}),
    ("play", {"text": "Fire drill", "interrupt_call_media_operation": True}, "play_barge_in",
     {"source": {"text": "Fire drill"}, "loop": False, "targets": [], "interrupt_call_media_operation": True}),
    ("play", {"text": "Fire drill", "interrupt_call_media_operation": True, "targets": []}, "play_barge_in",
     {"source": {"text": "Fire drill"}, "loop": False, "targets": [], "interrupt_call_media_operation": True}),
    ("recognize", {**PHONE, "input_type": "choices", "prompt": {"ssml": SSML}, "speech_language": "en-US",
                   "choices": [{"label": "yes", "phrases": ["yes", "yeah"], "tone": "1"},
                               {"label": "no", "phrases": ["no"]}]}, "recognize",
     {"participant": "4:+14255550123", "input_type": "choices", "max_tones": 1, "interrupt_prompt": False,
      "prompt": {"ssml": SSML}, "speech_language": "en-US",
      "choices": [{"label": "yes", "phrases": ["yes", "yeah"], "tone": "1"}, {"label": "no", "phrases": ["no"]}]}),
    ("recognize", {**PHONE, "input_type": "speech_or_dtmf", "max_tones": 4, "end_silence_timeout": 2,
                   "interrupt_prompt": True, "interrupt_call_media_operation": True}, "recognize_barge_in",
     {"participant": "4:+14255550123", "input_type": "speech_or_dtmf", "max_tones": 4, "end_silence_timeout": 2,
      "interrupt_prompt": True, "interrupt_call_media_operation": True}),
    # text to speech: a voice by language and kind, or a custom voice by name and deployment
    ("play", {"text": "Bonjour", "source_locale": "fr-FR", "voice_kind": "female"}, "play",
     {"source": {"text": "Bonjour", "source_locale": "fr-FR", "voice_kind": "female"}, "loop": False,
      "targets": []}),
    ("play", {"text": "Hi", "voice_name": "ContosoNeural", "custom_voice_endpoint_id": VOICE_ENDPOINT}, "play",
     {"source": {"text": "Hi", "voice_name": "ContosoNeural", "custom_voice_endpoint_id": VOICE_ENDPOINT},
      "loop": False, "targets": []}),
    # the play's voice_name is for text sources choosing no voice: one choosing by language keeps its choice
    ("play", {"sources": [{"text": "Hola", "source_locale": "es-ES"}, {"text": "Hi"}],
              "voice_name": "en-GB-SoniaNeural"}, "play",
     {"sources": [{"text": "Hola", "source_locale": "es-ES"}, {"text": "Hi", "voice_name": "en-GB-SoniaNeural"}],
      "loop": False, "targets": []}),
    ("recognize", {**PHONE, "prompts": [{"text": "Welcome.", "voice_kind": "male", "source_locale": "en-GB"},
                                        {"file_url": "https://example.org/menu.wav"}]}, "recognize",
     {"participant": "4:+14255550123", "input_type": "dtmf", "max_tones": 1, "interrupt_prompt": False,
      "prompts": [{"text": "Welcome.", "voice_kind": "male", "source_locale": "en-GB"},
                  {"file_url": "https://example.org/menu.wav"}]}),
    ("transcription/start", {"locale": "en-GB"}, "transcription_start", {"locale": "en-GB"}),
    ("transcription/start", None, "transcription_start", {}),
    ("transcription/stop", None, "transcription_stop", {}),
    ("transcription/update", {"locale": "fr-FR"}, "transcription_update", {"locale": "fr-FR"}),
])
def test_each_body_makes_its_command(client, r, path, body, type_, params) -> None:  # type: ignore[no-untyped-def]
    resp = post(client, f"/v1/calls/{CC}/{path}", body)
    assert resp.status_code == 202, resp.text
    command = resp.json()
    assert command["type"] == type_
    assert params_of(r, command["id"]) == params


def test_a_connect_may_allow_live_transcription(client, r) -> None:  # type: ignore[no-untyped-def]
    options = {"transport_url": WSS, "locale": "en-US", "start": True}
    resp = post(client, "/v1/rooms/room-1/connect", {"transcription": options})
    assert resp.status_code == 202, resp.text
    assert params_of(r, resp.json()["id"]) == {
        "transcription": {**options, "intermediate_results": False}, "room_id": "room-1"}
    plain = post(client, "/v1/rooms/room-1/connect", None, key="k2")
    assert params_of(r, plain.json()["id"]) == {"room_id": "room-1"}  # as before


@pytest.mark.parametrize(("path", "body", "code"), [
    ("play", {}, "invalid_media_source"),
    ("play", {"file_url": "https://x/a.wav", "sources": [{"text": "hi"}]}, "invalid_media_source"),
    ("play", {"sources": [{"text": "hi", "ssml": SSML}]}, "invalid_media_source"),
    ("play", {"sources": [{"text": f"part {n}"} for n in range(11)]}, "too_many_play_sources"),
    ("play", {"ssml": "Hello, no speak element"}, "invalid_ssml"),
    ("play", {"sources": [{"ssml": "<speak>" + "x" * 8000 + "</speak>"}]}, "invalid_ssml"),
    ("play", {"text": "hi", "interrupt_call_media_operation": True, "targets": [PHONE]}, "barge_in_plays_to_all"),
    ("recognize", {**PHONE, "input_type": "choices"}, "invalid_choices"),
    ("recognize", {**PHONE, "choices": [{"label": "yes", "phrases": ["yes"]}]}, "invalid_choices"),
    ("recognize", {**PHONE, "input_type": "choices", "choices": [{"label": "a", "phrases": ["a"], "tone": "Z"}]},
     "invalid_tone"),
    ("recognize", {**PHONE, "input_type": "speech", "speech_language": "english"}, "invalid_locale"),
    ("recognize", {**PHONE, "input_type": "speech", "end_silence_timeout": 0}, "timeout_out_of_range"),
    ("recognize", {**PHONE, "prompt": {"ssml": "<p>no</p>"}}, "invalid_ssml"),
    ("play", {"file_url": "https://x/a.wav", "voice_kind": "female"}, "tts_options_need_text"),
    ("play", {"sources": [{"text": "hi"}], "source_locale": "en-US"}, "tts_options_need_text"),
    ("play", {"sources": [{"ssml": SSML, "source_locale": "en-US"}]}, "tts_options_need_text"),
    ("play", {"text": "hi", "custom_voice_endpoint_id": VOICE_ENDPOINT}, "custom_voice_needs_voice_name"),
    ("play", {"sources": [{"text": "hi", "custom_voice_endpoint_id": VOICE_ENDPOINT}]},
     "custom_voice_needs_voice_name"),
    ("play", {"text": "hi", "voice_name": "V", "custom_voice_endpoint_id": "my-voice"},
     "invalid_custom_voice_endpoint_id"),
    ("play", {"text": "hi", "voice_kind": "robot"}, "invalid_voice_kind"),
    ("play", {"text": "hi", "source_locale": "french"}, "invalid_locale"),
    ("recognize", {**PHONE, "prompt": {"text": "a"}, "prompts": [{"text": "b"}]}, "invalid_media_source"),
    ("recognize", {**PHONE, "prompts": [{"text": f"part {n}"} for n in range(11)]}, "too_many_play_sources"),
    ("recognize", {**PHONE, "prompts": [{"file_url": "https://x/a.wav", "voice_kind": "male"}]},
     "tts_options_need_text"),
    ("recognize", {**PHONE, "prompts": []}, "validation_error"),
    ("transcription/start", {"locale": "en"}, "invalid_locale"),
    ("transcription/update", {"locale": "fr"}, "invalid_locale"),
    ("transcription/update", {}, "validation_error"),
])
def test_bad_media_input_gets_its_code(client, r, path, body, code) -> None:  # type: ignore[no-untyped-def]
    resp = post(client, f"/v1/calls/{CC}/{path}", body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == code
    assert not r.exists(keys.call_commands_key(CC))


def test_a_connect_with_a_transport_url_that_is_no_websocket_is_422(client) -> None:  # type: ignore[no-untyped-def]
    resp = post(client, "/v1/rooms/room-1/connect",
                {"transcription": {"transport_url": "https://example.org/t", "locale": "en-US"}})
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "invalid_transport_url"


def test_real_acs_needs_https_sources_and_a_wss_transport(settings: Settings, server, r) -> None:  # type: ignore[no-untyped-def]
    with make_client(settings.with_(acs_endpoint="https://x.communication.azure.com"), server) as client:
        resp = post(client, f"/v1/calls/{CC}/play", {"sources": [{"text": "a"}, {"file_url": "http://e.org/a.wav"}]})
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "insecure_media_url"
        resp = post(client, f"/v1/calls/{CC}/recognize", {**PHONE, "prompts": [{"file_url": "http://e.org/a.wav"}]},
                    key="k3")
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "insecure_media_url"
        resp = post(client, "/v1/rooms/room-1/connect",
                    {"transcription": {"transport_url": "ws://e.org/t", "locale": "en-US"}}, key="k2")
        assert resp.status_code == 422 and resp.json()["error"]["code"] == "insecure_transport_url"


def test_a_barge_in_is_held_to_the_doors_limits_unlike_a_cancel(settings: Settings) -> None:
    limited = settings.with_(max_pending_per_call=5)
    assert commands.door_limits(limited, "play_barge_in").per_call == 5
    assert commands.door_limits(limited, "recognize_barge_in").per_call == 5
    assert commands.door_limits(limited, "cancel_media").per_call == 0


def test_an_automation_step_that_barges_in_keeps_its_type_and_makes_a_barge_in(client, r) -> None:  # type: ignore[no-untyped-def]
    steps = [{"type": "connect", "body": {"transcription": {"transport_url": WSS, "locale": "en-US"}}},
             {"type": "play", "body": {"text": "Welcome", "interrupt_call_media_operation": True}}]
    resp = client.put("/v1/rooms/room-1/automation", json={"on_call_started": steps},
                      headers={"Authorization": f"Bearer {TEST_API_KEY}"})
    assert resp.status_code == 200, resp.text
    shown: list[dict[str, Any]] = resp.json()["on_call_started"]
    assert [s["type"] for s in shown] == ["connect", "play"]
    stored = json.loads(r.hget(keys.room_key("room-1"), "automation"))["on_call_started"]
    assert [s["command_type"] for s in stored] == ["connect", "play_barge_in"]
