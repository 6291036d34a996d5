"""Repeatability-Request-ID: executed once; a repeat gets the first response and sends no events."""

from __future__ import annotations

from azure.communication.callautomation import PhoneNumberIdentifier
from simharness import CALLER_ID, Sim

FIRST_SENT = "Wed, 25 Nov 2026 10:12:23 GMT"


def _add_body(number: str) -> dict:
    return {"sourceCallerIdNumber": {"value": CALLER_ID},
            "participantToAdd": {"rawId": f"4:{number}", "phoneNumber": {"value": number}},
            "operationContext": "rep"}


def test_same_request_id_twice_executes_once(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    cc = sim.connect(client, room_id).get_call_properties().call_connection_id
    path = f"/calling/callConnections/{cc}/participants:add?api-version=2026-03-12"
    headers = {"Repeatability-Request-ID": "6f1d9a52-8c0e-4a5b-9a4a-0c2a1f3e5d71",
               "Repeatability-First-Sent": FIRST_SENT}
    first = sim.acs("POST", path, _add_body("+16045550100"), headers)
    again = sim.acs("POST", path, _add_body("+16045550100"), headers)
    assert first.status_code == again.status_code == 202
    assert first.content == again.content  # same invitationId: the first response, replayed
    assert again.headers["repeatability-result"] == "accepted"
    sim.receiver.wait_for(sim.path, "AddParticipantSucceeded")
    entries = sim.log(operation="addParticipant")
    assert len(entries) == 1
    assert entries[0]["repeatability_id"] == headers["Repeatability-Request-ID"]
    assert entries[0]["operation_context"] == "rep"
    # A third, different request on the same URL proves the repeat queued no second AddParticipantSucceeded.
    sim.acs("POST", path, _add_body("+16045550111"), {"Repeatability-Request-ID": "second",
                                                      "Repeatability-First-Sent": FIRST_SENT})
    succeeded = sim.receiver.wait_for(sim.path, "AddParticipantSucceeded", count=2)
    assert [e["data"]["participant"]["rawId"] for e in succeeded] == ["4:+16045550100", "4:+16045550111"]


def test_repeat_of_a_failed_request_returns_the_same_error(sim: Sim) -> None:
    headers = {"Repeatability-Request-ID": "r-404", "Repeatability-First-Sent": FIRST_SENT}
    path = "/calling/callConnections/nope:terminate?api-version=2026-03-12"
    first, again = sim.acs("POST", path, None, headers), sim.acs("POST", path, None, headers)
    assert first.status_code == again.status_code == 404
    assert first.json() == again.json() == {"error": {"code": "8522", "message": "Call not found."}}


def test_request_id_without_first_sent_is_400(sim: Sim) -> None:
    response = sim.acs("POST", "/calling/callConnections/x:terminate?api-version=1", None,
                       {"Repeatability-Request-ID": "lonely"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "8523"


def test_sdk_retry_after_lost_response_does_not_execute_twice(sim: Sim) -> None:
    room_id, _ = sim.room()
    with sim.client(retry_total=3) as client:  # the SDK's own retry reuses the Repeatability-Request-ID
        conn = sim.connect(client, room_id)
        sim.faults(execute_then_fail_count=1, execute_then_fail_operations=["addParticipant"])
        result = conn.add_participant(PhoneNumberIdentifier("+16045550100"),
                                      source_caller_id_number=PhoneNumberIdentifier(CALLER_ID))
    assert result.invitation_id
    entries = sim.log(operation="addParticipant")
    assert len(entries) == 1 and entries[0]["fault"] == "503"
    succeeded = sim.receiver.wait_for(sim.path, "AddParticipantSucceeded")
    assert len(succeeded) == 1
