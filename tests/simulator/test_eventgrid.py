"""Event Grid: subscriptions, validation handshakes (both schemas), the ACS call and recording events' exact shapes,
Entra tokens."""

from __future__ import annotations

import re
from typing import Any

import httpx
import jwt
import pytest
from azure.communication.callautomation import PhoneNumberIdentifier
from azure.communication.rooms import CommunicationUserIdentifier, RoomParticipant
from eghook import Hook
from simharness import CALLER_ID, Sim

from simulator.entra import EVENT_GRID_APP_ID
from tests.conftest import wait_until

TEACHER, STUDENT, LATE = "8:acs:res_teacher", "8:acs:res_student", "8:acs:res_late"
EVENT_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z")
TOPIC = ("/subscriptions/00000000-0000-4000-8000-0000000000a5/resourcegroups/callq-sim/providers/"
         "microsoft.communication/communicationservices/callq-sim")


def _user(raw_id: str, role: str) -> dict[str, Any]:
    identifier = {"rawId": raw_id, "kind": "communicationUser", "communicationUser": {"id": raw_id}}
    return {"communicationIdentifier": identifier, "role": role}


def _typed(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e.get("eventType", e.get("type")) == f"Microsoft.Communication.{name}"]


def _room_with_roster(sim: Sim) -> str:
    people = [RoomParticipant(communication_identifier=CommunicationUserIdentifier(TEACHER), role="Presenter"),
              RoomParticipant(communication_identifier=CommunicationUserIdentifier(STUDENT)),
              RoomParticipant(communication_identifier=CommunicationUserIdentifier(LATE), role="Collaborator")]
    with sim.rooms_client() as rooms:
        return str(rooms.create_room(participants=people, pstn_dial_out_enabled=True).id)


def _start(sim: Sim, room_id: str, *people: str) -> str:
    response = sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": list(people)})
    assert response.status_code == 201, response.text
    return str(response.json()["server_call_id"])


def test_event_grid_handshake_then_notifications_keep_the_secret_query(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sub = sim.subscribe("callq-test", hook.url(path))
    assert sub["status"] == "Succeeded" and sub["endpoint_base_url"] == hook.base + path
    assert "endpoint_url" not in sub  # the secret stays hidden unless asked for
    full = sim.admin.get("/_sim/eventgrid/subscriptions/callq-test", params={"include_full_endpoint_url": "true"})
    assert full.json()["endpoint_url"] == hook.url(path)
    validation = hook.at(path)[0]
    assert validation.method == "POST" and validation.path == hook.url(path).removeprefix(hook.base)
    assert validation.headers["aeg-event-type"] == "SubscriptionValidation"
    assert validation.headers["aeg-subscription-name"] == "CALLQ-TEST"
    assert validation.headers["content-type"] == "application/json; charset=utf-8"
    [event] = validation.body
    assert event["eventType"] == "Microsoft.EventGrid.SubscriptionValidationEvent"
    assert event["data"]["validationUrl"].startswith(f"{sim.base}/eventgrid/eventsubscriptions/callq-test/validate?id=")
    assert (event["topic"], event["dataVersion"], event["metadataVersion"]) == (TOPIC, "2", "1")
    _start(sim, sim.room(start=False)[0], TEACHER)
    hook.wait_events(path, lambda evs: len(evs) >= 2)
    note = hook.notifications(path)[0]
    assert note.path == validation.path  # ?code=… on every delivery
    assert note.headers["aeg-event-type"] == "Notification"
    assert (note.headers["aeg-delivery-count"], note.headers["aeg-data-version"],
            note.headers["aeg-metadata-version"]) == ("0", "1.0", "1")
    assert "authorization" not in note.headers  # no Entra configured


def test_nothing_is_delivered_before_the_handshake_passes(sim: Sim, hook: Hook) -> None:
    path = hook.new_path(validation="refuse")
    sim.subscribe("late-hook", hook.url(path), wait=False, retry_scale=0.01)
    early_call = _start(sim, sim.room(start=False)[0], TEACHER)
    wait_until(lambda: len(sim.eg_log(subscription="late-hook", kind="validation")) >= 2, timeout_s=5.0,
               what="a retried handshake")
    sub = sim.subscription("late-hook")
    assert sub["status"] == "AwaitingValidation" and sub["last_validation_error"]
    assert sim.eg_log(subscription="late-hook", kind="notification") == []
    hook.behaviour[path].validation = "sync"  # the endpoint comes up
    wait_until(lambda: sim.subscription("late-hook")["status"] == "Succeeded", timeout_s=5.0, what="validation")
    later_call = _start(sim, sim.room(start=False)[0], STUDENT)
    events = hook.wait_events(path, lambda evs: len(_typed(evs, "CallParticipantAdded")) >= 1)
    assert {e["data"]["serverCallId"] for e in events} == {later_call}
    assert early_call not in str(hook.at(path))


def test_asynchronous_handshake_through_the_validation_url(sim: Sim, hook: Hook) -> None:
    path = hook.new_path(validation="ignore")  # 200 without the code, as an async validator answers
    sim.subscribe("async-hook", hook.url(path), wait=False, retry_scale=10.0)
    validation = hook.wait(path, lambda rs: len(rs) >= 1)[0]
    url = validation.body[0]["data"]["validationUrl"]
    assert sim.subscription("async-hook")["status"] == "AwaitingValidation"
    assert httpx.get(url.replace("id=", "id=wrong")).status_code == 400
    assert httpx.get(url).status_code == 200
    assert sim.subscription("async-hook")["status"] == "Succeeded"


def test_cloudevents_handshake_and_single_event_posts(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("ce-hook", hook.url(path), schema="CloudEventSchemaV1_0")
    options = hook.at(path)[0]
    assert options.method == "OPTIONS" and options.headers["webhook-request-origin"] == "eventgrid.azure.net"
    server_call_id = _start(sim, sim.room(start=False)[0], TEACHER)
    hook.wait_events(path, lambda evs: len(evs) >= 2)
    posts = hook.notifications(path)
    assert {p.headers["content-type"] for p in posts} == {"application/cloudevents+json; charset=utf-8"}
    assert all(isinstance(p.body, dict) for p in posts)  # one event per POST, as an object
    [event] = [p.body for p in posts if p.body["type"].endswith("CallStarted")]  # POSTs go side by side: any order
    assert set(event) == {"id", "source", "specversion", "type", "subject", "time", "datacontenttype", "data"}
    assert (event["type"], event["source"], event["specversion"]) == (
        "Microsoft.Communication.CallStarted", TOPIC, "1.0")
    assert event["subject"] == f"call/{server_call_id}/startedBy/{TEACHER}"


@pytest.mark.parametrize("allowed", [None, "example.org"])
def test_cloudevents_handshake_without_consent_stays_awaiting(sim: Sim, hook: Hook, allowed: str | None) -> None:
    path = hook.new_path(allow_origin=allowed)
    sim.subscribe("ce-refused", hook.url(path), schema="CloudEventSchemaV1_0", wait=False, retry_scale=0.01)
    wait_until(lambda: len(sim.eg_log(subscription="ce-refused", outcome="retrying")) >= 2, timeout_s=5.0,
               what="handshake retries")
    assert sim.subscription("ce-refused")["status"] == "AwaitingValidation"
    assert "WebHook-Allowed-Origin" in sim.subscription("ce-refused")["last_validation_error"]


def test_room_call_events_have_acs_shapes(sim: Sim, hook: Hook, client) -> None:
    path = hook.new_path()
    sim.subscribe("shapes", hook.url(path), max_events_per_batch=50)
    room_id = _room_with_roster(sim)
    # Each step waits for its events: deliveries go side by side, so only that makes the order testable.
    server_call_id = _start(sim, room_id, TEACHER, STUDENT)
    hook.wait_events(path, lambda evs: len(evs) == 3)
    conn = sim.connect(client, room_id)
    props = conn.get_call_properties()
    sim.add_phone(conn)  # PSTN: no Call* event
    sim.admin.post(f"/_sim/rooms/{room_id}/call/participants", json={"participants": [LATE]})
    hook.wait_events(path, lambda evs: len(evs) == 4)
    sim.admin.delete(f"/_sim/rooms/{room_id}/call/participants/{STUDENT}")
    hook.wait_events(path, lambda evs: len(evs) == 5)
    conn.hang_up(is_for_everyone=True)
    events = hook.wait_events(path, lambda evs: len(_typed(evs, "CallEnded")) == 1)
    names = [e["eventType"].rsplit(".", 1)[1] for e in events]
    assert names == ["CallStarted", "CallParticipantAdded", "CallParticipantAdded", "CallParticipantAdded",
                     "CallParticipantRemoved", "CallParticipantRemoved", "CallParticipantRemoved", "CallEnded"]
    common = {"startedBy": _user(TEACHER, "Presenter"), "serverCallId": server_call_id,
              "group": {"id": "00000000-0000-0000-0000-000000000000"}, "room": {"id": room_id},
              "isTwoParty": False, "correlationId": props.correlation_id, "isRoomsCall": True}
    assert props.server_call_id == server_call_id  # the same ids Call Automation uses: callq can match them
    for event in events:
        assert set(event) == {"id", "topic", "subject", "data", "eventType", "dataVersion", "metadataVersion",
                              "eventTime"}
        assert (event["topic"], event["dataVersion"], event["metadataVersion"]) == (TOPIC, "1.0", "1")
        assert EVENT_TIME.fullmatch(event["eventTime"])
        assert {k: event["data"][k] for k in common} == common
    started = events[0]
    assert started["subject"] == f"call/{server_call_id}/startedBy/{TEACHER}"
    assert started["data"] == common
    added = _typed(events, "CallParticipantAdded")
    assert [a["data"]["user"] for a in added] == [_user(TEACHER, "Presenter"), _user(STUDENT, "Attendee"),
                                                 _user(LATE, "Collaborator")]
    assert added[2]["subject"] == f"call/{server_call_id}/participant/{LATE}"
    assert set(added[0]["data"]) == set(common) | {"user", "displayName", "participantId", "userAgent"}
    removed = _typed(events, "CallParticipantRemoved")
    assert [r["data"]["user"]["communicationIdentifier"]["rawId"] for r in removed] == [STUDENT, TEACHER, LATE]
    assert removed[0]["data"]["participantId"] == added[1]["data"]["participantId"]  # same person, same id
    ended = events[-1]
    assert ended["subject"] == f"call/{server_call_id}"
    assert set(ended["data"]) == set(common) | {"endedBy", "reason", "callDurationInSeconds"}
    assert ended["data"]["endedBy"]["type"] == "MicrosoftInternal"  # Call Automation's terminate
    assert set(ended["data"]["reason"]) == {"code", "subCode", "phrase"}
    assert isinstance(ended["data"]["callDurationInSeconds"], float | int)


def test_participants_ending_the_call_name_one_of_them(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("ended-by", hook.url(path))
    room_id = _room_with_roster(sim)
    _start(sim, room_id, STUDENT, TEACHER)
    assert sim.admin.delete(f"/_sim/rooms/{room_id}/call").status_code == 204
    ended = _typed(hook.wait_events(path, lambda evs: bool(_typed(evs, "CallEnded"))), "CallEnded")[0]["data"]
    assert ended["endedBy"] == {"communicationIdentifier": _user(STUDENT, "Attendee")["communicationIdentifier"],
                                "type": "Participant", "name": "res_student"}
    assert ended["startedBy"] == _user(STUDENT, "Attendee")


def test_call_automation_adds_and_removes_acs_users_but_not_phones(sim: Sim, hook: Hook, client) -> None:
    path = hook.new_path()
    sim.subscribe("ca-users", hook.url(path), max_events_per_batch=50)
    room_id = _room_with_roster(sim)
    server_call_id = _start(sim, room_id, TEACHER)
    conn = sim.connect(client, room_id)
    conn.add_participant(CommunicationUserIdentifier(LATE))
    hook.wait_events(path, lambda evs: len(_typed(evs, "CallParticipantAdded")) == 2)
    sim.add_phone(conn)
    conn.remove_participant(CommunicationUserIdentifier(LATE))
    conn.remove_participant(PhoneNumberIdentifier("+16045550100"))
    sim.receiver.wait_for(sim.path, "RemoveParticipantSucceeded", count=2)
    events = hook.wait_events(path, lambda evs: len(_typed(evs, "CallParticipantRemoved")) >= 1)
    users = [(e["eventType"].rsplit(".", 1)[1], e["data"]["user"]["communicationIdentifier"]["rawId"])
             for e in events if "user" in e["data"]]
    assert users == [("CallParticipantAdded", TEACHER), ("CallParticipantAdded", LATE),
                     ("CallParticipantRemoved", LATE)]
    assert all(e["data"]["serverCallId"] == server_call_id for e in events)
    assert CALLER_ID not in str(events)


def test_recording_file_status_updated_after_stop(sim: Sim, hook: Hook, client) -> None:
    path = hook.new_path()
    sim.subscribe("recordings", hook.url(path))
    room_id = _room_with_roster(sim)
    server_call_id = _start(sim, room_id, TEACHER)
    sim.connect(client, room_id)
    rec = client.start_recording(server_call_id=server_call_id, recording_content_type="audio",
                                 recording_channel_type="unmixed", recording_format_type="wav")
    client.stop_recording(rec.recording_id)
    event = _typed(hook.wait_events(path, lambda evs: bool(_typed(evs, "RecordingFileStatusUpdated"))),
                   "RecordingFileStatusUpdated")[0]
    correlation_id = client.get_call_connection(
        sim.log(operation="connect")[0]["call_connection_id"]).get_call_properties().correlation_id
    assert event["subject"] == (f"/recording/call/{correlation_id}/serverCallId/{server_call_id}"
                                f"/recordingId/{rec.recording_id}")
    data = event["data"]
    assert set(data) == {"recordingStorageInfo", "recordingStartTime", "recordingDurationMs", "sessionEndReason",
                         "recordingContentType", "recordingChannelType", "recordingFormatType"}
    assert (data["recordingContentType"], data["recordingChannelType"], data["recordingFormatType"]) == (
        "Audio", "Unmixed", "Wav")
    assert data["sessionEndReason"] == "RecordingStopped" and isinstance(data["recordingDurationMs"], int)
    assert EVENT_TIME.fullmatch(data["recordingStartTime"])
    [chunk] = data["recordingStorageInfo"]["recordingChunks"]
    doc = chunk["documentId"]
    assert (chunk["index"], chunk["endReason"]) == (0, "SessionEnded")
    assert chunk["contentLocation"] == f"{sim.base}/recordings/{doc}/content"
    assert chunk["metadataLocation"] == f"{sim.base}/recordings/{doc}/metadata"
    assert chunk["deleteLocation"] == f"{sim.base}/recordings/{doc}/delete"


def test_call_end_stops_the_recording_with_reason_call_ended(sim: Sim, hook: Hook, client) -> None:
    path = hook.new_path()
    sim.subscribe("rec-end", hook.url(path))
    room_id = _room_with_roster(sim)
    server_call_id = _start(sim, room_id, TEACHER)
    conn = sim.connect(client, room_id)
    client.start_recording(server_call_id=server_call_id)
    conn.hang_up(is_for_everyone=True)
    event = _typed(hook.wait_events(path, lambda evs: bool(_typed(evs, "RecordingFileStatusUpdated"))),
                   "RecordingFileStatusUpdated")[0]["data"]
    assert event["sessionEndReason"] == "CallEnded"
    assert (event["recordingContentType"], event["recordingChannelType"], event["recordingFormatType"]) == (
        "AudioVideo", "Mixed", "Mp4")  # ACS's defaults


def test_entra_token_verifies_against_the_served_openid_metadata(sim: Sim, hook: Hook) -> None:
    tenant, audience = "72f988bf-86f1-41af-91ab-2d7cd011db47", "api://callq-webhook"
    path = hook.new_path()
    sim.subscribe("secure", hook.url(path), tenant_id=tenant, audience=audience)
    _start(sim, sim.room(start=False)[0], TEACHER)
    note = hook.wait(path, lambda rs: any(r.headers.get("aeg-event-type") == "Notification" for r in rs))
    handshake, delivery = note[0], [r for r in note if r.headers.get("aeg-event-type") == "Notification"][0]
    config = httpx.get(f"{sim.base}/entra/{tenant}/v2.0/.well-known/openid-configuration").json()
    issuer = f"https://login.microsoftonline.com/{tenant}/v2.0"
    assert config["issuer"] == issuer
    assert config["jwks_uri"] == f"{sim.base}/entra/{tenant}/discovery/v2.0/keys"
    keys = jwt.PyJWKClient(config["jwks_uri"])
    for request in (handshake, delivery):
        token = request.headers["authorization"].removeprefix("Bearer ")
        claims = jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"],
                            audience=audience, issuer=issuer)
        assert claims["azp"] == claims["appid"] == EVENT_GRID_APP_ID
        assert claims["roles"] == ["AzureEventGridSecureWebhookSubscriber"]
        assert (claims["tid"], claims["ver"]) == (tenant, "2.0")
        assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] <= claims["iat"]
        assert jwt.get_unverified_header(token)["kid"]
    with pytest.raises(jwt.InvalidAudienceError):
        token = delivery.headers["authorization"].removeprefix("Bearer ")
        jwt.decode(token, keys.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience="someone-else")
