"""Room calls obey the room: its validity window, its participant list, its PSTN dial-out flag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from azure.communication.callautomation import PhoneNumberIdentifier
from azure.communication.rooms import CommunicationUserIdentifier, RoomParticipant
from azure.core.exceptions import HttpResponseError
from simharness import CALLER_ID, Sim

TEACHER, STUDENT, STRANGER = "8:acs:res_teacher", "8:acs:res_student", "8:acs:res_stranger"


def _room(sim: Sim, **kwargs: object) -> str:
    people = [RoomParticipant(communication_identifier=CommunicationUserIdentifier(raw), role="Presenter")
              for raw in (TEACHER, STUDENT)]
    with sim.rooms_client() as rooms:
        return str(rooms.create_room(participants=people, **kwargs).id)


def _start(sim: Sim, room_id: str, *people: str) -> tuple[int, dict[str, object]]:
    response = sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": list(people)})
    return response.status_code, response.json()


def test_only_listed_participants_start_and_join(sim: Sim) -> None:
    room_id = _room(sim)
    status, body = _start(sim, room_id, TEACHER, STRANGER)
    assert status == 403 and body["error"]["code"] == "not_a_room_participant"
    assert STRANGER in body["error"]["message"]
    assert sim.admin.get(f"/_sim/rooms/{room_id}").json()["call"] is None  # nobody started anything
    assert _start(sim, room_id, TEACHER)[0] == 201
    refused = sim.admin.post(f"/_sim/rooms/{room_id}/call/participants", json={"participants": [STRANGER]})
    assert (refused.status_code, refused.json()["error"]["code"]) == (403, "not_a_room_participant")
    joined = sim.admin.post(f"/_sim/rooms/{room_id}/call/participants", json={"participants": [STUDENT]})
    assert joined.json()["participants"] == [TEACHER, STUDENT]


def test_participant_added_later_through_the_rooms_api_may_join(sim: Sim) -> None:
    room_id = _room(sim)
    assert _start(sim, room_id, TEACHER)[0] == 201
    with sim.rooms_client() as rooms:
        rooms.add_or_update_participants(room_id=room_id, participants=[
            RoomParticipant(communication_identifier=CommunicationUserIdentifier(STRANGER))])
    joined = sim.admin.post(f"/_sim/rooms/{room_id}/call/participants", json={"participants": [STRANGER]})
    assert joined.status_code == 200


def test_call_cannot_start_before_the_window_and_connect_fails(sim: Sim, client) -> None:
    room_id = _room(sim, valid_from=datetime.now(UTC) + timedelta(days=1))
    status, body = _start(sim, room_id, TEACHER)
    assert status == 409 and body["error"]["code"] == "room_not_open"
    assert "has not begun" in body["error"]["message"]
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    failed = sim.receiver.wait_for(sim.path, "ConnectFailed")[0]["data"]["resultInformation"]
    assert (failed["code"], failed["subCode"]) == (403, 8522)


def test_expired_room_refuses_calls_and_connect(sim: Sim, client) -> None:
    now = datetime.now(UTC)
    room_id = sim.admin.post("/_sim/rooms", json={
        "participants": [TEACHER], "valid_from": (now - timedelta(hours=2)).isoformat(),
        "valid_until": (now - timedelta(hours=1)).isoformat()}).json()["room_id"]
    status, body = _start(sim, room_id, TEACHER)
    assert status == 409 and "has passed" in body["error"]["message"]
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    assert sim.receiver.wait_for(sim.path, "ConnectFailed")[0]["data"]["resultInformation"]["code"] == 403


def test_admin_room_options(sim: Sim) -> None:
    made = sim.admin.post("/_sim/rooms", json={"participants": {TEACHER: "Presenter"}})
    room = made.json()
    assert room["participants"] == {TEACHER: "Presenter"}
    assert room["valid_from"] < room["valid_until"]
    assert _start(sim, room["room_id"], STUDENT)[0] == 403
    open_room, _ = sim.room(start=False)  # no roster: anyone may start and join (simulator convenience)
    assert _start(sim, open_room, STRANGER)[0] == 201
    for bad in ({"participants": {TEACHER: "Boss"}}, {"valid_from": "yesterday"},
                {"valid_from": "2026-01-02T00:00:00Z", "valid_until": "2026-01-01T00:00:00Z"}):
        assert sim.admin.post("/_sim/rooms", json=bad).status_code == 400, bad
    assert _start(sim, open_room, STRANGER)[0] == 409  # already running
    assert sim.admin.post(f"/_sim/rooms/{open_room}/call", json={"participants": []}).status_code == 400


def test_rooms_created_room_serves_call_automation(sim: Sim, client) -> None:
    room_id = _room(sim)
    _, started = _start(sim, room_id, TEACHER, STUDENT)
    conn = sim.connect(client, room_id)
    assert conn.get_call_properties().server_call_id == started["server_call_id"]


def test_dial_out_follows_the_flag_a_patch_changes(sim: Sim, client) -> None:
    room_id = _room(sim)  # pstnDialOutEnabled defaults to false
    _start(sim, room_id, TEACHER)
    conn = sim.connect(client, room_id)
    phone, caller = PhoneNumberIdentifier("+16045550100"), PhoneNumberIdentifier(CALLER_ID)
    with pytest.raises(HttpResponseError) as err:
        conn.add_participant(phone, source_caller_id_number=caller)
    assert (err.value.status_code, err.value.error.code) == (400, "8523")
    with sim.rooms_client() as rooms:
        rooms.update_room(room_id=room_id, pstn_dial_out_enabled=True)
    sim.add_phone(conn)
    with sim.rooms_client() as rooms:
        rooms.update_room(room_id=room_id, pstn_dial_out_enabled=False)
    with pytest.raises(HttpResponseError):
        conn.add_participant(PhoneNumberIdentifier("+16045550111"), source_caller_id_number=caller)


def test_deleted_room_cannot_be_connected_to(sim: Sim, client) -> None:
    room_id = _room(sim)
    _start(sim, room_id, TEACHER)
    with sim.rooms_client() as rooms:
        rooms.delete_room(room_id)
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    assert sim.receiver.wait_for(sim.path, "ConnectFailed")[0]["data"]["resultInformation"]["code"] == 404
