"""Scripted failures (/_sim/failures): each accepted operation ends in the failure event real ACS sends."""

from __future__ import annotations

from typing import Any

import pytest
from azure.communication.callautomation import (
    DtmfTone,
    FileSource,
    PhoneNumberIdentifier,
    RecognizeInputType,
    TextSource,
)
from azure.core.exceptions import ResourceNotFoundError
from simharness import CALLER_ID, Sim

from simulator.failures import EVENTS, FailureRules, parse_rule, unplayable

PHONE = "+16045550100"
OTHER = "+16045550111"
TARGET = PhoneNumberIdentifier(PHONE)
CALLER = PhoneNumberIdentifier(CALLER_ID)


def _rule(sim: Sim, **rule: Any) -> dict[str, Any]:
    response = sim.admin.post("/_sim/failures", json=rule)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.fixture
def conn(sim: Sim, client):
    room_id, _ = sim.room()
    connection = sim.connect(client, room_id)
    sim.add_phone(connection, PHONE)
    return connection


# -- the rules, as pure functions --------------------------------------------------------------------------------


def test_a_rule_takes_the_operations_default_result_unless_told_otherwise() -> None:
    play = parse_rule({"operation": "play"}, "f1")
    assert (play.event, play.times) == ("PlayFailed", 1)
    assert play.result == (400, 8536, "Action failed, file could not be downloaded.")
    assert play.extra() == {"failedPlaySourceIndex": 0}
    custom = parse_rule({"operation": "recognize", "code": 400, "sub_code": 8532, "message": "m", "times": None}, "f2")
    assert (custom.event, custom.result, custom.times) == ("RecognizeFailed", (400, 8532, "m"), None)
    assert custom.extra() == {}
    prompt = parse_rule({"operation": "recognize", "code": 500, "sub_code": 8511}, "f3")
    assert prompt.extra() == {"failedPlaySourceIndex": 0}  # a prompt that failed names its source


@pytest.mark.parametrize("body", [
    {}, {"operation": "hangUp"}, {"operation": "play", "phone_number": "16045550100"},
    {"operation": "play", "times": 0}, {"operation": "play", "code": "400"}, {"operation": "play", "sub_code": -1},
    {"operation": "sendDtmfTones", "failed_play_source_index": 0}, {"operation": "play", "colour": "red"},
    {"operation": "play", "message": 8535}, {"operation": "play", "call_connection_id": ""}, [],
])
def test_bad_rules_are_refused(body: Any) -> None:
    with pytest.raises(ValueError):
        parse_rule(body, "f1")


def test_the_oldest_matching_rule_fails_the_request_and_one_shot_rules_are_spent() -> None:
    rules = FailureRules()
    by_phone = rules.add({"operation": "sendDtmfTones", "phone_number": PHONE})
    by_call = rules.add({"operation": "sendDtmfTones", "call_connection_id": "cc-1", "times": None})
    assert rules.take("play", phones=[PHONE], call_connection_ids=["cc-1"]) is None
    assert rules.take("sendDtmfTones", phones=[OTHER], call_connection_ids=["cc-2"]) is None
    assert rules.take("sendDtmfTones", phones=[PHONE], call_connection_ids=["cc-1"]) is by_phone
    assert rules.take("sendDtmfTones", phones=[PHONE], call_connection_ids=["cc-2"]) is None  # spent
    assert [rules.take("sendDtmfTones", call_connection_ids=["cc-1"]) for _ in range(3)] == [by_call] * 3
    assert (by_phone.matched, by_call.matched) == (1, 3)
    assert rules.remove(by_call.id) and not rules.remove(by_call.id)


def test_every_failure_event_is_scriptable() -> None:
    assert {event for event, _ in EVENTS.values()} == {
        "AddParticipantFailed", "RemoveParticipantFailed", "CancelAddParticipantFailed", "SendDtmfTonesFailed",
        "PlayFailed", "RecognizeFailed", "ContinuousDtmfRecognitionToneFailed", "StartRecordingFailed",
        "TranscriptionFailed"}


def test_a_file_that_cannot_be_fetched_or_is_not_audio_cannot_be_played() -> None:
    def file(uri: str) -> dict[str, Any]:
        return {"kind": "file", "file": {"uri": uri}}

    text = {"kind": "text", "text": {"text": "hi"}}
    assert unplayable([text, file("https://example.org/a.wav")]) is None
    assert unplayable([text, file("https://prompts.invalid/a.wav")]) == (1, (400, 8536, EVENTS["play"][1][2]))
    assert unplayable([file("https://example.org/index.html")]) == (0, (400, 8535,
                                                                       "Action failed, file format is invalid."))


# -- the admin API ------------------------------------------------------------------------------------------------


def test_rules_are_listed_deleted_and_cleared_by_reset(sim: Sim) -> None:
    first = _rule(sim, operation="play", phone_number=PHONE, sub_code=8535,
                  message="Action failed, file format is invalid.")
    assert first == {"id": first["id"], "operation": "play", "event": "PlayFailed", "phone_number": PHONE,
                     "call_connection_id": None, "times": 1, "matched": 0, "failed_play_source_index": 0,
                     "result_information": {"code": 400, "subCode": 8535,
                                            "message": "Action failed, file format is invalid."}}
    second = _rule(sim, operation="startRecording", times=None)
    assert [r["id"] for r in sim.admin.get("/_sim/failures").json()] == [first["id"], second["id"]]
    assert sim.admin.delete(f"/_sim/failures/{first['id']}").status_code == 204
    assert sim.admin.delete(f"/_sim/failures/{first['id']}").status_code == 404
    bad = sim.admin.post("/_sim/failures", json={"operation": "dance"})
    assert bad.status_code == 400 and "operation must be one of" in bad.json()["error"]["message"]
    assert sim.admin.post("/_sim/reset").status_code == 200
    assert sim.admin.get("/_sim/failures").json() == []
    _rule(sim, operation="play")
    assert sim.admin.delete("/_sim/failures").status_code == 204
    assert sim.admin.get("/_sim/failures").json() == []


# -- each operation, through the unmodified SDK ---------------------------------------------------------------------


def test_play_fails_with_play_failed_and_then_plays_again(sim: Sim, conn) -> None:
    rule = _rule(sim, operation="play", phone_number=PHONE, sub_code=8535, message="Action failed, file format is "
                 "invalid.")
    conn.play_media(FileSource("https://example.org/a.wav"), operation_context="p1")
    failed = sim.receiver.wait_for(sim.path, "PlayFailed")[0]["data"]
    assert failed["operationContext"] == "p1" and failed["failedPlaySourceIndex"] == 0
    assert failed["resultInformation"] == rule["result_information"]
    assert not [e for e in sim.receiver.events(sim.path) if e["type"].endswith("PlayStarted")]
    conn.play_media(FileSource("https://example.org/a.wav"), operation_context="p2")  # the rule was one-shot
    assert sim.receiver.wait_for(sim.path, "PlayCompleted")[0]["data"]["operationContext"] == "p2"
    assert sim.admin.get("/_sim/failures").json()[0]["matched"] == 1


def test_a_play_source_that_cannot_be_downloaded_fails_by_itself(sim: Sim, conn) -> None:
    conn.play_media([TextSource(text="Hello"), FileSource("https://prompts.invalid/hello.wav")],
                    operation_context="p")
    failed = sim.receiver.wait_for(sim.path, "PlayFailed")[0]["data"]
    assert failed["resultInformation"] == {"code": 400, "subCode": 8536,
                                           "message": "Action failed, file could not be downloaded."}
    assert failed["failedPlaySourceIndex"] == 1


def test_a_rule_for_another_phone_or_call_does_not_fail_the_play(sim: Sim, conn) -> None:
    _rule(sim, operation="play", phone_number=OTHER)
    _rule(sim, operation="play", call_connection_id="another-connection")
    conn.play_media(FileSource("https://example.org/a.wav"), operation_context="p")
    sim.receiver.wait_for(sim.path, "PlayCompleted")
    assert [r["matched"] for r in sim.admin.get("/_sim/failures").json()] == [0, 0]


@pytest.mark.parametrize(("sub_code", "message"), [(8510, "Action failed, initial silence timeout reached."),
                                                   (8532, "Action failed, inter-digit silence timeout reached.")])
def test_recognize_fails_with_recognize_failed(sim: Sim, conn, sub_code: int, message: str) -> None:
    sim.phone(PHONE, dtmf="12#")  # the phone would answer: the rule wins
    _rule(sim, operation="recognize", phone_number=PHONE, sub_code=sub_code, message=message)
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, operation_context="r")
    failed = sim.receiver.wait_for(sim.path, "RecognizeFailed")[0]["data"]
    assert failed["resultInformation"] == {"code": 400, "subCode": sub_code, "message": message}
    assert failed["operationContext"] == "r" and "failedPlaySourceIndex" not in failed


def test_a_recognize_prompt_that_cannot_be_played_fails_with_8511(sim: Sim, conn) -> None:
    conn.start_recognizing_media(RecognizeInputType.DTMF, TARGET, play_prompt=FileSource("https://x.invalid/p.wav"),
                                 operation_context="r")
    failed = sim.receiver.wait_for(sim.path, "RecognizeFailed")[0]["data"]
    assert (failed["resultInformation"]["code"], failed["resultInformation"]["subCode"]) == (500, 8511)
    assert failed["failedPlaySourceIndex"] == 0


def test_send_dtmf_fails_with_send_dtmf_tones_failed(sim: Sim, conn) -> None:
    rule = _rule(sim, operation="sendDtmfTones", call_connection_id=conn.get_call_properties().call_connection_id)
    conn.send_dtmf_tones([DtmfTone.ONE], TARGET, operation_context="d")
    failed = sim.receiver.wait_for(sim.path, "SendDtmfTonesFailed")[0]["data"]
    assert failed["resultInformation"] == rule["result_information"] == {
        "code": 500, "subCode": 9999, "message": "Unknown internal server error."}
    assert failed["operationContext"] == "d"


def test_remove_fails_with_remove_participant_failed_and_the_participant_stays(sim: Sim, conn) -> None:
    _rule(sim, operation="removeParticipant", phone_number=PHONE, code=404, sub_code=8522, message="Not found.")
    conn.remove_participant(TARGET, operation_context="rm")
    failed = sim.receiver.wait_for(sim.path, "RemoveParticipantFailed")[0]["data"]
    assert failed["resultInformation"] == {"code": 404, "subCode": 8522, "message": "Not found."}
    assert failed["participant"]["rawId"] == f"4:{PHONE}" and failed["operationContext"] == "rm"
    assert conn.get_participant(TARGET).identifier.raw_id == f"4:{PHONE}"


def test_cancel_add_fails_with_cancel_add_participant_failed_and_the_invitation_rings_on(sim: Sim, conn) -> None:
    sim.phone(OTHER, behaviour="no-answer")
    _rule(sim, operation="cancelAddParticipant", phone_number=OTHER)
    invitation = conn.add_participant(PhoneNumberIdentifier(OTHER), source_caller_id_number=CALLER,
                                      invitation_timeout=1).invitation_id
    conn.cancel_add_participant_operation(invitation, operation_context="c")
    failed = sim.receiver.wait_for(sim.path, "CancelAddParticipantFailed")[0]["data"]
    assert (failed["invitationId"], failed["resultInformation"]["subCode"]) == (invitation, 9999)
    # Not canceled: it rings until its timeout, then the add fails as unanswered.
    assert sim.receiver.wait_for(sim.path, "AddParticipantFailed")[0]["data"]["resultInformation"]["subCode"] == 8541


def test_add_fails_with_add_participant_failed(sim: Sim, conn) -> None:
    _rule(sim, operation="addParticipant", phone_number=OTHER)
    conn.add_participant(PhoneNumberIdentifier(OTHER), source_caller_id_number=CALLER, operation_context="a")
    failed = sim.receiver.wait_for(sim.path, "AddParticipantFailed")[0]["data"]
    assert failed["resultInformation"] == {"code": 480, "subCode": 8544, "message": "Call failed, callee unreachable."}
    assert failed["participant"]["rawId"] == f"4:{OTHER}" and failed["operationContext"] == "a"


def test_continuous_dtmf_starts_then_reports_tone_failed(sim: Sim, conn) -> None:
    sim.phone(PHONE, dtmf="12")
    _rule(sim, operation="startContinuousDtmfRecognition", phone_number=PHONE, code=400, sub_code=8523,
          message="Tone recognition failed.")
    conn.start_continuous_dtmf_recognition(TARGET, operation_context="cd")
    failed = sim.receiver.wait_for(sim.path, "ContinuousDtmfRecognitionToneFailed")[0]["data"]
    assert failed["resultInformation"] == {"code": 400, "subCode": 8523, "message": "Tone recognition failed."}
    assert failed["operationContext"] == "cd"
    assert not [e for e in sim.receiver.events(sim.path) if e["type"].endswith("ToneReceived")]


def test_start_recording_answers_then_sends_start_recording_failed(sim: Sim, client) -> None:
    room_id, server_call_id = sim.room()
    cc = sim.connect(client, room_id).get_call_properties().call_connection_id
    _rule(sim, operation="startRecording", call_connection_id=cc, code=500, sub_code=8589,
          message="Record throttled.")
    started = client.start_recording(server_call_id=server_call_id)
    assert started.recording_state == "inactive" and started.recording_id
    failed = sim.receiver.wait_for(sim.path, "StartRecordingFailed")[0]
    assert failed["data"]["recordingId"] == started.recording_id
    assert failed["data"]["resultInformation"] == {"code": 500, "subCode": 8589, "message": "Record throttled."}
    # Named as RecordingStateChanged is: the recorder's endpoint, not the connection (test_recordings.py).
    assert failed["data"]["serverCallId"] == server_call_id and failed["data"]["callConnectionId"] not in ("", cc)
    assert failed["source"] == f"calling/recordings/{server_call_id}/{started.recording_id}/StartRecordingFailed"
    with pytest.raises(ResourceNotFoundError):
        client.get_recording_properties(started.recording_id)
    again = client.start_recording(server_call_id=server_call_id)  # nothing recorded: a new start is no duplicate
    assert sim.receiver.wait_for(sim.path, "RecordingStateChanged")[0]["data"]["recordingId"] == again.recording_id
