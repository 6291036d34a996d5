"""Media in full, end to end: API → worker → SDK → simulator → events → resolved. Several play sources, SSML,
text-to-speech options, barge-in (play and recognize), recognize's choices, speech_or_dtmf and prompt of several
sources, live transcription start / stop / update."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.integration.conftest import ThreadServer
from tests.integration.test_commands_e2e import phone, wait_for_field
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from tests.integration.test_failure_paths import assert_failed_as_acs_said, fail_next
from tests.integration.test_runtime import CALLER

PARENT = "+14255550123"
COGNITIVE = "https://callq-test.cognitiveservices.azure.com/"
TRANSCRIPTION = {"transport_url": "wss://transcripts.example.org/acs", "locale": "en-US"}
SSML = ('<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">'
        '<voice name="en-US-JennyNeural">Welcome to the class.</voice></speak>')


@pytest.fixture
def stack_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """ACS transcribes (and speaks, and recognizes speech) with the Azure AI services resource named at connect."""
    monkeypatch.setenv("CALLQ_ACS_COGNITIVE_SERVICES_ENDPOINT", COGNITIVE)
    return {**stack_env, "CALLQ_ACS_COGNITIVE_SERVICES_ENDPOINT": COGNITIVE}


def connected(api: httpx.Client, simulator: ThreadServer, body: dict[str, Any] | None = None) -> str:
    connect = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect", body).json()["id"])
    assert connect["status"] == "succeeded", connect
    return str(connect["call_connection_id"])


@pytest.fixture
def call(simulator: ThreadServer, api: httpx.Client, start_worker: Callable) -> str:  # type: ignore[type-arg]
    """A call callq joined allowing live transcription, with a parent on the phone who presses 4 2 # when asked."""
    start_worker()
    phone(simulator, PARENT, behaviour="answer", delay_ms=20, dtmf="42#", input_delay_ms=20)
    cc = connected(api, simulator, {"transcription": TRANSCRIPTION})
    add = wait(api, post(api, f"/v1/calls/{cc}/participants",
                         {"phone_number": PARENT, "source_caller_id": CALLER}).json()["id"])
    assert add["status"] == "succeeded", add
    return cc


def plays(simulator: ThreadServer) -> list[str | None]:
    """The plays ACS got, in order, by operationContext (the command id)."""
    return [e["operation_context"] for e in sim_log(simulator) if e["operation"] == "play"]


def test_several_sources_play_in_one_request(call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    done = wait(api, post(api, f"/v1/calls/{call}/play", {"sources": [
        {"file_url": "https://example.org/chime.wav"}, {"text": "Class starts now."}, {"ssml": SSML}]}).json()["id"])
    assert done["status"] == "succeeded" and done["resolved_by"]["type"] == "PlayCompleted", done
    sent = [e for e in sim_log(simulator) if e["operation"] == "play"][-1]["body"]
    assert [s["kind"] for s in sent["playSources"]] == ["file", "text", "ssml"]
    assert sent["playSources"][2]["ssml"]["ssmlText"] == SSML


VOICE_ENDPOINT = "2c3a9a6e-5d1f-4b1e-9f7e-0c5b3a1d2e4f"  # a custom voice's Azure AI Speech deployment


def test_text_to_speech_options_reach_acs_in_its_own_names(call: str, api: httpx.Client,
                                                          simulator: ThreadServer) -> None:
    done = wait(api, post(api, f"/v1/calls/{call}/play", {"sources": [
        {"text": "Bonjour à tous.", "source_locale": "fr-FR", "voice_kind": "female"},
        {"text": "Welcome.", "voice_name": "ContosoTeacherNeural", "custom_voice_endpoint_id": VOICE_ENDPOINT}]},
                          ).json()["id"])
    assert done["status"] == "succeeded" and done["resolved_by"]["type"] == "PlayCompleted", done
    sent = [e for e in sim_log(simulator) if e["operation"] == "play"][-1]["body"]
    assert [s["text"] for s in sent["playSources"]] == [
        {"text": "Bonjour à tous.", "sourceLocale": "fr-FR", "voiceKind": "female"},
        {"text": "Welcome.", "voiceName": "ContosoTeacherNeural", "customVoiceEndpointId": VOICE_ENDPOINT}]
    one = wait(api, post(api, f"/v1/calls/{call}/play", {"text": "Hello.", "source_locale": "en-GB",
                                                         "voice_kind": "male"}).json()["id"])
    assert one["status"] == "succeeded", one
    sent = [e for e in sim_log(simulator) if e["operation"] == "play"][-1]["body"]
    assert sent["playSources"] == [{"kind": "text", "text": {"text": "Hello.", "sourceLocale": "en-GB",
                                                             "voiceKind": "male"}}]
    bad = post(api, f"/v1/calls/{call}/play", {"file_url": "https://example.org/a.wav", "voice_kind": "male"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "tts_options_need_text", bad.text


def test_a_recognize_prompt_of_several_sources_is_played_then_recognized(call: str, api: httpx.Client,
                                                                         simulator: ThreadServer) -> None:
    body = {"phone_number": PARENT, "max_tones": 2, "interrupt_prompt": True, "prompts": [
        {"text": "Welcome to the class line.", "source_locale": "en-GB", "voice_kind": "female"},
        {"file_url": "https://example.org/menu.wav"}, {"ssml": SSML}]}
    done = wait(api, post(api, f"/v1/calls/{call}/recognize", body).json()["id"])
    assert done["status"] == "succeeded" and done["resolved_by"]["type"] == "RecognizeCompleted", done
    assert done["result"]["digits"] == "42"
    sent = [e for e in sim_log(simulator) if e["operation"] == "recognize"][-1]["body"]
    assert "playPrompt" not in sent
    assert sent["playPrompts"] == [
        {"kind": "text", "text": {"text": "Welcome to the class line.", "sourceLocale": "en-GB",
                                  "voiceKind": "female"}},
        {"kind": "file", "file": {"uri": "https://example.org/menu.wav"}},
        {"kind": "ssml", "ssml": {"ssmlText": SSML}}]


def test_ssml_the_speech_service_refuses_fails_the_play(call: str, api: httpx.Client) -> None:
    done = wait(api, post(api, f"/v1/calls/{call}/play",
                          {"ssml": "<speak><voice>never closed</speak>"}).json()["id"])
    info = assert_failed_as_acs_said(api, call, done, "PlayFailed")
    assert (info["code"], info["subCode"]) == (400, 8565)


def test_a_barge_in_cuts_the_looping_play_and_what_waited_behind_it(call: str, api: httpx.Client,
                                                                    simulator: ThreadServer) -> None:
    hold = post(api, f"/v1/calls/{call}/play", {"file_url": "https://example.org/hold.wav", "loop": True}).json()
    wait_for_field(api, hold["id"], "sent_at")  # playing at ACS
    behind = post(api, f"/v1/calls/{call}/play", {"text": "Next in line."}).json()
    urgent = post(api, f"/v1/calls/{call}/play", {"text": "Fire drill: leave the room.",
                                                  "interrupt_call_media_operation": True}).json()
    after = post(api, f"/v1/calls/{call}/play", {"text": "The drill is over."}).json()
    assert urgent["type"] == "play_barge_in"
    done = wait(api, urgent["id"])
    assert done["status"] == "succeeded" and done["resolved_by"]["type"] == "PlayCompleted", done
    held = wait(api, hold["id"])
    assert held["status"] == "failed" and held["resolved_by"]["type"] == "PlayCanceled", held
    assert held["error"]["acs_subcode"] == 8508
    cut = wait(api, behind["id"])
    assert cut["status"] == "failed" and cut["error"]["code"] == "interrupted" and cut["error"]["by"] == urgent["id"]
    assert wait(api, after["id"])["status"] == "succeeded"
    # ACS got the looping play, the barge-in, then what was accepted after it; never the one it cut in callq.
    assert plays(simulator) == [hold["id"], urgent["id"], after["id"]]


def test_a_barge_in_recognize_asks_for_a_choice_over_the_hold_music(call: str, api: httpx.Client) -> None:
    hold = post(api, f"/v1/calls/{call}/play", {"file_url": "https://example.org/hold.wav", "loop": True}).json()
    wait_for_field(api, hold["id"], "sent_at")
    ask = post(api, f"/v1/calls/{call}/recognize", {
        "phone_number": PARENT, "input_type": "choices", "interrupt_call_media_operation": True,
        "prompt": {"text": "Press 4 to join, 5 to leave."}, "interrupt_prompt": True,
        "choices": [{"label": "join", "phrases": ["join"], "tone": "4"},
                    {"label": "leave", "phrases": ["leave"], "tone": "5"}]}).json()
    assert ask["type"] == "recognize_barge_in"
    done = wait(api, ask["id"])
    assert done["status"] == "succeeded", done
    assert (done["result"]["recognition_type"], done["result"]["choice"]["label"]) == ("choices", "join")
    assert wait(api, hold["id"])["resolved_by"]["type"] == "PlayCanceled"


def test_speech_or_dtmf_takes_what_the_caller_gives(call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    body = {"phone_number": PARENT, "input_type": "speech_or_dtmf", "max_tones": 2, "end_silence_timeout": 1,
            "speech_language": "en-US", "prompt": {"ssml": SSML}}
    pressed = wait(api, post(api, f"/v1/calls/{call}/recognize", body).json()["id"])
    assert pressed["status"] == "succeeded", pressed
    assert (pressed["result"]["recognition_type"], pressed["result"]["digits"]) == ("dtmf", "42")
    phone(simulator, PARENT, behaviour="answer", speech="I would like to speak to the teacher", input_delay_ms=20)
    said = wait(api, post(api, f"/v1/calls/{call}/recognize", body).json()["id"])
    assert said["status"] == "succeeded", said
    assert said["result"]["recognition_type"] == "speech"
    assert said["result"]["speech"]["text"] == "I would like to speak to the teacher"
    sent = [e for e in sim_log(simulator) if e["operation"] == "recognize"][-1]["body"]
    assert sent["recognizeInputType"] == "speechOrDtmf"
    assert sent["recognizeOptions"]["speechOptions"] == {"endSilenceTimeoutInMs": 1000}


def test_live_transcription_starts_stops_and_shows_in_the_call(call: str, api: httpx.Client) -> None:
    assert api.get(f"/v1/calls/{call}").json()["transcription"] == {"state": "inactive", "locale": "en-US"}
    started = wait(api, post(api, f"/v1/calls/{call}/transcription/start", {"locale": "en-GB"}).json()["id"])
    assert started["status"] == "succeeded" and started["resolved_by"]["type"] == "TranscriptionStarted", started
    assert started["result"]["transcription"] == {"status": "transcriptionStarted",
                                                  "status_details": "subscriptionStarted"}
    assert api.get(f"/v1/calls/{call}").json()["transcription"] == {"state": "active", "locale": "en-GB"}
    # ACS does not update the transcription of a connection made with Connect (callq's only kind): it says so.
    updated = wait(api, post(api, f"/v1/calls/{call}/transcription/update", {"locale": "fr-FR"}).json()["id"])
    info = assert_failed_as_acs_said(api, call, updated, "TranscriptionFailed")
    assert (info["code"], info["subCode"]) == (405, 8520)
    stopped = wait(api, post(api, f"/v1/calls/{call}/transcription/stop").json()["id"])
    assert stopped["status"] == "succeeded" and stopped["resolved_by"]["type"] == "TranscriptionStopped", stopped
    assert api.get(f"/v1/calls/{call}").json()["transcription"]["state"] == "inactive"


def test_a_transcription_start_in_a_call_joined_without_transcription_fails(call: str, api: httpx.Client,
                                                                            simulator: ThreadServer) -> None:
    plain = connected(api, simulator)
    assert api.get(f"/v1/calls/{plain}").json()["transcription"] is None
    started = wait(api, post(api, f"/v1/calls/{plain}/transcription/start").json()["id"])
    info = assert_failed_as_acs_said(api, plain, started, "TranscriptionFailed")
    assert (info["code"], info["subCode"], info["message"]) == (
        405, 8522, "Request not allowed when Transcription url not set during call setup.")


def test_a_transcription_that_cannot_reach_its_websocket_fails_with_acs_codes(call: str, api: httpx.Client,
                                                                             simulator: ThreadServer) -> None:
    rule = fail_next(simulator, "startTranscription", call_connection_id=call)
    started = wait(api, post(api, f"/v1/calls/{call}/transcription/start").json()["id"])
    info = assert_failed_as_acs_said(api, call, started, "TranscriptionFailed")
    assert (info["code"], info["subCode"]) == (500, 8578) == (rule["result_information"]["code"],
                                                             rule["result_information"]["subCode"])
