"""The routes the demo does not use, end to end: API → worker → SDK → simulator → events → resolved."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from tests.integration.test_runtime import CALLER

PARENT = "+14255550123"
SLOW = "+14255550999"


def phone(sim: ThreadServer, number: str, **script: Any) -> None:
    assert sim.http.put(f"/_sim/phones/{number}", json=script).status_code < 300


@pytest.fixture
def call(simulator: ThreadServer, api: httpx.Client, start_worker: Callable) -> str:  # type: ignore[type-arg]
    start_worker()
    phone(simulator, PARENT, behaviour="answer", delay_ms=20, dtmf="42#", input_delay_ms=20)
    connect = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
    cc = str(connect["call_connection_id"])
    add = wait(api, post(api, f"/v1/calls/{cc}/participants",
                         {"phone_number": PARENT, "source_caller_id": CALLER}).json()["id"])
    assert add["status"] == "succeeded", add
    return cc


def test_recognize_collects_the_callers_tones(call: str, api: httpx.Client) -> None:
    done = wait(api, post(api, f"/v1/calls/{call}/recognize",
                          {"phone_number": PARENT, "max_tones": 3, "stop_tones": ["#"],
                           "prompt": {"text": "Enter your PIN"}}).json()["id"])
    assert done["status"] == "succeeded" and done["resolved_by"]["type"] == "RecognizeCompleted", done
    # The phone pressed 4, 2, #: two tones collected, then the stop tone ended it (not collected).
    assert done["result"]["recognition_type"] == "dtmf"
    assert (done["result"]["tones"], done["result"]["digits"]) == (["four", "two"], "42"), done["result"]


def test_continuous_dtmf_starts_and_stops(call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    start = wait(api, post(api, f"/v1/calls/{call}/continuous-dtmf/start", {"phone_number": PARENT}).json()["id"])
    assert start["status"] == "succeeded" and start["resolved_by"] is None  # its HTTP answer is the outcome
    stop = wait(api, post(api, f"/v1/calls/{call}/continuous-dtmf/stop", {"phone_number": PARENT}).json()["id"])
    assert stop["status"] == "succeeded" and stop["resolved_by"]["type"] == "ContinuousDtmfRecognitionStopped"
    ops = [e["operation"] for e in sim_log(simulator)]
    assert ops.index("startContinuousDtmfRecognition") < ops.index("stopContinuousDtmfRecognition")


def test_cancel_media_cancels_a_looping_play(call: str, api: httpx.Client) -> None:
    play = post(api, f"/v1/calls/{call}/play", {"file_url": "https://example.org/hold.wav", "loop": True}).json()
    # Playing at ACS first: a cancel accepted before callq sent the play ends it ``interrupted`` instead (README).
    wait_for_field(api, play["id"], "sent_at")
    cancel = wait(api, post(api, f"/v1/calls/{call}/media/cancel").json()["id"])
    assert cancel["status"] == "succeeded"
    played = wait(api, play["id"])
    assert played["status"] == "failed" and played["resolved_by"]["type"] == "PlayCanceled", played


def test_cancel_add_stops_a_ringing_invitation(call: str, api: httpx.Client, simulator: ThreadServer) -> None:
    phone(simulator, SLOW, behaviour="no-answer")
    add = post(api, f"/v1/calls/{call}/participants",
               {"phone_number": SLOW, "source_caller_id": CALLER, "invitation_timeout": 60}).json()
    # The add's HTTP answer carries the invitation id; it is recorded on the command while it rings.
    ringing = wait_for_field(api, add["id"], "result")
    cancel = wait(api, post(api, f"/v1/calls/{call}/participants/cancel-add",
                            {"invitation_id": ringing["result"]["invitation_id"]}).json()["id"])
    assert cancel["status"] == "succeeded" and cancel["resolved_by"]["type"] == "CancelAddParticipantSucceeded"
    canceled = wait(api, add["id"])
    assert canceled["status"] == "failed" and canceled["error"]["code"] == "invitation_canceled", canceled


def wait_for_field(api: httpx.Client, command_id: str, field: str) -> dict[str, Any]:
    from tests.conftest import wait_until

    return wait_until(lambda: (c := api.get(f"/v1/commands/{command_id}").json()).get(field) and c,  # type: ignore[no-any-return]
                      timeout_s=20, what=f"{field} on {command_id}")


def test_reads_answer_from_acs(call: str, api: httpx.Client) -> None:
    info = api.get(f"/v1/calls/{call}").json()
    assert info["call_connection_id"] == call and info["state"] == "connected" and info["server_call_id"]
    everyone = api.get(f"/v1/calls/{call}/participants").json()["items"]
    assert f"4:{PARENT}" in [p["raw_id"] for p in everyone]
    one = api.get(f"/v1/calls/{call}/participants/{quote('4:' + PARENT, safe='')}")
    assert one.status_code == 200 and one.json()["raw_id"] == f"4:{PARENT}"
    missing = api.get(f"/v1/calls/{call}/participants/{quote('4:+14255550000', safe='')}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "acs_error"
    recording = wait(api, post(api, f"/v1/calls/{call}/recordings", {}).json()["id"])
    state = api.get(f"/v1/recordings/{recording['recording_id']}").json()
    assert {k: state[k] for k in ("recording_id", "state", "kind")} == {
        "recording_id": recording["recording_id"], "state": "active", "kind": "azureCommunicationServices"}
    assert state["files"] == []  # ACS announces them once the recording has stopped
