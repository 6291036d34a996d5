"""The room routes on fakeredis with an in-memory Rooms client: validation codes, exactly-once create,
isolation between clients, adoption, merge of updates, participants and paging.

The real SDK against the simulator's Rooms API is tests/integration/test_rooms.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from tests.conftest import OTHER_API_KEY, TEST_API_KEY
from workers import keys
from workers.errors import AcsError, RoomNotFound
from workers.rooms import RoomsAcs
from workers.settings import Settings


class FakeRooms(RoomsAcs):
    """ACS's Rooms in memory, recording what callq sent."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Any]] = {}
        self.participants_of: dict[str, dict[str, str]] = {}
        self.creates: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.fail_next: AcsError | None = None
        self._by_repeatability: dict[str, str] = {}
        self._next = 10**16

    def close(self) -> None:
        """Nothing to close: no connection."""

    def _fail(self) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc

    def create(self, *, valid_from: str | None, valid_until: str | None, pstn_dial_out_enabled: bool,
               participants: Mapping[str, str], repeatability_id: str, first_sent: str) -> dict[str, Any]:
        self.creates.append({"repeatability_id": repeatability_id, "first_sent": first_sent,
                             "participants": dict(participants)})
        if repeatability_id in self._by_repeatability:  # ACS replays a repeated request
            return dict(self.rooms[self._by_repeatability[repeatability_id]])
        now = datetime.now(UTC)
        self._next += 1
        room = {"id": str(self._next), "createdAt": now.isoformat(), "validFrom": valid_from or now.isoformat(),
                "validUntil": valid_until or (now + timedelta(days=180)).isoformat(),
                "pstnDialOutEnabled": pstn_dial_out_enabled}
        self.rooms[room["id"]] = room
        self.participants_of[room["id"]] = dict(participants)
        self._by_repeatability[repeatability_id] = room["id"]
        self._fail()  # made at ACS, then the answer is lost
        return dict(room)

    def get(self, room_id: str) -> dict[str, Any]:
        if room_id not in self.rooms:
            raise RoomNotFound(f"ACS has no room {room_id!r}.")
        return dict(self.rooms[room_id])

    def update(self, room_id: str, *, valid_from: str, valid_until: str, pstn_dial_out_enabled: bool) -> dict[str, Any]:
        self.updates.append({"validFrom": valid_from, "validUntil": valid_until,
                             "pstnDialOutEnabled": pstn_dial_out_enabled})
        room = self.get(room_id)
        room.update(self.updates[-1])
        self.rooms[room_id] = room
        return dict(room)

    def delete(self, room_id: str) -> None:
        self.get(room_id)
        del self.rooms[room_id]

    def participants(self, room_id: str) -> list[dict[str, str]]:
        self.get(room_id)
        return [{"raw_id": raw, "role": role.lower()} for raw, role in self.participants_of[room_id].items()]

    def change_participants(self, room_id: str, changes: Mapping[str, str | None]) -> None:
        self.get(room_id)
        for raw, role in changes.items():
            if role is None:
                self.participants_of[room_id].pop(raw, None)
            else:
                self.participants_of[room_id][raw] = role


@pytest.fixture
def acs() -> FakeRooms:
    return FakeRooms()


@pytest.fixture
def api(settings: Settings, server: fakeredis.FakeServer, acs: FakeRooms) -> Iterator[TestClient]:
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True), rooms=acs)
    with TestClient(app) as c:
        yield c


def auth(key: str = TEST_API_KEY, idem: str | None = "room-key-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **({"Idempotency-Key": idem} if idem else {})}


def at(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat().replace("+00:00", "Z")


CLASS = {"valid_from": at(1), "valid_until": at(3), "pstn_dial_out_enabled": True,
         "participants": [{"communication_user": "8:acs:teacher", "role": "presenter"},
                          {"communication_user": "8:acs:student"}]}


def test_a_room_is_created_at_acs_and_managed_for_its_client(api: TestClient, acs: FakeRooms,
                                                              r: fakeredis.FakeRedis) -> None:
    resp = api.post("/v1/rooms", headers=auth(), json=CLASS)
    assert resp.status_code == 201, resp.text
    room = resp.json()
    assert resp.headers["Location"] == f"/v1/rooms/{room['id']}" and room["id"] in acs.rooms
    assert room["pstn_dial_out_enabled"] is True and room["origin"] == "created"
    assert room["valid_from"] == CLASS["valid_from"][:23] + "Z" and room["links"]["automation"].endswith("/automation")
    assert acs.creates[0]["participants"] == {"8:acs:teacher": "Presenter", "8:acs:student": "Attendee"}
    assert r.hget(keys.room_key(room["id"]), "client") == "alice"
    assert [i["id"] for i in api.get("/v1/rooms", headers=auth(idem=None)).json()["items"]] == [room["id"]]


def test_the_same_key_answers_the_first_room_and_another_body_is_refused(api: TestClient, acs: FakeRooms) -> None:
    first = api.post("/v1/rooms", headers=auth(), json=CLASS)
    again = api.post("/v1/rooms", headers=auth(), json=CLASS)
    assert again.status_code == 201 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true" and len(acs.creates) == 1
    other = api.post("/v1/rooms", headers=auth(), json={**CLASS, "pstn_dial_out_enabled": False})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"


def test_a_retry_after_a_lost_answer_replays_the_create_at_acs(api: TestClient, acs: FakeRooms) -> None:
    acs.fail_next = AcsError("ACS connection dropped before a response", retryable=True)
    lost = api.post("/v1/rooms", headers=auth(), json=CLASS)
    assert lost.status_code == 502
    retried = api.post("/v1/rooms", headers=auth(), json=CLASS)
    assert retried.status_code == 201
    assert len(acs.rooms) == 1 and retried.json()["id"] in acs.rooms
    first, second = acs.creates
    assert first["repeatability_id"] == second["repeatability_id"] and first["first_sent"] == second["first_sent"]
    other_key = api.post("/v1/rooms", headers=auth(idem="room-key-2"), json=CLASS)
    assert acs.creates[2]["repeatability_id"] != first["repeatability_id"] and other_key.json()["id"] != \
        retried.json()["id"]


def test_a_create_acs_refused_can_be_retried_afresh(api: TestClient, acs: FakeRooms, r: fakeredis.FakeRedis) -> None:
    acs.fail_next = AcsError("ACS answered 400: bad", status=400)
    assert api.post("/v1/rooms", headers=auth(), json=CLASS).status_code == 400
    assert r.hget(keys.idempotency_key("alice", "room-key-1"), "first_sent") is None


def test_a_lost_create_retried_past_acs_window_is_refused_not_repeated(api: TestClient, acs: FakeRooms,
                                                                        r: fakeredis.FakeRedis) -> None:
    old = format_datetime(datetime.now(UTC) - timedelta(minutes=6), usegmt=True)
    r.hset(keys.idempotency_key("alice", "room-key-1"), "first_sent", old)
    resp = api.post("/v1/rooms", headers=auth(), json=CLASS)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "room_create_in_doubt"
    assert acs.creates == []


@pytest.mark.parametrize(("change", "code"), [
    ({"valid_until": at(-1), "valid_from": at(-2)}, "window_in_past"),
    ({"valid_until": at(1), "valid_from": at(2)}, "window_inverted"),
    ({"valid_from": at(1), "valid_until": at(24 * 181 + 1)}, "window_too_long"),
    ({"valid_from": at(24 * 181), "valid_until": at(24 * 182)}, "valid_from_too_far"),
    ({"participants": [{"communication_user": "8:acs:x", "role": "kafka"}]}, "unknown_role"),
    ({"participants": [{"communication_user": "+14255550123"}]}, "invalid_communication_user"),
    ({"participants": [{"communication_user": "8:acs:x"}, {"communication_user": "8:acs:x", "role": "consumer"}]},
     "duplicate_participant"),
    ({"pstn_dial_out_enabled": "yes"}, "validation_error"),
    ({"valid_from": "2026-12-07T09:00:00"}, "validation_error"),  # no timezone: ambiguous
])
def test_a_bad_room_is_refused_with_its_code_and_nothing_is_made(api: TestClient, acs: FakeRooms,
                                                                  change: dict[str, Any], code: str) -> None:
    resp = api.post("/v1/rooms", headers=auth(), json={**CLASS, **change})
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == code and acs.creates == []


def test_another_clients_room_is_not_found_anywhere(api: TestClient, acs: FakeRooms) -> None:
    room = api.post("/v1/rooms", headers=auth(), json=CLASS).json()["id"]
    other = auth(OTHER_API_KEY, idem="other-1")
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("GET", "/participants"),
                         ("PUT", "/participants"), ("POST", "/participants/remove")]:
        resp = api.request(method, f"/v1/rooms/{room}{path}", headers=other, json={"participants": ["8:acs:x"]})
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "room_not_found", (method, path)
    connect = api.post(f"/v1/rooms/{room}/connect", headers=other)
    assert connect.status_code == 404 and connect.json()["error"]["code"] == "room_not_found"
    assert api.get("/v1/rooms", headers=other).json()["items"] == []
    assert room in acs.rooms


def test_a_room_made_elsewhere_is_adopted_once_and_by_one_client(api: TestClient, acs: FakeRooms) -> None:
    made = acs.create(valid_from=None, valid_until=None, pstn_dial_out_enabled=False, participants={},
                      repeatability_id="elsewhere", first_sent="")
    first = api.put(f"/v1/rooms/{made['id']}", headers=auth(idem=None))
    assert first.status_code == 201 and first.json()["origin"] == "adopted"
    assert api.put(f"/v1/rooms/{made['id']}", headers=auth(idem=None)).status_code == 200
    taken = api.put(f"/v1/rooms/{made['id']}", headers=auth(OTHER_API_KEY, idem=None))
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "room_managed_elsewhere"
    unknown = api.put("/v1/rooms/12345678901234567", headers=auth(idem=None))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "room_not_found"


def test_an_update_sends_every_field_with_the_unchanged_ones_kept(api: TestClient, acs: FakeRooms) -> None:
    room = api.post("/v1/rooms", headers=auth(), json=CLASS).json()
    later = at(5)
    resp = api.patch(f"/v1/rooms/{room['id']}", headers=auth(idem=None), json={"valid_until": later})
    assert resp.status_code == 200, resp.text
    sent = acs.updates[0]
    assert sent == {"validFrom": room["valid_from"], "validUntil": later[:23] + "Z", "pstnDialOutEnabled": True}
    assert resp.json()["valid_until"] == later[:23] + "Z" and resp.json()["pstn_dial_out_enabled"] is True
    bad = api.patch(f"/v1/rooms/{room['id']}", headers=auth(idem=None), json={"valid_until": at(0.5)})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "window_inverted" and len(acs.updates) == 1


def test_participants_are_added_changed_removed_and_listed(api: TestClient, acs: FakeRooms) -> None:
    room = api.post("/v1/rooms", headers=auth(), json=CLASS).json()["id"]
    put = api.put(f"/v1/rooms/{room}/participants", headers=auth(idem=None), json={"participants": [
        {"communication_user": "8:acs:student", "role": "collaborator"}, {"communication_user": "8:acs:new"}]})
    assert put.status_code == 200
    assert put.json()["items"] == [{"communication_user": "8:acs:teacher", "role": "presenter"},
                                   {"communication_user": "8:acs:student", "role": "collaborator"},
                                   {"communication_user": "8:acs:new", "role": "attendee"}]
    removed = api.post(f"/v1/rooms/{room}/participants/remove", headers=auth(idem=None),
                       json={"participants": ["8:acs:teacher", "8:acs:never-there"]})
    assert [p["communication_user"] for p in removed.json()["items"]] == ["8:acs:student", "8:acs:new"]
    assert api.get(f"/v1/rooms/{room}/participants", headers=auth(idem=None)).json() == removed.json()


def test_a_deleted_room_is_gone_at_acs_and_from_callq(api: TestClient, acs: FakeRooms) -> None:
    room = api.post("/v1/rooms", headers=auth(), json=CLASS).json()["id"]
    assert api.delete(f"/v1/rooms/{room}", headers=auth(idem=None)).status_code == 204
    assert room not in acs.rooms
    assert api.get(f"/v1/rooms/{room}", headers=auth(idem=None)).status_code == 404
    assert api.get("/v1/rooms", headers=auth(idem=None)).json()["items"] == []


def test_a_room_deleted_at_acs_is_dropped_when_read(api: TestClient, acs: FakeRooms) -> None:
    room = api.post("/v1/rooms", headers=auth(), json=CLASS).json()["id"]
    del acs.rooms[room]
    resp = api.get(f"/v1/rooms/{room}", headers=auth(idem=None))
    assert resp.status_code == 404 and "no longer exists" in resp.json()["error"]["message"]
    assert api.get("/v1/rooms", headers=auth(idem=None)).json()["items"] == []


def test_rooms_are_listed_in_pages(api: TestClient) -> None:
    made = sorted(api.post("/v1/rooms", headers=auth(idem=f"k{i}"), json=CLASS).json()["id"] for i in range(5))
    seen, url = [], "/v1/rooms?limit=2"
    while url:
        page = api.get(url, headers=auth(idem=None)).json()
        seen += [i["id"] for i in page["items"]]
        url = page.get("next")
    assert seen == made
    assert api.get("/v1/rooms?limit=0", headers=auth(idem=None)).json()["error"]["code"] == "invalid_limit"
    superscript = api.get("/v1/rooms?limit=%C2%B2", headers=auth(idem=None))  # "²" passes str.isdigit()
    assert (superscript.status_code, superscript.json()["error"]["code"]) == (422, "invalid_limit")
