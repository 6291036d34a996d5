"""Media in full through the unmodified SDK: several play sources, SSML, barge-in, recognize's options, and live
transcription; plus the pure rules for how long a play and a recognize take."""

from __future__ import annotations

from typing import Any

import pytest
from azure.communication.callautomation import (
    CallAutomationClient,
    DtmfTone,
    FileSource,
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    SsmlSource,
    TextSource,
    TranscriptionOptions,
)
from azure.core.exceptions import HttpResponseError
from simharness import Sim

from simulator.media import PLAY_S, play_duration_s
from simulator.recognition import DTMF_OPTION, SILENCE, SPEECH, recognition_delay_s

PHONE = "+16045550100"
TARGET = PhoneNumberIdentifier(PHONE)
SSML = '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">Hello</speak>'
COGNITIVE = "https://callq-test.cognitiveservices.azure.com/"


@pytest.fixture
def conn(sim: Sim, client: CallAutomationClient):  # type: ignore[no-untyped-def]
    room_id, _ = sim.room()
    connection = sim.connect(client, room_id)
    sim.add_phone(connection, PHONE)
    return connection


def _file(uri: str) -> dict[str, Any]:
    return {"kind": "file", "file": {"uri": uri}}


def _text(text: str) -> dict[str, Any]:
    return {"kind": "text", "text": {"text": text}}


def test_a_play_lasts_the_sum_of_its_sources() -> None:
    assert play_duration_s([_file("https://e.org/a.wav")]) == PLAY_S
    # Text and SSML: PLAY_S per started 100 characters.
    sources = [_file("https://e.org/a.wav"), _text("x" * 250), {"kind": "ssml", "ssml": {"ssmlText": SSML}}]
    assert play_duration_s(sources) == pytest.approx(PLAY_S + 3 * PLAY_S + PLAY_S)


def test_a_recognize_hears_input_after_its_prompt_unless_the_prompt_may_be_interrupted() -> None:
    heard = (0.5, "RecognizeCompleted", DTMF_OPTION, {"recognitionType": "choices"})
    assert recognition_delay_s(heard, {}, prompt_s=2.0) == 2.5
    assert recognition_delay_s(heard, {"interruptPrompt": True}, prompt_s=2.0) == 0.5
    # The initial silence timer runs once the prompt has played, interrupted or not.
    silent = (5.0, "RecognizeFailed", SILENCE, {})
    assert recognition_delay_s(silent, {"interruptPrompt": True}, prompt_s=2.0) == 7.0
    # Speech is recognized once the caller was silent for the end silence timeout.
    said = (0.5, "RecognizeCompleted", SPEECH, {"recognitionType": "speech", "speechResult": {"speech": "hi"}})
    assert recognition_delay_s(said, {"speechOptions": {"endSilenceTimeoutInMs": 1500}}, prompt_s=0.0) == 2.0


def test_several_sources_play_as_one_operation(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    conn.play_media([FileSource("https://example.org/a.wav"), TextSource(text="and then"), SsmlSource(ssml_text=SSML)],
                    operation_context="three")
    started = sim.receiver.wait_for(sim.path, "PlayStarted")
    completed = sim.receiver.wait_for(sim.path, "PlayCompleted")
    assert [e["data"]["operationContext"] for e in started + completed] == ["three", "three"]
    logged = [e for e in sim.log() if e["operation"] == "play"]
    assert [s["kind"] for s in logged[-1]["body"]["playSources"]] == ["file", "text", "ssml"]


def test_more_than_ten_sources_is_400_8523(conn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(HttpResponseError) as err:
        conn.play_media([FileSource(f"https://example.org/{n}.wav") for n in range(11)])
    assert (err.value.status_code, err.value.error.code) == (400, "8523")


@pytest.mark.parametrize("ssml", ["<speak>unclosed", "<voice>no speak root</voice>",
                                  '<!DOCTYPE speak [<!ENTITY a "aaaa">]><speak>&a;</speak>'])
def test_ssml_the_speech_service_refuses_fails_the_play_with_8565(sim: Sim, conn, ssml: str) -> None:  # type: ignore[no-untyped-def]
    conn.play_media([TextSource(text="first"), SsmlSource(ssml_text=ssml)], operation_context="bad-ssml")
    data = sim.receiver.wait_for(sim.path, "PlayFailed")[0]["data"]
    assert (data["resultInformation"]["code"], data["resultInformation"]["subCode"]) == (400, 8565)
    assert data["failedPlaySourceIndex"] == 1
    assert not [e for e in sim.receiver.events(sim.path) if e["type"].endswith("PlayStarted")]


def test_a_barge_in_play_cuts_a_running_recognize(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, initial_silence_timeout=300, operation_context="ask")
    conn.play_media(TextSource(text="Fire drill"), interrupt_call_media_operation=True, operation_context="urgent")
    canceled = sim.receiver.wait_for(sim.path, "RecognizeCanceled")[0]["data"]
    assert (canceled["operationContext"], canceled["resultInformation"]["subCode"]) == ("ask", 8508)
    assert sim.receiver.wait_for(sim.path, "PlayCompleted")[0]["data"]["operationContext"] == "urgent"


def test_a_barge_in_recognize_cuts_a_looping_play(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    sim.phone(PHONE, dtmf="7")
    conn.play_media(FileSource("https://example.org/hold.wav"), loop=True, operation_context="hold")
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, interrupt_call_media_operation=True,
                                 operation_context="pin")
    assert sim.receiver.wait_for(sim.path, "PlayCanceled")[0]["data"]["operationContext"] == "hold"
    data = sim.receiver.wait_for(sim.path, "RecognizeCompleted")[0]["data"]
    assert (data["operationContext"], data["dtmfResult"]) == ("pin", {"tones": ["seven"]})


def test_only_a_play_to_everyone_may_barge_in(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    # The SDK sends false for a play to listed participants; a raw request asking anyway is refused.
    cc = conn.get_call_properties().call_connection_id
    answer = sim.acs("POST", f"/calling/callConnections/{cc}:play?api-version=x", {
        "playSources": [_file("https://e.org/a.wav")], "interruptCallMediaOperation": True,
        "playTo": [{"rawId": f"4:{PHONE}", "phoneNumber": {"value": PHONE}}]})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "8523")


def test_recognize_takes_several_prompts_and_interrupt_prompt(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    sim.phone(PHONE, dtmf="3")
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, play_prompt=[
        TextSource(text="Welcome."), FileSource("https://example.org/menu.wav")], interrupt_prompt=True,
        operation_context="menu")
    data = sim.receiver.wait_for(sim.path, "RecognizeCompleted")[0]["data"]
    assert data["dtmfResult"] == {"tones": ["three"]}
    body = [e for e in sim.log() if e["operation"] == "recognize"][-1]["body"]
    assert len(body["playPrompts"]) == 2 and body["recognizeOptions"]["interruptPrompt"] is True


CUSTOM_VOICE = "2c3a9a6e-5d1f-4b1e-9f7e-0c5b3a1d2e4f"


def test_text_to_speech_options_are_taken_and_logged_as_sent(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    conn.play_media([TextSource(text="Bonjour", source_locale="fr-FR", voice_kind="female"),
                     TextSource(text="Hello", voice_name="ContosoTeacherNeural",
                                custom_voice_endpoint_id=CUSTOM_VOICE)], operation_context="tts")
    assert sim.receiver.wait_for(sim.path, "PlayCompleted")[0]["data"]["operationContext"] == "tts"
    body = [e for e in sim.log() if e["operation"] == "play"][-1]["body"]
    assert [s["text"] for s in body["playSources"]] == [
        {"text": "Bonjour", "sourceLocale": "fr-FR", "voiceKind": "female"},
        {"text": "Hello", "voiceName": "ContosoTeacherNeural", "customVoiceEndpointId": CUSTOM_VOICE}]


@pytest.mark.parametrize("text", [{"sourceLocale": "french"}, {"voiceKind": "robot"}, {"voiceName": ""},
                                  {"customVoiceEndpointId": 7}])
def test_bad_text_to_speech_options_are_400_8523(sim: Sim, conn, text: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cc = conn.get_call_properties().call_connection_id
    for body in ({"playSources": [{"kind": "text", "text": {"text": "hi", **text}}]},
                 {"recognizeInputType": "dtmf", "playPrompts": [{"kind": "text", "text": {"text": "hi", **text}}],
                  "recognizeOptions": {"targetParticipant": {"rawId": f"4:{PHONE}"}}}):
        action = "play" if "playSources" in body else "recognize"
        answer = sim.acs("POST", f"/calling/callConnections/{cc}:{action}?api-version=x", body)
        assert (answer.status_code, answer.json()["error"]["code"]) == (400, "8523"), (action, text)
        assert "text." in answer.json()["error"]["message"]


def test_a_prompt_of_bad_ssml_fails_the_recognize_with_8565(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, play_prompt=SsmlSource(ssml_text="<speak>"))
    info = sim.receiver.wait_for(sim.path, "RecognizeFailed")[0]["data"]["resultInformation"]
    assert (info["code"], info["subCode"]) == (400, 8565)


@pytest.mark.parametrize(("script", "kind"), [({"speech": "I want to pay"}, "speech"), ({"dtmf": "12"}, "dtmf")])
def test_speech_or_dtmf_takes_whichever_the_caller_gives(sim: Sim, conn, script: dict[str, str], kind: str) -> None:  # type: ignore[no-untyped-def]
    sim.phone(PHONE, **script)
    conn.start_recognizing_media(RecognizeInputType.SPEECH_OR_DTMF, TARGET, dtmf_max_tones_to_collect=2,
                                 end_silence_timeout=1, speech_language="en-US", operation_context="either")
    data = sim.receiver.wait_for(sim.path, "RecognizeCompleted")[0]["data"]
    assert data["recognitionType"] == kind


def test_choices_by_tone(sim: Sim, conn) -> None:  # type: ignore[no-untyped-def]
    sim.phone(PHONE, dtmf="2")
    conn.start_recognizing_media(RecognizeInputType.CHOICES, TARGET, choices=[
        RecognitionChoice(label="yes", phrases=["yes"], tone=DtmfTone.ONE),
        RecognitionChoice(label="no", phrases=["no"], tone=DtmfTone.TWO)])
    data = sim.receiver.wait_for(sim.path, "RecognizeCompleted")[0]["data"]
    assert (data["recognitionType"], data["choiceResult"]["label"]) == ("choices", "no")
    assert data["resultInformation"]["subCode"] == 8533


@pytest.mark.parametrize("options", [
    {"speechLanguage": "english"},
    {"speechOptions": {"endSilenceTimeoutInMs": -1}},
    {"choices": [{"label": "yes", "phrases": []}]},
    {"choices": [{"label": "yes", "phrases": ["yes"], "tone": "eleven"}]},
])
def test_bad_recognize_options_are_400_8523(sim: Sim, conn, options: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    cc = conn.get_call_properties().call_connection_id
    input_type = "choices" if "choices" in options else "speech"
    answer = sim.acs("POST", f"/calling/callConnections/{cc}:recognize?api-version=x", {
        "recognizeInputType": input_type,
        "recognizeOptions": {"targetParticipant": {"rawId": f"4:{PHONE}", "phoneNumber": {"value": PHONE}},
                             **options}})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "8523")


# --- live transcription -------------------------------------------------------------------------------------


def _transcribed(sim: Sim, client: CallAutomationClient, *, cognitive: str | None = COGNITIVE, start: bool = False,
                 with_options: bool = True):  # type: ignore[no-untyped-def]
    room_id, _ = sim.room()
    options = TranscriptionOptions(transport_url="wss://transcripts.example.org/acs", transport_type="websocket",
                                   locale="en-US", start_transcription=start) if with_options else None
    props = client.connect_call(callback_url=sim.callback_url, room_id=room_id, transcription=options,
                                cognitive_services_endpoint=cognitive)
    sim.receiver.wait_for(sim.path, "CallConnected")
    return client.get_call_connection(props.call_connection_id)


def test_transcription_starts_stops_and_shows_in_the_call(sim: Sim, client: CallAutomationClient) -> None:
    conn = _transcribed(sim, client)
    assert conn.get_call_properties().transcription_subscription.state == "inactive"
    conn.start_transcription(locale="en-GB", operation_context="t-start")
    started = sim.receiver.wait_for(sim.path, "TranscriptionStarted")[0]["data"]
    assert started["operationContext"] == "t-start"
    assert started["transcriptionUpdate"] == {"transcriptionStatus": "transcriptionStarted",
                                              "transcriptionStatusDetails": "subscriptionStarted"}
    subscription = conn.get_call_properties().transcription_subscription
    assert (subscription.state, subscription.locale) == ("active", "en-GB")
    conn.stop_transcription(operation_context="t-stop")
    stopped = sim.receiver.wait_for(sim.path, "TranscriptionStopped")[0]["data"]
    assert (stopped["operationContext"], stopped["resultInformation"]["code"]) == ("t-stop", 200)
    assert conn.get_call_properties().transcription_subscription.state == "inactive"


def test_transcription_can_start_with_the_call(sim: Sim, client: CallAutomationClient) -> None:
    _transcribed(sim, client, start=True)
    assert sim.receiver.wait_for(sim.path, "TranscriptionStarted")[0]["data"]["resultInformation"]["code"] == 200


@pytest.mark.parametrize(("setup", "locale", "result"), [
    ({"with_options": False}, "en-US",
     (405, 8522, "Request not allowed when Transcription url not set during call setup.")),
    ({"cognitive": None}, "en-US",
     (405, 8522, "Request not allowed when Cognitive Service Configuration not set during call setup.")),
    ({}, "en", (400, 8523, "Invalid Request, only locales that contain region information are supported.")),
])
def test_a_start_acs_would_refuse_is_transcription_failed(sim: Sim, client: CallAutomationClient,
                                                          setup: dict[str, Any], locale: str,
                                                          result: tuple[int, int, str]) -> None:
    conn = _transcribed(sim, client, **setup)
    conn.start_transcription(locale=locale, operation_context="refused")
    data = sim.receiver.wait_for(sim.path, "TranscriptionFailed")[0]["data"]
    info = data["resultInformation"]
    assert (info["code"], info["subCode"], info["message"]) == result
    assert data["operationContext"] == "refused"
    assert data["transcriptionUpdate"]["transcriptionStatus"] == "transcriptionFailed"


def test_update_is_refused_on_a_connection_made_with_connect(sim: Sim, client: CallAutomationClient) -> None:
    conn = _transcribed(sim, client)
    conn.start_transcription(operation_context="t-start")
    sim.receiver.wait_for(sim.path, "TranscriptionStarted")
    conn.update_transcription(locale="fr-FR", operation_context="t-update")
    info = sim.receiver.wait_for(sim.path, "TranscriptionFailed")[0]["data"]["resultInformation"]
    assert (info["code"], info["subCode"]) == (405, 8520)
    assert conn.get_call_properties().transcription_subscription.locale == "en-US"


def test_a_scripted_websocket_failure(sim: Sim, client: CallAutomationClient) -> None:
    conn = _transcribed(sim, client)
    cc = conn.get_call_properties().call_connection_id
    assert sim.admin.post("/_sim/failures", json={"operation": "startTranscription",
                                                  "call_connection_id": cc}).status_code == 201
    conn.start_transcription(operation_context="t-start")
    info = sim.receiver.wait_for(sim.path, "TranscriptionFailed")[0]["data"]["resultInformation"]
    assert (info["code"], info["subCode"]) == (500, 8578)


def test_a_bad_transport_url_at_connect_is_400_8523(sim: Sim) -> None:
    room_id, _ = sim.room()
    answer = sim.acs("POST", "/calling/callConnections:connect?api-version=x", {
        "callLocator": {"roomId": room_id, "kind": "roomCallLocator"}, "callbackUri": sim.callback_url,
        "transcriptionOptions": {"transportUrl": "https://not-a-websocket.example.org", "transportType": "websocket",
                                 "locale": "en-US", "startTranscription": False}})
    assert (answer.status_code, answer.json()["error"]["code"]) == (400, "8523")
