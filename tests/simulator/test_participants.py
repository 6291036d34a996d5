"""Add (scripted phones), remove, cancel, get and list participants through the unmodified SDK."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import CommunicationUserIdentifier, PhoneNumberIdentifier
from azure.core.exceptions import HttpResponseError, ResourceExistsError, ResourceNotFoundError
from simharness import CALLER_ID, Sim

PHONE = "+16045550100"
CALLER = PhoneNumberIdentifier(CALLER_ID)


def test_add_pstn_participant_answers_with_events(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    result = conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER,
                                  operation_context="add-1", invitation_timeout=30)
    assert result.invitation_id
    assert result.operation_context == "add-1"
    assert result.participant.identifier.raw_id == f"4:{PHONE}"
    succeeded = sim.receiver.wait_for(sim.path, "AddParticipantSucceeded")[0]["data"]
    assert succeeded["operationContext"] == "add-1"
    assert succeeded["participant"] == {"rawId": f"4:{PHONE}", "kind": "phoneNumber", "phoneNumber": {"value": PHONE}}
    assert succeeded["resultInformation"]["code"] == 200
    rosters = sim.receiver.wait_for(sim.path, "ParticipantsUpdated", count=2)
    assert rosters[1]["data"]["sequenceNumber"] > rosters[0]["data"]["sequenceNumber"]
    assert f"4:{PHONE}" in [p["identifier"]["rawId"] for p in rosters[1]["data"]["participants"]]


def test_add_participant_raw_response_is_202_with_repeatability_result(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    cc = sim.connect(client, room_id).get_call_properties().call_connection_id
    response = sim.acs(
        "POST", f"/calling/callConnections/{cc}/participants:add?api-version=2026-03-12",
        {"sourceCallerIdNumber": {"value": CALLER_ID},
         "participantToAdd": {"rawId": f"4:{PHONE}", "phoneNumber": {"value": PHONE}}},
        headers={"Repeatability-Request-ID": "3b1c5a3e-0a5d-4a5e-9d43-5e7b7f7a3a01",
                 "Repeatability-First-Sent": "Wed, 25 Nov 2026 10:12:23 GMT"})
    assert response.status_code == 202
    assert response.headers["repeatability-result"] == "accepted"
    body = response.json()
    assert body["participant"] == {"identifier": {"rawId": f"4:{PHONE}", "kind": "phoneNumber",
                                                  "phoneNumber": {"value": PHONE}}, "isMuted": False, "isOnHold": False}
    assert body["invitationId"]


@pytest.mark.parametrize(("behaviour", "sub_code"), [("busy", 8539), ("decline", 8538)])
def test_refusing_phone_gives_add_participant_failed(sim: Sim, client, behaviour: str, sub_code: int) -> None:
    sim.phone(PHONE, behaviour=behaviour, delay_ms=10)
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER, operation_context="x")
    failed = sim.receiver.wait_for(sim.path, "AddParticipantFailed")[0]["data"]
    assert failed["resultInformation"]["subCode"] == sub_code
    assert failed["participant"]["rawId"] == f"4:{PHONE}"
    assert failed["operationContext"] == "x"
    assert f"4:{PHONE}" not in [p.identifier.raw_id for p in conn.list_participants()]


def test_unanswered_phone_fails_after_invitation_timeout(sim: Sim, client) -> None:
    sim.phone(PHONE, behaviour="no-answer")
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER, invitation_timeout=1)
    failed = sim.receiver.wait_for(sim.path, "AddParticipantFailed")[0]["data"]
    assert failed["resultInformation"]["code"] == 408


@pytest.mark.parametrize("timeout_s", [181, -1])
def test_invitation_timeout_out_of_range_is_400_8523(sim: Sim, client, timeout_s: int) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    with pytest.raises(HttpResponseError) as err:
        conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER, invitation_timeout=timeout_s)
    assert (err.value.status_code, err.value.error.code) == (400, "8523")


def test_dial_out_needs_pstn_enabled_room(sim: Sim, client) -> None:
    room_id, _ = sim.room(pstn=False)
    conn = sim.connect(client, room_id)
    with pytest.raises(HttpResponseError) as err:
        conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER)
    assert (err.value.status_code, err.value.error.code) == (400, "8523")
    assert "dial-out" in err.value.error.message


def test_dial_out_needs_source_caller_id(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    with pytest.raises(HttpResponseError) as err:
        conn.add_participant(PhoneNumberIdentifier(PHONE))
    assert (err.value.status_code, err.value.error.code) == (400, "8523")


def test_add_acs_user_and_get_it(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    user = CommunicationUserIdentifier("8:acs:res_carol")
    conn.add_participant(user, operation_context="carol")
    data = sim.receiver.wait_for(sim.path, "AddParticipantSucceeded")[0]["data"]
    assert data["participant"] == {"rawId": "8:acs:res_carol", "kind": "communicationUser",
                                   "communicationUser": {"id": "8:acs:res_carol"}}
    participant = conn.get_participant(user)
    assert participant.identifier.raw_id == "8:acs:res_carol"
    assert participant.is_muted is False


def test_second_invitation_to_same_number_is_409_8519(sim: Sim, client) -> None:
    sim.phone(PHONE, behaviour="no-answer")
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER)
    with pytest.raises(ResourceExistsError) as err:
        conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER)
    assert (err.value.status_code, err.value.error.code) == (409, "8519")


def test_cancel_ringing_invitation(sim: Sim, client) -> None:
    sim.phone(PHONE, behaviour="no-answer")
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    invitation = conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER).invitation_id
    result = conn.cancel_add_participant_operation(invitation, operation_context="cancel-1")
    assert result.invitation_id == invitation
    data = sim.receiver.wait_for(sim.path, "CancelAddParticipantSucceeded")[0]["data"]
    assert data["invitationId"] == invitation
    assert data["operationContext"] == "cancel-1"


def test_cancel_after_answer_fails_by_event(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    invitation = conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER).invitation_id
    sim.receiver.wait_for(sim.path, "AddParticipantSucceeded")
    conn.cancel_add_participant_operation(invitation)
    assert sim.receiver.wait_for(sim.path, "CancelAddParticipantFailed")[0]["data"]["invitationId"] == invitation


def test_remove_participant(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    sim.add_phone(conn, PHONE)
    result = conn.remove_participant(PhoneNumberIdentifier(PHONE), operation_context="rm-1")
    assert result.operation_context == "rm-1"
    data = sim.receiver.wait_for(sim.path, "RemoveParticipantSucceeded")[0]["data"]
    assert data["participant"]["rawId"] == f"4:{PHONE}" and data["operationContext"] == "rm-1"
    latest = sim.receiver.wait_for(sim.path, "ParticipantsUpdated", count=3)[-1]["data"]["participants"]
    assert f"4:{PHONE}" not in [p["identifier"]["rawId"] for p in latest]
    with pytest.raises(ResourceNotFoundError) as err:
        conn.remove_participant(PhoneNumberIdentifier(PHONE))
    assert err.value.error.code == "8558"


def test_get_participant_by_phone_and_absent(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    sim.add_phone(conn, PHONE)
    assert conn.get_participant(PhoneNumberIdentifier(PHONE)).identifier.raw_id == f"4:{PHONE}"
    with pytest.raises(ResourceNotFoundError) as err:
        conn.get_participant(PhoneNumberIdentifier("+16045550999"))
    assert (err.value.status_code, err.value.error.code) == (404, "8558")


def test_list_participants_pages_through_next_link(sim: Sim, client) -> None:
    users = tuple(f"8:acs:res_{i}" for i in range(7))
    room_id, _ = sim.room(participants=users)
    sim.faults(participants_page_size=3)
    conn = sim.connect(client, room_id)
    assert [p.identifier.raw_id for p in conn.list_participants()] == list(users)
    cc = conn.get_call_properties().call_connection_id
    first = sim.acs("GET", f"/calling/callConnections/{cc}/participants?api-version=2026-03-12").json()
    assert len(first["value"]) == 3
    assert first["nextLink"].startswith(f"/calling/callConnections/{cc}/participants?skipToken=")
    last = sim.acs("GET", f"{first['nextLink']}&api-version=2026-03-12").json()
    assert "nextLink" in last  # 3 + 3 of 7
    final = sim.acs("GET", f"{last['nextLink']}&api-version=2026-03-12").json()
    assert len(final["value"]) == 1 and "nextLink" not in final


def test_operation_callback_uri_receives_operation_events(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    op_path = sim.path + "-op"
    conn.add_participant(PhoneNumberIdentifier(PHONE), source_caller_id_number=CALLER,
                         operation_callback_url=sim.receiver.base + op_path)
    sim.receiver.wait_for(op_path, "AddParticipantSucceeded")
    sim.receiver.wait_for(sim.path, "ParticipantsUpdated", count=2)  # the roster still goes to the call's URI
    assert not [e for e in sim.receiver.events(sim.path) if e["type"].endswith("AddParticipantSucceeded")]
