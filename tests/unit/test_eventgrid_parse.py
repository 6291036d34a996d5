"""Event Grid deliveries parsed: both schemas, batches, the validation handshakes, ACS's doc/model drift, refusals."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.requests import Request
from starlette.types import Message

from api.acs_event_fields import AcsFields, raw_id
from api.eventgrid_parse import (
    MAX_BODY_BYTES,
    MAX_EVENTS,
    Event,
    Notifications,
    ValidationRequest,
    parse_delivery,
    read_body,
    webhook_grant,
)
from workers.errors import InvalidCommand

TOPIC = "/subscriptions/s/resourcegroups/rg/providers/microsoft.communication/communicationservices/acs"
CALL = "aHR0cHM6Ly9jb252"
ROOM = "99199690362660524"
CORRELATION = "d732db64-4803-462d-be9c-518943ea2b7a"
EG_JSON = {"content-type": "application/json; charset=utf-8"}
CE_ONE = {"content-type": "application/cloudevents+json; charset=utf-8"}
CE_BATCH = {"content-type": "application/cloudevents-batch+json; charset=utf-8"}


def _participant(raw: str, role: str) -> dict[str, Any]:
    return {"communicationIdentifier": {"kind": "communicationUser", "rawId": raw, "communicationUser": {"id": raw}},
            "role": role}


COMMON = {"startedBy": _participant("8:acs:r_teacher", "Presenter"), "serverCallId": CALL,
          "group": {"id": "00000000-0000-0000-0000-000000000000"}, "room": {"id": ROOM}, "isTwoParty": False,
          "correlationId": CORRELATION, "isRoomsCall": True}

# The reference's examples (§3), Event Grid schema.
CALL_STARTED = {"id": "a8bcd8a3-12d7-46ba-8cde-f6d0bda8feeb", "topic": TOPIC,
                "subject": f"call/{CALL}/startedBy/8:acs:r_teacher", "data": COMMON,
                "eventType": "Microsoft.Communication.CallStarted", "dataVersion": "1.0", "metadataVersion": "1",
                "eventTime": "2021-09-22T17:02:38.6905856Z"}
CALL_ENDED = {"id": "530183db-987b-4a3a-b6c1-3391bab12864", "topic": TOPIC, "subject": f"call/{CALL}",
              "data": {**COMMON, "endedBy": {**_participant("8:acs:r_teacher", "Presenter"), "type": "Participant",
                                             "name": "Teacher"},
                       "reason": {"code": 0, "subCode": 0, "phrase": "{phrase}"}, "callDurationInSeconds": 49.73},
              "eventType": "Microsoft.Communication.CallEnded", "dataVersion": "1.0", "metadataVersion": "1",
              "eventTime": "2021-09-22T17:03:12.6143005Z"}
PARTICIPANT_ADDED = {"id": "615adcbd-23b2-4563-aba7-9d1b424d3d38", "topic": TOPIC,
                     "subject": f"call/{CALL}/participant/8:acs:r_student",
                     "data": {"user": _participant("8:acs:r_student", "Attendee"), "displayName": "Student",
                              "participantId": "041e3b8a-1cce-4ebf-b587-131312c39410",
                              "userAgent": "{client user agent}", **COMMON},
                     "eventType": "Microsoft.Communication.CallParticipantAdded", "dataVersion": "1.0",
                     "metadataVersion": "1", "eventTime": "2021-09-22T17:02:39.2843314Z"}
PARTICIPANT_REMOVED = {**PARTICIPANT_ADDED, "id": "7c3bd6e4-0f0a-4c7e-9d0e-3e0e5c1a2b3c",
                       "eventType": "Microsoft.Communication.CallParticipantRemoved"}
RECORDING = {"id": "7283825e-f8f1-4c61-a9ea-752c56890500", "topic": TOPIC,
             "subject": f"/recording/call/call-1/serverCallId/{CALL}/recordingId/rec-1",
             "data": {"recordingStorageInfo": {"recordingChunks": [{
                 "documentId": "0-eus-d12-801b", "index": 0, "endReason": "SessionEnded",
                 "contentLocation": "https://storage.asm.skype.com/v1/objects/0-eus-d12-801b/content/video",
                 "metadataLocation": "https://storage.asm.skype.com/v1/objects/0-eus-d12-801b/content/acsmetadata",
                 "deleteLocation": "https://storage.asm.skype.com/v1/objects/0-eus-d12-801b/content/deletedata"}]},
                      "recordingStartTime": "2021-07-27T15:20:23.6089755Z", "recordingDurationMs": 6620,
                      "sessionEndReason": "CallEnded", "recordingContentType": "Audio",
                      "recordingChannelType": "Mixed", "recordingFormatType": "Mp3"},
             "eventType": "Microsoft.Communication.RecordingFileStatusUpdated", "dataVersion": "1.0",
             "metadataVersion": "1", "eventTime": "2021-07-27T15:20:34.2199328Z"}
ALL_EVENTS = [CALL_STARTED, CALL_ENDED, PARTICIPANT_ADDED, PARTICIPANT_REMOVED, RECORDING]
VALIDATION = {"id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66", "topic": "/subscriptions/s", "subject": "",
              "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                       "validationUrl": "https://rp-eastus2.eventgrid.azure.net:553/eventsubscriptions/x/validate"
                                        "?id=1&t=2&apiVersion=2018-05-01-preview&token=3"},
              "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "eventTime": "2018-01-25T22:12:19Z",
              "metadataVersion": "1", "dataVersion": "1"}


def cloud(event: dict[str, Any]) -> dict[str, Any]:
    """The same event in the CloudEvents schema, as Event Grid maps it (source = topic, type = eventType)."""
    return {"specversion": "1.0", "id": event["id"], "source": event["topic"], "type": event["eventType"],
            "subject": event["subject"], "time": event["eventTime"], "datacontenttype": "application/json",
            "data": event["data"]}


def parse(payload: object, headers: dict[str, str] | None = None) -> Any:
    return parse_delivery(json.dumps(payload).encode(), EG_JSON if headers is None else headers)


def events(payload: object, headers: dict[str, str] | None = None) -> tuple[Event, ...]:
    delivery = parse(payload, headers)
    assert isinstance(delivery, Notifications)
    return delivery.events


def refusal(body: bytes | object, headers: dict[str, str] | None = None) -> InvalidCommand:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidCommand) as caught:
        parse_delivery(raw, EG_JSON if headers is None else headers)
    return caught.value


# --- The ACS events, both schemas --------------------------------------------------------------------------------

EXPECTED = {
    "Microsoft.Communication.CallStarted": AcsFields(server_call_id=CALL, room_id=ROOM, correlation_id=CORRELATION,
                                                     started_by_raw_id="8:acs:r_teacher"),
    "Microsoft.Communication.CallEnded": AcsFields(server_call_id=CALL, room_id=ROOM, correlation_id=CORRELATION,
                                                   started_by_raw_id="8:acs:r_teacher",
                                                   ended_by_raw_id="8:acs:r_teacher", call_duration_s=49.73),
    "Microsoft.Communication.CallParticipantAdded": AcsFields(
        server_call_id=CALL, room_id=ROOM, correlation_id=CORRELATION, participant_raw_id="8:acs:r_student",
        started_by_raw_id="8:acs:r_teacher", user_agent="{client user agent}"),
    "Microsoft.Communication.RecordingFileStatusUpdated": AcsFields(server_call_id=CALL, recording_id="rec-1"),
}
EXPECTED["Microsoft.Communication.CallParticipantRemoved"] = EXPECTED["Microsoft.Communication.CallParticipantAdded"]


@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e["eventType"].rsplit(".", 1)[1])
def test_each_acs_event_in_the_event_grid_schema(event: dict[str, Any]) -> None:
    (parsed,) = events([event])
    assert (parsed.id, parsed.type, parsed.subject, parsed.source, parsed.schema) == (
        event["id"], event["eventType"], event["subject"], TOPIC, "eventgrid")
    assert parsed.data == event["data"] and parsed.raw == event
    assert parsed.acs == EXPECTED[event["eventType"]]
    assert parsed.time is not None and parsed.time.tzinfo is not None


@pytest.mark.parametrize("headers", [CE_ONE, CE_BATCH, EG_JSON], ids=["cloudevents", "cloudevents-batch", "json"])
@pytest.mark.parametrize("event", ALL_EVENTS, ids=lambda e: e["eventType"].rsplit(".", 1)[1])
def test_each_acs_event_in_the_cloudevents_schema(event: dict[str, Any], headers: dict[str, str]) -> None:
    (parsed,) = events(cloud(event), headers)
    (from_array,) = events([cloud(event)], headers)
    assert parsed == from_array
    assert (parsed.id, parsed.type, parsed.source, parsed.schema) == (event["id"], event["eventType"], TOPIC,
                                                                      "cloudevents")
    assert parsed.acs == EXPECTED[event["eventType"]]


def test_the_event_time_keeps_its_instant() -> None:
    (parsed,) = events([CALL_STARTED])
    assert parsed.time == datetime(2021, 9, 22, 17, 2, 38, 690585, tzinfo=UTC)


def test_a_batch_keeps_its_order_and_schema() -> None:
    delivery = parse(ALL_EVENTS)
    assert isinstance(delivery, Notifications) and delivery.schema == "eventgrid"
    assert [e.id for e in delivery.events] == [e["id"] for e in ALL_EVENTS]
    ce = parse([cloud(e) for e in ALL_EVENTS], CE_BATCH)
    assert ce.schema == "cloudevents" and [e.id for e in ce.events] == [e["id"] for e in ALL_EVENTS]


def test_the_largest_batch_event_grid_sends_is_accepted() -> None:
    batch = [{**CALL_STARTED, "id": f"e{n}", "data": {}} for n in range(MAX_EVENTS)]
    assert len(events(batch)) == MAX_EVENTS


def test_other_event_types_pass_through_with_no_acs_fields() -> None:
    deleted = {"id": "d1", "topic": "/subscriptions/s", "subject": "", "eventTime": "2024-01-01T00:00:00Z",
               "eventType": "Microsoft.EventGrid.SubscriptionDeletedEvent", "data": {"eventSubscriptionId": "x"}}
    (parsed,) = events([deleted], {**EG_JSON, "aeg-event-type": "SubscriptionDeletion"})
    assert parsed.type == "Microsoft.EventGrid.SubscriptionDeletedEvent" and parsed.acs == AcsFields()


def test_optional_fields_absent_or_odd_become_none_not_a_refusal() -> None:
    bare = {"id": "x1", "eventType": "Microsoft.Communication.CallStarted", "eventTime": "yesterday",
            "subject": 42, "data": None}
    (parsed,) = events([bare])
    assert (parsed.time, parsed.subject, parsed.source, parsed.data, parsed.acs) == (None, "", "", {}, AcsFields())
    (naive,) = events([{**bare, "eventTime": "2024-05-01T10:00:00"}])
    assert naive.time == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)  # no offset: Event Grid's times are UTC


# --- Doc/model drift -----------------------------------------------------------------------------------------------


def _with_data(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    data = {k: v for k, v in {**copy.deepcopy(event["data"]), **changes}.items() if v is not None}
    return {**event, "data": data}


def test_raw_id_directly_under_started_by_2021_docs() -> None:
    (parsed,) = events([_with_data(CALL_STARTED, startedBy={"rawId": "8:acs:r_teacher", "role": "Presenter"})])
    assert parsed.acs.started_by_raw_id == "8:acs:r_teacher"


def test_lower_case_communicationidentifier_egex() -> None:
    ended_by = {"communicationidentifier": {"rawId": "8:acs:r_host"}, "type": "Participant", "name": "Host"}
    (parsed,) = events([_with_data(CALL_ENDED, endedBy=ended_by)])
    assert parsed.acs.ended_by_raw_id == "8:acs:r_host"


def test_call_ended_with_duration_of_call_2022_docs() -> None:
    old = _with_data(CALL_ENDED, endedBy=None, reason=None, callDurationInSeconds=None, durationOfCall=49.7)
    (parsed,) = events([old])
    assert (parsed.acs.call_duration_s, parsed.acs.ended_by_raw_id) == (49.7, None)


def test_participant_endpoint_type_instead_of_user_agent() -> None:
    (parsed,) = events([_with_data(PARTICIPANT_ADDED, userAgent=None, endpointType="acs-web-client/1.0")])
    assert parsed.acs.user_agent == "acs-web-client/1.0"


def test_participant_raw_id_falls_back_on_the_kind_id_then_the_subject() -> None:
    user_only = {"communicationIdentifier": {"kind": "communicationUser", "communicationUser": {"id": "8:acs:u"}}}
    (by_kind,) = events([_with_data(PARTICIPANT_ADDED, user=user_only)])
    assert by_kind.acs.participant_raw_id == "8:acs:u"
    (by_subject,) = events([_with_data(PARTICIPANT_REMOVED, user=None)])
    assert by_subject.acs.participant_raw_id == "8:acs:r_student"


def test_a_phone_participant_gets_its_raw_id_prefix() -> None:
    assert raw_id({"communicationIdentifier": {"kind": "phoneNumber", "phoneNumber": {"value": "+14255550123"}}}) \
        == "4:+14255550123"


def test_a_numeric_room_id_and_the_subjects_call_id() -> None:
    (parsed,) = events([_with_data(CALL_ENDED, room={"id": 99199690362660524}, serverCallId=None)])
    assert (parsed.acs.room_id, parsed.acs.server_call_id) == (ROOM, CALL)


def test_keys_in_other_case_are_read() -> None:
    shouting = {"ServerCallId": CALL, "Room": {"Id": ROOM}, "CORRELATIONID": CORRELATION}
    (parsed,) = events([{**CALL_STARTED, "data": shouting}])
    assert (parsed.acs.server_call_id, parsed.acs.room_id, parsed.acs.correlation_id) == (CALL, ROOM, CORRELATION)


def test_a_non_rooms_call_has_no_room_id() -> None:
    (parsed,) = events([_with_data(CALL_STARTED, room=None, isRoomsCall=False)])
    assert parsed.acs.room_id is None and parsed.acs.server_call_id == CALL


# --- Validation handshakes -----------------------------------------------------------------------------------------


def test_the_validation_event_is_a_validation_request() -> None:
    delivery = parse([VALIDATION], {**EG_JSON, "aeg-event-type": "SubscriptionValidation"})
    assert delivery == ValidationRequest(code=VALIDATION["data"]["validationCode"],
                                         url=VALIDATION["data"]["validationUrl"], event_id=VALIDATION["id"],
                                         schema="eventgrid")
    response = delivery.response()
    assert response.status_code == 200
    assert json.loads(bytes(response.body)) == {"validationResponse": VALIDATION["data"]["validationCode"]}


def test_a_validation_event_without_the_header_or_url_is_still_one() -> None:
    delivery = parse([_with_data(VALIDATION, validationUrl=None)])
    assert isinstance(delivery, ValidationRequest) and delivery.url is None


def test_a_validation_event_in_the_cloudevents_schema_is_answered_too() -> None:
    delivery = parse(cloud(VALIDATION), CE_ONE)
    assert isinstance(delivery, ValidationRequest) and delivery.schema == "cloudevents"


def test_the_abuse_protection_request_is_granted_for_its_origin() -> None:
    assert webhook_grant({"WebHook-Request-Origin": "eventgrid.azure.net", "WebHook-Request-Rate": "120"}) == {
        "WebHook-Allowed-Origin": "eventgrid.azure.net", "WebHook-Allowed-Rate": "*", "Allow": "POST"}
    assert webhook_grant({"webhook-request-origin": "eventgrid.azure.net"})["WebHook-Allowed-Rate"] == "*"


@pytest.mark.parametrize("headers", [{}, {"WebHook-Request-Origin": ""}, {"WebHook-Request-Origin": "a b"},
                                     {"WebHook-Request-Origin": "evil.example\r\nSet-Cookie: x=1"}],
                         ids=["missing", "empty", "space", "header-injection"])
def test_an_abuse_protection_request_without_a_usable_origin_is_400(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidCommand) as caught:
        webhook_grant(headers)
    assert caught.value.code == "bad_webhook_origin"


# --- Refusals -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "code"), [
    (b"", "invalid_json"),
    (b"[{", "invalid_json"),
    (b"\xff\xfe", "invalid_json"),
    (b'[{"id": "x", "eventType": "t", "data": {"n": NaN}}]', "invalid_json"),
    (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
    (b'"text"', "invalid_event"),
    (b"42", "invalid_event"),
    (b"null", "invalid_event"),
    (b"[]", "invalid_event"),
    (b"[1, 2]", "invalid_event"),
    (b"[[]]", "invalid_event"),
], ids=["empty", "truncated", "not-utf8", "nan", "deep", "string", "number", "null", "empty-array", "numbers",
        "nested-array"])
def test_a_body_that_is_not_a_delivery_is_refused(body: bytes, code: str) -> None:
    assert refusal(body).code == code


@pytest.mark.parametrize(("change", "field"), [
    ({"id": None}, "id"), ({"id": ""}, "id"), ({"id": 7}, "id"),
    ({"eventType": None}, "eventType"), ({"eventType": ""}, "eventType"), ({"eventType": ["x"]}, "eventType"),
    ({"data": "text"}, "data"), ({"data": [1]}, "data"),
], ids=["no-id", "empty-id", "number-id", "no-type", "empty-type", "list-type", "text-data", "list-data"])
def test_an_event_grid_event_missing_what_callq_needs_is_refused(change: dict[str, Any], field: str) -> None:
    broken = {k: v for k, v in {**CALL_STARTED, **change}.items() if v is not None}
    caught = refusal([CALL_ENDED, broken])
    assert caught.code == "invalid_event" and caught.details == [{"index": 1, "field": field}]


@pytest.mark.parametrize(("change", "field"), [
    ({"id": None}, "id"), ({"type": None}, "type"), ({"type": ""}, "type"),
    ({"specversion": "0.3"}, "specversion"), ({"specversion": 1.0}, "specversion"),
], ids=["no-id", "no-type", "empty-type", "old-version", "number-version"])
def test_a_cloudevent_missing_what_callq_needs_is_refused(change: dict[str, Any], field: str) -> None:
    broken = {k: v for k, v in {**cloud(CALL_STARTED), **change}.items() if v is not None}
    caught = refusal(broken, CE_ONE)
    assert caught.code == "invalid_event" and caught.details == [{"index": 0, "field": field}]


def test_an_event_grid_event_outside_an_array_is_refused() -> None:
    assert refusal(CALL_STARTED).code == "invalid_event"


def test_event_grid_events_under_a_cloudevents_content_type_are_refused() -> None:
    assert refusal([CALL_STARTED], CE_BATCH).code == "invalid_event"


def test_a_delivery_mixing_the_two_schemas_is_refused() -> None:
    assert refusal([CALL_STARTED, cloud(CALL_ENDED)]).code == "invalid_event"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data; boundary=x"])
def test_a_content_type_that_is_not_json_is_415(content_type: str) -> None:
    assert refusal([CALL_STARTED], {"content-type": content_type}).code == "unsupported_media_type"


def test_a_missing_content_type_is_read_as_json() -> None:
    assert len(events([CALL_STARTED], {})) == 1


def test_a_validation_event_mixed_with_notifications_is_refused() -> None:
    assert refusal([VALIDATION, CALL_STARTED]).code == "validation_mixed"
    assert refusal([CALL_STARTED, VALIDATION], {**EG_JSON, "aeg-event-type": "SubscriptionValidation"}).code \
        == "validation_mixed"


def test_a_validation_event_without_its_code_is_refused() -> None:
    caught = refusal([_with_data(VALIDATION, validationCode=None)])
    assert caught.code == "invalid_event" and caught.details == [{"index": 0, "field": "data.validationCode"}]


def test_an_aeg_event_type_header_the_body_contradicts_is_refused() -> None:
    assert refusal([CALL_STARTED], {**EG_JSON, "aeg-event-type": "SubscriptionValidation"}).code == "invalid_event"
    assert refusal([VALIDATION], {**EG_JSON, "aeg-event-type": "Notification"}).code == "invalid_event"


def test_too_many_events_is_413() -> None:
    batch = [{"id": f"e{n}", "eventType": "t"} for n in range(MAX_EVENTS + 1)]
    assert refusal(batch).code == "too_many_events"


def test_an_oversized_body_is_refused() -> None:
    body = json.dumps([{**CALL_STARTED, "data": {"pad": "x" * MAX_BODY_BYTES}}]).encode()
    assert refusal(body).code == "body_too_large"


def test_an_event_of_event_grids_largest_size_is_accepted() -> None:
    (parsed,) = events([{**CALL_STARTED, "data": {"pad": "x" * (1024 * 1024 - 1000)}}])
    assert parsed.id == CALL_STARTED["id"]


# --- Reading the body ---------------------------------------------------------------------------------------------


def _request(chunks: list[bytes], content_length: int | None = None) -> Request:
    pending: Iterator[bytes] = iter(chunks)
    sent: list[int] = []

    async def receive() -> Message:
        chunk = next(pending, b"")
        sent.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": chunk != b""}

    headers = [(b"content-length", str(content_length).encode())] if content_length is not None else []
    request = Request({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive)
    request.state.sent = sent
    return request


def test_read_body_returns_the_whole_body() -> None:
    assert asyncio.run(read_body(_request([b"[{", b"}]"]))) == b"[{}]"


def test_read_body_refuses_a_declared_length_over_the_limit_without_reading() -> None:
    request = _request([b"x" * 10], content_length=MAX_BODY_BYTES + 1)
    with pytest.raises(InvalidCommand) as caught:
        asyncio.run(read_body(request))
    assert caught.value.code == "body_too_large" and request.state.sent == []


def test_read_body_stops_reading_a_stream_that_runs_past_the_limit() -> None:
    request = _request([b"x" * 60, b"x" * 60, b"x" * 60], content_length=10)  # a sender lying about its length
    with pytest.raises(InvalidCommand) as caught:
        asyncio.run(read_body(request, limit=100))
    assert caught.value.code == "body_too_large" and request.state.sent == [60, 60]
