"""Recording start/pause/resume/stop/get through the unmodified SDK; states are only active/inactive."""

from __future__ import annotations

import base64
import json

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from simharness import Sim


def _states(sim: Sim, path: str) -> list[str]:
    return [e["data"]["state"] for e in sim.receiver.events(path) if e["type"].endswith("RecordingStateChanged")]


def test_recording_lifecycle_by_server_call_id(sim: Sim, client) -> None:
    room_id, server_call_id = sim.room()
    sim.connect(client, room_id)
    rec_path = sim.path + "-rec"
    started = client.start_recording(server_call_id=server_call_id,
                                     recording_state_callback_url=sim.receiver.base + rec_path)
    assert started.recording_state == "inactive"
    assert started.recording_kind == "azureCommunicationServices"
    active = sim.receiver.wait_for(rec_path, "RecordingStateChanged")[0]
    assert active["data"]["recordingId"] == started.recording_id
    assert active["data"]["serverCallId"] == server_call_id
    assert active["data"]["startDateTime"]
    assert active["source"] == f"calling/recordings/{server_call_id}/{started.recording_id}/RecordingStateChanged"
    assert client.get_recording_properties(started.recording_id).recording_state == "active"
    client.pause_recording(started.recording_id)
    sim.receiver.wait_for(rec_path, "RecordingStateChanged", count=2)
    assert client.get_recording_properties(started.recording_id).recording_state == "inactive"
    client.resume_recording(started.recording_id)
    client.stop_recording(started.recording_id)
    sim.receiver.wait_for(rec_path, "RecordingStateChanged", count=4)
    assert _states(sim, rec_path) == ["active", "inactive", "active", "inactive"]
    with pytest.raises(ResourceNotFoundError) as err:
        client.get_recording_properties(started.recording_id)
    assert err.value.error.code == "8522"


def test_start_recording_raw_response(sim: Sim, client) -> None:
    room_id, server_call_id = sim.room()
    sim.connect(client, room_id)
    response = sim.acs("POST", "/calling/recordings?api-version=2026-03-12",
                       {"callLocator": {"serverCallId": server_call_id, "kind": "serverCallLocator"},
                        "recordingContentType": "audio", "recordingChannelType": "unmixed",
                        "recordingFormatType": "wav", "channelAffinity": []},
                       headers={"Repeatability-Request-ID": "0f5e4a2c-1111-4a5e-9d43-5e7b7f7a3a01",
                                "Repeatability-First-Sent": "Wed, 25 Nov 2026 10:12:23 GMT"})
    assert response.status_code == 200
    assert response.headers["repeatability-result"] == "accepted"
    assert set(response.json()) == {"recordingId", "recordingState", "recordingKind"}
    stop = sim.acs("DELETE", f"/calling/recordings/{response.json()['recordingId']}?api-version=2026-03-12")
    assert stop.status_code == 204 and stop.content == b"" and "content-type" not in stop.headers


def test_room_locator_is_rejected_400(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.connect(client, room_id)
    with pytest.raises(HttpResponseError) as err:
        client.start_recording(room_id=room_id)
    assert (err.value.status_code, err.value.error.code) == (400, "8523")


def test_second_start_while_active_or_paused_is_400_8559(sim: Sim, client) -> None:
    room_id, server_call_id = sim.room()
    sim.connect(client, room_id)
    recording = client.start_recording(server_call_id=server_call_id)
    for _ in range(2):
        with pytest.raises(HttpResponseError) as err:
            client.start_recording(server_call_id=server_call_id)
        assert (err.value.status_code, err.value.error.code) == (400, "8559")
        client.pause_recording(recording.recording_id)
    client.stop_recording(recording.recording_id)
    assert client.start_recording(server_call_id=server_call_id).recording_id != recording.recording_id


def _platform_endpoint(recording_id: str) -> str:
    """The ``PlatformEndpointId`` a recording id encodes (base64url JSON, as real ACS's)."""
    padded = recording_id + "=" * (-len(recording_id) % 4)
    return str(json.loads(base64.urlsafe_b64decode(padded))["PlatformEndpointId"])


def test_start_by_call_connection_id_defaults_to_call_callback(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    cc = conn.get_call_properties().call_connection_id
    recording = client.start_recording(call_connection_id=cc)
    event = sim.receiver.wait_for(sim.path, "RecordingStateChanged")[0]["data"]
    assert event["recordingId"] == recording.recording_id


def test_recording_events_name_the_recorders_endpoint_not_the_connection(sim: Sim, client) -> None:
    """As in real ACS's sample (acs-wire.md §5.3): the event's callConnectionId is not the CallConnected one but the
    recorder's endpoint, the PlatformEndpointId its recording id encodes; one id for all of a recording's events."""
    room_id, server_call_id = sim.room()
    cc = sim.connect(client, room_id).get_call_properties().call_connection_id
    recording = client.start_recording(call_connection_id=cc)
    client.pause_recording(recording.recording_id)
    client.stop_recording(recording.recording_id)
    events = sim.receiver.wait_for(sim.path, "RecordingStateChanged", count=2)
    named = {(e["data"]["callConnectionId"], e["data"]["serverCallId"]) for e in events}
    assert named == {(_platform_endpoint(recording.recording_id), server_call_id)}
    assert cc not in {n for n, _ in named}
    second = client.start_recording(server_call_id=server_call_id)
    assert _platform_endpoint(second.recording_id) not in (cc, _platform_endpoint(recording.recording_id))


def test_unknown_server_call_is_404_8522(sim: Sim, client) -> None:
    with pytest.raises(ResourceNotFoundError) as err:
        client.start_recording(server_call_id="no-such-call")
    assert err.value.error.code == "8522"


def test_terminate_stops_recording_before_disconnect(sim: Sim, client) -> None:
    room_id, server_call_id = sim.room()
    conn = sim.connect(client, room_id)
    recording = client.start_recording(server_call_id=server_call_id)
    conn.hang_up(is_for_everyone=True)
    sim.receiver.wait_for(sim.path, "CallDisconnected")
    assert _states(sim, sim.path) == ["active", "inactive"]
    with pytest.raises(HttpResponseError) as err:
        client.pause_recording(recording.recording_id)
    assert (err.value.status_code, err.value.error.code) == (400, "8528")
