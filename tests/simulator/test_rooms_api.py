"""The Rooms API through the unmodified azure-communication-rooms 1.2.0 SDK (and raw requests where the SDK hides
the wire): create, get, list with paging, update, delete, participants, every error, repeatability, HMAC."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from azure.communication.rooms import (
    CommunicationRoom,
    CommunicationUserIdentifier,
    ParticipantRole,
    RoomParticipant,
    RoomsClient,
)
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from simharness import KEY, Sim, sign_headers

V = "api-version=2025-03-13"
TEACHER, STUDENT = "8:acs:res_teacher", "8:acs:res_student"
STAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}\+00:00")


def _user(raw_id: str, role: str | None = None) -> RoomParticipant:
    if role is None:
        return RoomParticipant(communication_identifier=CommunicationUserIdentifier(raw_id))
    return RoomParticipant(communication_identifier=CommunicationUserIdentifier(raw_id), role=role)


def _roster(client: RoomsClient, room_id: str) -> dict[str, str]:
    return {p.communication_identifier.raw_id: p.role for p in client.list_participants(room_id)}


def _first_sent(ago_s: float = 0.0) -> str:
    return format_datetime(datetime.now(UTC) - timedelta(seconds=ago_s), usegmt=True)


def test_create_with_participants_and_roles_then_get(sim: Sim) -> None:
    start = datetime.now(UTC) + timedelta(hours=1)
    with sim.rooms_client() as client:
        room = client.create_room(valid_from=start, valid_until=start + timedelta(hours=2), pstn_dial_out_enabled=True,
                                  participants=[_user(TEACHER, ParticipantRole.PRESENTER), _user(STUDENT)])
        assert len(room.id) == 17 and room.id.isdigit()
        assert room.pstn_dial_out_enabled is True
        for stamp in (room.created_at, room.valid_from, room.valid_until):
            assert STAMP.fullmatch(stamp), stamp  # the SDK hands them over as raw strings
        assert datetime.fromisoformat(room.valid_from) == start.replace(microsecond=start.microsecond)
        again = client.get_room(room.id)
        assert again.__dict__ == room.__dict__
        assert _roster(client, room.id) == {TEACHER: "Presenter", STUDENT: "Attendee"}


def test_create_raw_reply_has_201_location_repeatability_result_and_all_five_fields(sim: Sim) -> None:
    repeatability = {"Repeatability-Request-ID": str(uuid.uuid4()), "Repeatability-First-Sent": _first_sent()}
    response = sim.acs("POST", f"/rooms?{V}", {"validFrom": None, "validUntil": None, "pstnDialOutEnabled": False},
                       headers=repeatability)
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["id", "createdAt", "validFrom", "validUntil", "pstnDialOutEnabled"]
    assert response.headers["location"] == body["id"]
    assert response.headers["repeatability-result"] == "accepted"
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    assert "2025-03-13" in response.headers["api-supported-versions"]
    valid_from, valid_until = (datetime.fromisoformat(body[k]) for k in ("validFrom", "validUntil"))
    assert valid_until - valid_from == timedelta(days=180)  # the defaults: now, now + 180 days
    assert body["pstnDialOutEnabled"] is False


def test_list_rooms_follows_absolute_next_links_across_pages(sim: Sim) -> None:
    sim.faults(rooms_page_size=2)
    with sim.rooms_client() as client:
        made = [client.create_room().id for _ in range(5)]
        listed = [r.id for r in client.list_rooms()]
    assert listed == made[::-1]  # newest first, as ACS lists them
    pages = [a for a in sim.admin.get("/_sim/arrivals").json() if a["method"] == "GET" and a["path"] == "/rooms"]
    assert len(pages) == 3
    first = sim.acs("GET", f"/rooms?{V}").json()
    assert first["nextLink"].startswith(f"{sim.base}/rooms?nextLink=") and first["nextLink"].endswith(f"&{V}")


def test_list_participants_pages(sim: Sim) -> None:
    sim.faults(rooms_page_size=2)
    users = [f"8:acs:res_u{i}" for i in range(5)]
    with sim.rooms_client() as client:
        room = client.create_room(participants=[_user(u) for u in users])
        assert list(_roster(client, room.id)) == users


def test_default_client_fails_on_page_two_because_of_the_sdk_api_version_bug(sim: Sim) -> None:
    """Why callq builds RoomsClient(..., api_version="2025-03-13"): without it page 2 says ApiVersion.V2025_03_13."""
    sim.faults(rooms_page_size=1)
    client = RoomsClient(sim.base, AzureKeyCredential(KEY), retry_total=0)
    client.create_room()
    client.create_room()
    with pytest.raises(HttpResponseError) as err:
        list(client.list_rooms())
    assert (err.value.status_code, err.value.error.code) == (400, "UnsupportedApiVersion")


def test_update_room_changes_only_what_it_is_given(sim: Sim) -> None:
    with sim.rooms_client() as client:
        room = client.create_room(pstn_dial_out_enabled=True)
        until = datetime.now(UTC) + timedelta(days=3)
        updated = client.update_room(room_id=room.id, valid_until=until)  # sends validFrom/pstn as null
        assert datetime.fromisoformat(updated.valid_until) == until
        assert updated.valid_from == room.valid_from and updated.pstn_dial_out_enabled is True
        assert client.update_room(room_id=room.id, pstn_dial_out_enabled=False).pstn_dial_out_enabled is False
        assert client.get_room(room.id).valid_until == updated.valid_until


def test_delete_then_404_not_found(sim: Sim) -> None:
    with sim.rooms_client() as client:
        room = client.create_room()
        client.delete_room(room.id)
        for action in (lambda: client.get_room(room.id), lambda: client.delete_room(room.id),
                       lambda: client.update_room(room_id=room.id, pstn_dial_out_enabled=True)):
            with pytest.raises(ResourceNotFoundError) as err:
                action()
            assert err.value.error.code == "NotFound"
            assert err.value.error.message == "The server cannot find the requested resource."
    raw = sim.acs("DELETE", f"/rooms/{room.id}?{V}")
    assert raw.headers["x-ms-error-code"] == "NotFound"


def test_participants_add_change_and_remove_including_unknown(sim: Sim) -> None:
    with sim.rooms_client() as client:
        room = client.create_room(participants=[_user(TEACHER, "Presenter")])
        client.add_or_update_participants(room_id=room.id, participants=[_user(STUDENT, "Collaborator"),
                                                                          _user(TEACHER, "Consumer")])
        assert _roster(client, room.id) == {TEACHER: "Consumer", STUDENT: "Collaborator"}
        client.remove_participants(room_id=room.id, participants=[CommunicationUserIdentifier(TEACHER),
                                                                   CommunicationUserIdentifier("8:acs:res_nobody")])
        assert _roster(client, room.id) == {STUDENT: "Collaborator"}
    raw = sim.acs("PATCH", f"/rooms/{room.id}/participants?{V}", {"participants": {"8:acs:res_ghost": None}},
                  headers={"Content-Type": "application/merge-patch+json"})
    assert (raw.status_code, raw.json()) == (200, {})
    mixed = sim.acs("PATCH", f"/rooms/{room.id}/participants?{V}",
                    {"participants": {STUDENT: None, TEACHER: {"role": None}}})
    assert mixed.status_code == 200
    assert sim.acs("GET", f"/rooms/{room.id}/participants?{V}").json() == {
        "value": [{"rawId": TEACHER, "role": "Attendee"}]}


def _time_error(err: pytest.ExceptionInfo[HttpResponseError], target: str, message: str) -> None:
    assert err.value.status_code == 400
    assert err.value.error.code == "BadRequest"
    assert err.value.error.message == "The request could not be understood by the server due to malformed syntax."
    detail = err.value.error.details[0]
    assert (detail.code, detail.target, detail.message) == ("BadArgument", target, message)


def test_time_range_errors(sim: Sim) -> None:
    now = datetime.now(UTC)
    with sim.rooms_client() as client:
        with pytest.raises(HttpResponseError) as err:
            client.create_room(valid_from=now, valid_until=now + timedelta(days=181))
        _time_error(err, "ValidUntil", "The time range is incorrect, or larger than 180 days.")
        with pytest.raises(HttpResponseError) as err:
            client.create_room(valid_from=now + timedelta(days=200))
        _time_error(err, "ValidFrom", "Value is incorrect or more than 180 days in the future.")
        with pytest.raises(HttpResponseError) as err:
            client.create_room(valid_until=now - timedelta(minutes=1))
        _time_error(err, "ValidUntil", "The time range end is in the past.")
        room = client.create_room()
        with pytest.raises(HttpResponseError) as err:
            client.update_room(room_id=room.id, valid_from=now + timedelta(days=1),
                               valid_until=now + timedelta(days=190))
        _time_error(err, "ValidUntil", "The time range is incorrect, or larger than 180 days.")
        assert client.get_room(room.id).valid_until == room.valid_until  # nothing changed


def test_bad_participants_are_400_with_acs_messages(sim: Sim) -> None:
    with sim.rooms_client() as client:
        with pytest.raises(HttpResponseError) as err:
            client.create_room(participants=[_user("wrong_mri"), _user(TEACHER, "Presenter")])
        assert (err.value.error.code, err.value.error.message) == (
            "BadRequest", "Invalid format for communication identifier.")
        room = client.create_room()
        with pytest.raises(HttpResponseError) as err:
            client.add_or_update_participants(room_id=room.id, participants=[_user(TEACHER, "Kafka")])
        assert err.value.error.code == "BadRequest"
        assert err.value.error.details[0].target == f"$.participants.{TEACHER}.role"
        with pytest.raises(HttpResponseError) as err:
            client.add_or_update_participants(room_id=room.id, participants=[_user("4:+16045550100")])
        assert err.value.error.message == "Invalid format for communication identifier."
        assert _roster(client, room.id) == {}


@pytest.mark.parametrize("room_id", ["123", "invalid_id"])
def test_bad_room_id_length_is_400(sim: Sim, room_id: str) -> None:
    with sim.rooms_client() as client, pytest.raises(HttpResponseError) as err:
        client.get_room(room_id)
    assert (err.value.status_code, err.value.error.code, err.value.error.message) == (
        400, "BadRequest", "Invalid room ID length.")
    assert sim.acs("GET", f"/rooms/{room_id}?{V}").headers["x-ms-error-code"] == "BadRequest"


def test_unknown_room_is_404(sim: Sim) -> None:
    with sim.rooms_client() as client, pytest.raises(ResourceNotFoundError):
        client.list_participants("12345678901234567").next()


@pytest.mark.parametrize(("query", "code"), [("", "MissingApiVersionParameter"),
                                              ("?api-version=2099-01-01", "UnsupportedApiVersion"),
                                              ("?api-version=ApiVersion.V2025_03_13", "UnsupportedApiVersion")])
def test_unknown_api_version_is_400(sim: Sim, query: str, code: str) -> None:
    response = sim.acs("GET", f"/rooms{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code == response.headers["x-ms-error-code"]


def test_hmac_refusal_and_decoded_target(sim: Sim) -> None:
    with RoomsClient(sim.base, AzureKeyCredential("d3Jvbmcta2V5"), api_version="2025-03-13",
                     retry_total=0) as client, pytest.raises(ClientAuthenticationError) as err:
        client.create_room()
    assert err.value.status_code == 401
    url = f"{sim.base}/rooms?{V}&nextLink=abc%3D%3D"
    encoded = sim.admin.get(url, headers=sign_headers(KEY, "GET", url, b""))  # signed as /calling is: refused
    assert encoded.status_code == 401
    decoded = sign_headers(KEY, "GET", f"{sim.base}/rooms?{V}&nextLink=abc==", b"")
    accepted = sim.admin.get(url, headers=decoded)
    assert (accepted.status_code, accepted.json()["error"]["message"]) == (400, "Invalid continuation token.")


def _create_raw(client: RoomsClient, request_id: str, first_sent: str, **body: object) -> CommunicationRoom:
    # The public create_room() overwrites any Repeatability-Request-Id; the generated client keeps a caller's.
    request = {"validFrom": None, "validUntil": None, "pstnDialOutEnabled": False, **body}
    raw = client._rooms_service_client.rooms.create(
        create_room_request=request,
        headers={"Repeatability-Request-ID": request_id, "Repeatability-First-Sent": first_sent})
    return CommunicationRoom(raw)


def test_repeated_create_replays_the_first_room(sim: Sim) -> None:
    request_id, first_sent = str(uuid.uuid4()), _first_sent()
    with sim.rooms_client() as client:
        first = _create_raw(client, request_id, first_sent, pstnDialOutEnabled=True)
        again = _create_raw(client, request_id, first_sent, pstnDialOutEnabled=True)
        assert again.__dict__ == first.__dict__
        assert [r.id for r in client.list_rooms()] == [first.id]
        with pytest.raises(HttpResponseError) as err:
            _create_raw(client, request_id, first_sent, pstnDialOutEnabled=False)
        assert err.value.status_code == 400
    assert [e["operation"] for e in sim.log()] == ["createRoom"]


def test_repeatability_header_errors(sim: Sim) -> None:
    with sim.rooms_client() as client:
        with pytest.raises(HttpResponseError) as err:
            _create_raw(client, str(uuid.uuid4()), _first_sent(ago_s=301))
        assert (err.value.status_code, err.value.error.code) == (412, "PreconditionFailed")
        for request_id, first_sent in (("not-a-uuid", _first_sent()), (str(uuid.uuid4()), "yesterday")):
            with pytest.raises(HttpResponseError) as err:
                _create_raw(client, request_id, first_sent)
            assert err.value.status_code == 400
        assert list(client.list_rooms()) == []
    missing = sim.acs("POST", f"/rooms?{V}", {}, headers={"Repeatability-Request-ID": str(uuid.uuid4())})
    assert missing.status_code == 400


def test_sdk_retry_after_a_lost_response_gets_the_same_room(sim: Sim) -> None:
    sim.faults(execute_then_fail_count=1, execute_then_fail_operations=["createRoom"])
    with sim.rooms_client(retry_total=3, retry_backoff_factor=0.01) as client:
        room = client.create_room(pstn_dial_out_enabled=True)  # first answer was a 503; the retry replays
        assert [r.id for r in client.list_rooms()] == [room.id]
    assert [e["fault"] for e in sim.log(operation="createRoom")] == ["503"]
