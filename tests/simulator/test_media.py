"""DTMF, play, recognize, continuous DTMF and cancel-all through the unmodified SDK."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import (
    CommunicationUserIdentifier,
    DtmfTone,
    FileSource,
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    TextSource,
)
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from simharness import Sim

PHONE = "+16045550100"
TARGET = PhoneNumberIdentifier(PHONE)


@pytest.fixture
def conn(sim: Sim, client):
    room_id, _ = sim.room()
    connection = sim.connect(client, room_id)
    sim.add_phone(connection, PHONE)
    return connection


def test_send_dtmf_tones(sim: Sim, conn) -> None:
    result = conn.send_dtmf_tones([DtmfTone.ONE, DtmfTone.POUND, "two"], TARGET, operation_context="dtmf-1")
    assert result.operation_context == "dtmf-1"
    data = sim.receiver.wait_for(sim.path, "SendDtmfTonesCompleted")[0]["data"]
    assert data["operationContext"] == "dtmf-1"
    assert data["resultInformation"]["code"] == 200


def test_more_than_18_tones_is_400_8523(conn) -> None:
    with pytest.raises(HttpResponseError) as err:
        conn.send_dtmf_tones([DtmfTone.ONE] * 19, TARGET)
    assert (err.value.status_code, err.value.error.code) == (400, "8523")


def test_dtmf_to_acs_user_is_400_and_to_absent_phone_is_404(conn) -> None:
    with pytest.raises(HttpResponseError) as err:
        conn.send_dtmf_tones([DtmfTone.ONE], CommunicationUserIdentifier("8:acs:res_alice"))
    assert (err.value.status_code, err.value.error.code) == (400, "8523")
    with pytest.raises(ResourceNotFoundError) as missing:
        conn.send_dtmf_tones([DtmfTone.ONE], PhoneNumberIdentifier("+16045550999"))
    assert (missing.value.status_code, missing.value.error.code) == (404, "8558")


def test_play_file_to_all_then_completed(sim: Sim, conn) -> None:
    conn.play_media(FileSource("https://example.org/prompt.wav"), operation_context="play-1")
    started = sim.receiver.wait_for(sim.path, "PlayStarted")[0]["data"]
    completed = sim.receiver.wait_for(sim.path, "PlayCompleted")[0]["data"]
    assert started["operationContext"] == completed["operationContext"] == "play-1"
    assert completed["resultInformation"] == {"code": 200, "subCode": 0, "message": "Action completed successfully."}


def test_play_text_to_a_participant(sim: Sim, conn) -> None:
    conn.play_media(TextSource(text="Hello", voice_name="en-US-NancyNeural"), play_to=[TARGET], operation_context="p2")
    assert sim.receiver.wait_for(sim.path, "PlayCompleted")[0]["data"]["operationContext"] == "p2"


def test_play_to_absent_participant_is_404(conn) -> None:
    with pytest.raises(ResourceNotFoundError):
        conn.play_media(FileSource("https://example.org/a.wav"), play_to=[PhoneNumberIdentifier("+16045550999")])


def test_second_media_operation_is_400_8500_unless_interrupting(sim: Sim, conn) -> None:
    conn.play_media(FileSource("https://example.org/hold.wav"), loop=True, operation_context="loop")
    with pytest.raises(HttpResponseError) as err:
        conn.play_media(FileSource("https://example.org/other.wav"))
    assert (err.value.status_code, err.value.error.code) == (400, "8500")
    conn.play_media(FileSource("https://example.org/urgent.wav"), interrupt_call_media_operation=True,
                    operation_context="urgent")
    canceled = sim.receiver.wait_for(sim.path, "PlayCanceled")[0]["data"]
    assert canceled["operationContext"] == "loop"
    assert canceled["resultInformation"]["subCode"] == 8508
    sim.receiver.wait_for(sim.path, "PlayCompleted")


def test_cancel_all_media_operations(sim: Sim, conn) -> None:
    conn.play_media(FileSource("https://example.org/hold.wav"), loop=True, operation_context="loop")
    conn.cancel_all_media_operations()
    assert sim.receiver.wait_for(sim.path, "PlayCanceled")[0]["data"]["operationContext"] == "loop"


def test_recognize_dtmf_from_scripted_phone(sim: Sim, conn) -> None:
    sim.phone(PHONE, dtmf="1234#")
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, dtmf_max_tones_to_collect=6,
                                 dtmf_stop_tones=[DtmfTone.POUND], play_prompt=FileSource("https://example.org/pin.wav"),
                                 operation_context="pin")
    data = sim.receiver.wait_for(sim.path, "RecognizeCompleted")[0]["data"]
    assert data["recognitionType"] == "dtmf"
    assert data["dtmfResult"] == {"tones": ["one", "two", "three", "four"]}
    assert data["resultInformation"]["subCode"] == 8514
    assert data["operationContext"] == "pin"


def test_recognize_speech_with_scripted_answer(sim: Sim, conn) -> None:
    sim.phone(PHONE, speech="I would like to pay my bill")
    conn.start_recognizing_media(RecognizeInputType.SPEECH, TARGET, end_silence_timeout=1, operation_context="s")
    data = sim.receiver.wait_for(sim.path, "RecognizeCompleted")[0]["data"]
    assert data["recognitionType"] == "speech"
    assert data["speechResult"]["speech"] == "I would like to pay my bill"


def test_recognize_choices(sim: Sim, conn) -> None:
    sim.phone(PHONE, speech="Yeah")
    choices = [RecognitionChoice(label="confirm", phrases=["yes", "yeah"], tone=DtmfTone.ONE),
               RecognitionChoice(label="cancel", phrases=["no"], tone=DtmfTone.TWO)]
    conn.start_recognizing_media(RecognizeInputType.CHOICES, TARGET, choices=choices)
    data = sim.receiver.wait_for(sim.path, "RecognizeCompleted")[0]["data"]
    assert data["choiceResult"]["label"] == "confirm"


def test_recognize_without_input_fails_with_initial_silence(sim: Sim, conn) -> None:
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, initial_silence_timeout=0, operation_context="quiet")
    data = sim.receiver.wait_for(sim.path, "RecognizeFailed")[0]["data"]
    assert data["resultInformation"]["subCode"] == 8510
    assert data["operationContext"] == "quiet"


def test_continuous_dtmf_reports_each_tone_then_stops(sim: Sim, conn) -> None:
    sim.phone(PHONE, dtmf="12#")
    conn.start_continuous_dtmf_recognition(TARGET, operation_context="cd")
    tones = sim.receiver.wait_for(sim.path, "ContinuousDtmfRecognitionToneReceived", count=3)
    assert [(e["data"]["sequenceId"], e["data"]["tone"]) for e in tones] == [(1, "one"), (2, "two"), (3, "pound")]
    conn.stop_continuous_dtmf_recognition(TARGET, operation_context="cd-stop")
    stopped = sim.receiver.wait_for(sim.path, "ContinuousDtmfRecognitionStopped")[0]["data"]
    assert stopped["operationContext"] == "cd-stop"


def test_media_status_codes_on_the_wire(sim: Sim, conn) -> None:
    cc = conn.get_call_properties().call_connection_id
    target = {"rawId": f"4:{PHONE}", "phoneNumber": {"value": PHONE}}
    start = sim.acs("POST", f"/calling/callConnections/{cc}:startContinuousDtmfRecognition?api-version=x",
                    {"targetParticipant": target})
    play = sim.acs("POST", f"/calling/callConnections/{cc}:play?api-version=x",
                   {"playSources": [{"kind": "file", "file": {"uri": "https://e.org/a.wav"}}], "playTo": []})
    cancel = sim.acs("POST", f"/calling/callConnections/{cc}:cancelAllMediaOperations?api-version=x")
    assert (start.status_code, play.status_code, cancel.status_code) == (200, 202, 202)
    assert play.content == b"" and play.headers["content-length"] == "0"
