"""Connect to room calls, call properties, hang up and terminate, through the unmodified SDK."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from simharness import KEY, Sim, sign_headers


def test_connect_answers_200_connecting_without_server_call_id(sim: Sim) -> None:
    room_id, _ = sim.room()
    response = sim.acs("POST", "/calling/callConnections:connect?api-version=2026-03-12", {
        "callLocator": {"roomId": room_id, "kind": "roomCallLocator"},
        "callbackUri": sim.callback_url, "operationContext": "ctx-connect"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["callConnectionState"] == "connecting"
    assert body["callbackUri"] == sim.callback_url
    assert body["callConnectionId"] and body["correlationId"]
    assert "serverCallId" not in body
    assert "repeatability-result" not in response.headers  # real connect responses do not carry it


def test_connect_sends_call_connected_and_participants_updated(sim: Sim, client) -> None:
    room_id, server_call_id = sim.room(participants=("8:acs:res_alice", "8:acs:res_bob"))
    props = client.connect_call(callback_url=sim.callback_url, room_id=room_id, operation_context="join-1")
    connected = sim.receiver.wait_for(sim.path, "CallConnected")[0]
    updated = sim.receiver.wait_for(sim.path, "ParticipantsUpdated")[0]
    data = connected["data"]
    assert data["callConnectionId"] == props.call_connection_id
    assert data["serverCallId"] == server_call_id
    assert data["correlationId"] == props.correlation_id
    assert data["operationContext"] == "join-1"
    assert data["resultInformation"] == {"code": 200, "subCode": 0, "message": ""}
    assert connected["source"] == connected["subject"] == f"calling/callConnections/{props.call_connection_id}"
    assert connected["specversion"] == "1.0" and connected["datacontenttype"] == "application/json"
    assert connected["id"] and connected["time"]
    assert updated["data"]["sequenceNumber"] >= 1
    assert "operationContext" not in updated["data"]
    assert updated["data"]["participants"][0] == {
        "identifier": {"rawId": "8:acs:res_alice", "kind": "communicationUser",
                       "communicationUser": {"id": "8:acs:res_alice"}},
        "isMuted": False, "isOnHold": False}
    types = [e["type"] for e in sim.receiver.events(sim.path)]
    assert types.index("Microsoft.Communication.CallConnected") < types.index(
        "Microsoft.Communication.ParticipantsUpdated")


def test_call_properties_include_server_call_id_and_connected_state(sim: Sim, client) -> None:
    room_id, server_call_id = sim.room()
    conn = sim.connect(client, room_id)
    props = conn.get_call_properties()
    assert props.server_call_id == server_call_id
    assert props.call_connection_state == "connected"
    assert props.callback_url == sim.callback_url


@pytest.mark.parametrize("start", [False, True])
def test_connect_to_missing_room_or_unstarted_call_fails_by_event(sim: Sim, client, start: bool) -> None:
    room_id = "12345678901234567"
    if start:  # room exists, but nobody started its call
        room_id, _ = sim.room(start=False)
    props = client.connect_call(callback_url=sim.callback_url, room_id=room_id, operation_context="ctx")
    assert props.call_connection_state == "connecting"
    failed = sim.receiver.wait_for(sim.path, "ConnectFailed")[0]["data"]
    assert failed["callConnectionId"] == props.call_connection_id
    assert failed["operationContext"] == "ctx"
    assert failed["resultInformation"]["code"] == 404
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_call_connection(props.call_connection_id).get_call_properties()
    assert err.value.error.code == "8522"


def test_connect_without_callback_is_400_8523(sim: Sim) -> None:
    room_id, _ = sim.room()
    response = sim.acs("POST", "/calling/callConnections:connect?api-version=2026-03-12",
                       {"callLocator": {"roomId": room_id, "kind": "roomCallLocator"}})
    assert response.status_code == 400
    message = "Invalid request: The field callbackUri is required"
    assert response.json() == {"error": {"code": "8523", "message": message}}


def test_actions_before_call_connected_are_400_8501(sim: Sim, client) -> None:
    room_id, _ = sim.room(connect_delay_ms=60_000)
    props = client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    conn = client.get_call_connection(props.call_connection_id)
    assert conn.get_call_properties().call_connection_state == "connecting"
    with pytest.raises(HttpResponseError) as err:
        conn.list_participants().next()
    assert (err.value.status_code, err.value.error.code) == (400, "8501")


def test_terminate_disconnects_every_connection_then_404(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    first = sim.connect(client, room_id)
    other_path = sim.path + "-other"
    second = sim.connect(client, room_id, path=other_path)
    second_id = second.get_call_properties().call_connection_id
    first.hang_up(is_for_everyone=True)
    mine = sim.receiver.wait_for(sim.path, "CallDisconnected")[0]["data"]
    theirs = sim.receiver.wait_for(other_path, "CallDisconnected")[0]["data"]
    assert mine["resultInformation"]["subCode"] == 7000
    assert theirs["callConnectionId"] == second_id
    for conn in (first, second):
        with pytest.raises(ResourceNotFoundError) as err:
            conn.get_call_properties()
        assert err.value.error.code == "8522"
    with pytest.raises(ResourceNotFoundError):
        first.hang_up(is_for_everyone=True)
    room = sim.admin.get(f"/_sim/rooms/{room_id}").json()
    assert room["call"] is None


def test_hang_up_self_leaves_other_connections_connected(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    first = sim.connect(client, room_id)
    other_path = sim.path + "-other"
    second = sim.connect(client, room_id, path=other_path)
    first.hang_up(is_for_everyone=False)
    sim.receiver.wait_for(sim.path, "CallDisconnected")
    assert second.get_call_properties().call_connection_state == "connected"
    assert not [e for e in sim.receiver.events(other_path) if e["type"].endswith("CallDisconnected")]
    with pytest.raises(ResourceNotFoundError):
        first.get_call_properties()


def test_nothing_is_sent_after_call_disconnected(sim: Sim, client) -> None:
    from azure.communication.callautomation import PhoneNumberIdentifier

    caller = PhoneNumberIdentifier("+18005550199")
    sim.phone("+16045550111", behaviour="answer", delay_ms=50)
    sim.phone("+16045550122", behaviour="answer", delay_ms=100)
    room_id, _ = sim.room()
    old = sim.connect(client, room_id)
    old_id = old.get_call_properties().call_connection_id
    old.add_participant(PhoneNumberIdentifier("+16045550111"), source_caller_id_number=caller)  # still ringing
    old.hang_up(is_for_everyone=True)
    sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": ["8:acs:res_alice"]})
    new = sim.connect(client, room_id)
    new.add_participant(PhoneNumberIdentifier("+16045550122"), source_caller_id_number=caller)
    # The old invitation's answer was due first; had it been sent, it would precede this one on the same URL.
    sim.receiver.wait_for(sim.path, "AddParticipantSucceeded")
    old_events = [e for e in sim.receiver.events(sim.path) if e["data"]["callConnectionId"] == old_id]
    assert old_events[-1]["type"] == "Microsoft.Communication.CallDisconnected"
    assert not any(e["type"].endswith("AddParticipantSucceeded") for e in old_events)


def test_participants_ending_the_call_disconnects_the_connection(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    assert sim.admin.delete(f"/_sim/rooms/{room_id}/call").status_code == 204
    sim.receiver.wait_for(sim.path, "CallDisconnected")
    with pytest.raises(ResourceNotFoundError):
        conn.get_call_properties()


def test_unsupported_operation_is_405_8520(sim: Sim) -> None:
    response = sim.acs("POST", "/calling/callConnections:answer?api-version=2026-03-12", {"incomingCallContext": "x"})
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "8520"


def test_invalid_json_body_is_400_8523(sim: Sim) -> None:
    url = f"{sim.base}/calling/callConnections:connect?api-version=2026-03-12"
    body = b'{"callLocator": '
    response = sim.admin.post(url, content=body, headers=sign_headers(KEY, "POST", url, body))
    assert response.status_code == 400 and response.json()["error"]["code"] == "8523"


def test_any_api_version_is_accepted(sim: Sim) -> None:
    room_id, _ = sim.room()
    for version in ("2023-03-06", "2099-01-01-preview"):
        response = sim.acs("POST", f"/calling/callConnections:connect?api-version={version}",
                           {"callLocator": {"roomId": room_id, "kind": "roomCallLocator"},
                            "callbackUri": sim.callback_url})
        assert response.status_code == 200
