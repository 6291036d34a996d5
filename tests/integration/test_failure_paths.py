"""Every failure event ACS sends, end to end: the simulator sends it (scripted through /_sim/failures, or because a
prompt cannot be played), callq resolves the command ``failed`` with ACS's code, subcode and message.

API → worker → SDK → simulator → failure event → the command's error equals that event's resultInformation.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.conftest import wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_commands_e2e import PARENT, phone, wait_for_field
from tests.integration.test_commands_e2e import call as live_call
from tests.integration.test_end_to_end import post, wait
from tests.integration.test_runtime import CALLER

OTHER = "+14255550166"  # PARENT (test_commands_e2e) is in the call: answers, and presses 4 2 # when asked
__all__ = ["live_call"]  # a fixture (test_commands_e2e's `call`: a connected call with PARENT added) the tests use




def fail_next(sim: ThreadServer, operation: str, **rule: Any) -> dict[str, Any]:
    """Script the next matching ``operation`` to fail; returns the rule (with the resultInformation it sends)."""
    response = sim.http.post("/_sim/failures", json={"operation": operation, **rule})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def sent(api: httpx.Client, cc: str, event_id: str) -> dict[str, Any]:
    """The event, as the simulator sent it, from the call's timeline."""
    events = api.get(f"/v1/calls/{cc}/events").json()["items"]
    return next(e for e in events if e["id"] == event_id)


def assert_failed_as_acs_said(api: httpx.Client, cc: str, command: dict[str, Any], event: str) -> dict[str, Any]:
    """The command ended ``failed`` on ``event``, its error carrying that event's code, subcode and message."""
    assert command["status"] == "failed" and command["resolved_by"]["type"] == event, command
    info = sent(api, cc, command["resolved_by"]["id"])["data"]["resultInformation"]
    assert command["error"] == {"code": "acs_failed", "message": info["message"], "acs_code": info["code"],
                                "acs_subcode": info["subCode"]}, (command, info)
    return info


def test_play_failed_with_a_bad_file_format(live_call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    rule = fail_next(simulator, "play", call_connection_id=live_call, sub_code=8535,
                     message="Action failed, file format is invalid.")
    play = wait(api, post(api, f"/v1/calls/{live_call}/play", {"file_url": "https://example.org/a.wav"}).json()["id"])
    info = assert_failed_as_acs_said(api, live_call, play, "PlayFailed")
    assert info == rule["result_information"] == {"code": 400, "subCode": 8535,
                                                  "message": "Action failed, file format is invalid."}


def test_play_failed_when_the_file_cannot_be_downloaded(live_call: str, api: httpx.Client) -> None:
    # No rule: the simulator cannot fetch from a host under .invalid (nor could ACS).
    play = wait(api, post(api, f"/v1/calls/{live_call}/play",
                          {"file_url": "https://prompts.invalid/welcome.wav"}).json()["id"])
    info = assert_failed_as_acs_said(api, live_call, play, "PlayFailed")
    assert (info["code"], info["subCode"]) == (400, 8536)


@pytest.mark.parametrize(("sub_code", "message"), [(8510, "Action failed, initial silence timeout reached."),
                                                   (8532, "Action failed, inter-digit silence timeout reached.")])
def test_recognize_failed(live_call: str, api: httpx.Client, simulator: ThreadServer, sub_code: int,
                          message: str) -> None:
    fail_next(simulator, "recognize", phone_number=PARENT, sub_code=sub_code, message=message)
    recognize = wait(api, post(api, f"/v1/calls/{live_call}/recognize",
                               {"phone_number": PARENT, "max_tones": 3}).json()["id"])
    info = assert_failed_as_acs_said(api, live_call, recognize, "RecognizeFailed")
    assert info == {"code": 400, "subCode": sub_code, "message": message}


def test_send_dtmf_tones_failed(live_call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    rule = fail_next(simulator, "sendDtmfTones", phone_number=PARENT)
    dtmf = wait(api, post(api, f"/v1/calls/{live_call}/dtmf", {"phone_number": PARENT, "tones": "12#"}).json()["id"])
    assert assert_failed_as_acs_said(api, live_call, dtmf, "SendDtmfTonesFailed") == rule["result_information"]


def test_remove_participant_failed(live_call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    fail_next(simulator, "removeParticipant", phone_number=PARENT, code=404, sub_code=8522,
              message="Participant not found.")
    remove = wait(api, post(api, f"/v1/calls/{live_call}/participants/remove",
                            {"phone_number": PARENT}).json()["id"])
    info = assert_failed_as_acs_said(api, live_call, remove, "RemoveParticipantFailed")
    assert (info["code"], info["subCode"]) == (404, 8522)
    everyone = api.get(f"/v1/calls/{live_call}/participants").json()["items"]
    assert f"4:{PARENT}" in [p["raw_id"] for p in everyone]  # ACS did not remove them


def test_cancel_add_participant_failed(live_call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    phone(simulator, OTHER, behaviour="no-answer")
    rule = fail_next(simulator, "cancelAddParticipant", phone_number=OTHER)
    add = post(api, f"/v1/calls/{live_call}/participants",
               {"phone_number": OTHER, "source_caller_id": CALLER, "invitation_timeout": 60}).json()
    ringing = wait_for_field(api, add["id"], "result")
    cancel = wait(api, post(api, f"/v1/calls/{live_call}/participants/cancel-add",
                            {"invitation_id": ringing["result"]["invitation_id"]}).json()["id"])
    info = assert_failed_as_acs_said(api, live_call, cancel, "CancelAddParticipantFailed")
    assert info == rule["result_information"]
    assert api.get(f"/v1/commands/{add['id']}").json()["status"] == "waiting"  # it rings on


@pytest.mark.parametrize(("script", "rule", "expected"), [
    ({"behaviour": "answer"}, {}, (480, 8544)),  # a scripted failure: the default, callee unreachable
    ({"behaviour": "busy", "delay_ms": 20}, None, (486, 8539)),
    ({"behaviour": "decline", "delay_ms": 20}, None, (603, 8538)),
    ({"behaviour": "no-answer"}, None, (408, 8541)),  # rings out its invitation_timeout
])
def test_add_participant_failed(live_call: str, api: httpx.Client, simulator: ThreadServer, script: dict[str, Any],
                                rule: dict[str, Any] | None, expected: tuple[int, int]) -> None:
    phone(simulator, OTHER, **script)
    if rule is not None:
        fail_next(simulator, "addParticipant", phone_number=OTHER, **rule)
    add = wait(api, post(api, f"/v1/calls/{live_call}/participants",
                         {"phone_number": OTHER, "source_caller_id": CALLER, "invitation_timeout": 1}).json()["id"])
    info = assert_failed_as_acs_said(api, live_call, add, "AddParticipantFailed")
    assert (info["code"], info["subCode"]) == expected


def test_start_recording_failed_then_a_new_start_records(live_call: str, api: httpx.Client,
                                                         simulator: ThreadServer) -> None:
    rule = fail_next(simulator, "startRecording", call_connection_id=live_call, code=500, sub_code=8589,
                     message="Record throttled.")
    start = wait(api, post(api, f"/v1/calls/{live_call}/recordings", {}).json()["id"])
    info = assert_failed_as_acs_said(api, live_call, start, "StartRecordingFailed")
    assert info == rule["result_information"]
    assert start["recording_id"] and sent(api, live_call, start["resolved_by"]["id"])["data"]["recordingId"] == \
        start["recording_id"]
    again = wait(api, post(api, f"/v1/calls/{live_call}/recordings", {}).json()["id"])
    assert again["status"] == "succeeded" and again["resolved_by"]["type"] == "RecordingStateChanged", again


def test_continuous_dtmf_tone_failed_joins_the_timeline_and_fails_no_command(live_call: str, api: httpx.Client,
                                                                             simulator: ThreadServer) -> None:
    rule = fail_next(simulator, "startContinuousDtmfRecognition", phone_number=PARENT, code=400, sub_code=8523,
                     message="Tone recognition failed.")
    start = wait(api, post(api, f"/v1/calls/{live_call}/continuous-dtmf/start", {"phone_number": PARENT}).json()["id"])
    assert start["status"] == "succeeded"  # its 200 was the outcome; what follows is news of the call

    def tone_failed() -> dict[str, Any] | None:
        events = api.get(f"/v1/calls/{live_call}/events").json()["items"]
        return next((e for e in events if e["type"].endswith("ContinuousDtmfRecognitionToneFailed")), None)

    event = wait_until(tone_failed, timeout_s=20, what="ContinuousDtmfRecognitionToneFailed on the timeline")
    assert event["data"]["resultInformation"] == rule["result_information"]
    assert event["data"]["operationContext"] == start["id"]
    after = api.get(f"/v1/commands/{start['id']}").json()
    assert after["status"] == "succeeded" and after.get("error") is None
