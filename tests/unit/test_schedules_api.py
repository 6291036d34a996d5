"""The recording-schedule routes on fakeredis: validation codes, idempotency, ownership, paging, cancel."""

from __future__ import annotations

import json
import time
from typing import Any

import fakeredis
import pytest
from starlette.testclient import TestClient

from tests.conftest import OTHER_API_KEY, TEST_API_KEY
from workers import keys
from workers import schedules as s
from workers.recurrence import iso


def auth(key: str = TEST_API_KEY, idem: str | None = "key-1") -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **({"Idempotency-Key": idem} if idem else {})}


def later(seconds: int = 3600) -> str:
    return iso(int(time.time()) + seconds)


WEEKLY = {"room_id": "room-1", "cron": "0 10 * * 2", "timezone": "Europe/Paris", "duration": "PT45M",
          "pause_windows": [{"offset": "PT10M", "duration": "PT5M"}]}


def tasks(r: fakeredis.FakeRedis) -> list[str]:
    return [json.loads(m)["headers"]["task"] for m in reversed(r.lrange(keys.queue_key("callq.steps"), 0, -1))]


def test_a_weekly_class_is_created_and_its_beat_entry_booked(client: TestClient, r: fakeredis.FakeRedis) -> None:
    resp = client.post("/v1/recording-schedules", headers=auth(), json=WEEKLY)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["id"].startswith("rs_") and resp.headers["Location"] == f"/v1/recording-schedules/{body['id']}"
    assert body["kind"] == "cron" and body["status"] == "active" and body["duration"] == "PT45M"
    assert body["pause_windows"] == [{"offset": "PT10M", "duration": "PT5M"}]
    assert body["recording"] == {"content": "audio", "channel": "mixed", "format": "wav"}
    assert body["next_run_at"].endswith(("T09:00:00Z", "T08:00:00Z"))  # 10:00 in Paris, winter or summer
    assert tasks(r) == ["callq.schedule_book"]
    assert client.get(body["links"]["self"], headers=auth()).json() == body


def test_same_key_replays_and_another_body_is_422(client: TestClient, r: fakeredis.FakeRedis) -> None:
    first = client.post("/v1/recording-schedules", headers=auth(), json=WEEKLY)
    again = client.post("/v1/recording-schedules", headers=auth(), json=WEEKLY)
    assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    other = client.post("/v1/recording-schedules", headers=auth(), json={**WEEKLY, "duration": "PT30M"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    command = client.post("/v1/rooms/room-1/connect", headers=auth())  # the key namespace is shared
    assert command.status_code == 422 and command.json()["error"]["code"] == "idempotency_key_reused"
    assert tasks(r) == ["callq.schedule_book"]


@pytest.mark.parametrize(("body", "code"), [
    ({"room_id": "r", "start_at": "2020-01-01T10:00:00Z", "duration": 60}, "start_in_past"),
    ({"room_id": "r", "start_at": "tomorrow", "duration": 60}, "invalid_start_at"),
    ({"room_id": "r", "start_at": "2030-01-01T10:00:00", "duration": 60}, "invalid_start_at"),
    ({"room_id": "r", "cron": "0 10 * * 2", "timezone": "Europe/Atlantis", "duration": 60}, "unknown_timezone"),
    ({"room_id": "r", "cron": "0 25 * * 2", "timezone": "UTC", "duration": 60}, "invalid_cron"),
    ({"room_id": "r", "cron": "0 10 * *", "timezone": "UTC", "duration": 60}, "invalid_cron"),
    ({"room_id": "r", "cron": "0 10 * * 2", "duration": 60}, "timezone_required"),
    ({"room_id": "r", "duration": 60}, "invalid_schedule"),
    ({"room_id": "r", "cron": "0 10 * * 2", "timezone": "UTC", "every": "PT5S", "duration": 1}, "invalid_schedule"),
    ({"room_id": "r", "every": "PT5S", "duration": "P1M"}, "invalid_duration"),
    ({"room_id": "r", "every": "PT5S", "duration": 0}, "invalid_duration"),
    ({"room_id": "r", "every": 251605984164, "duration": 10}, "invalid_duration"),  # not a 500 past year 9999
    ({"room_id": "r", "every": "PT1H", "duration": 60, "pause_on_start": True}, "incompatible_recording_options"),
    ({"room_id": "r", "every": "PT5S", "duration": "PT5S"}, "occurrences_overlap"),
    ({"room_id": "r", "cron": "*/10 * * * *", "timezone": "UTC", "duration": "PT15M"}, "occurrences_overlap"),
    ({"room_id": "r", "every": "PT1H", "duration": "PT10M",
      "pause_windows": [{"offset": "PT5M", "duration": "PT6M"}]}, "invalid_pause_windows"),
    ({"room_id": "r", "every": "PT1H", "duration": "PT10M",
      "pause_windows": [{"offset": "PT2M", "duration": "PT2M"}, {"offset": "PT3M", "duration": "PT1M"}]},
     "invalid_pause_windows"),
    ({"room_id": "r", "every": "PT1H", "duration": 60, "content": "audioVideo", "format": "wav"},
     "incompatible_recording_options"),
    ({"room_id": "r", "every": "PT1H", "duration": 60, "colour": "blue"}, "validation_error"),
])
def test_bad_schedules_are_422_with_a_stable_code(client: TestClient, r: fakeredis.FakeRedis, body: dict[str, Any],
                                                  code: str) -> None:
    resp = client.post("/v1/recording-schedules", headers=auth(), json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json()["error"]["code"] == code
    assert tasks(r) == []


def test_the_envelope_rules_are_the_command_routes_ones(client: TestClient) -> None:
    assert client.post("/v1/recording-schedules", json=WEEKLY).status_code == 401
    missing = client.post("/v1/recording-schedules", headers=auth(idem=None), json=WEEKLY)
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "idempotency_key_missing"
    raw = client.post("/v1/recording-schedules", headers={**auth(), "Content-Type": "application/json"}, content="{")
    assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"


def test_another_clients_schedule_is_404(client: TestClient) -> None:
    sid = client.post("/v1/recording-schedules", headers=auth(), json=WEEKLY).json()["id"]
    for method, path in (("GET", f"/v1/recording-schedules/{sid}"), ("GET", f"/v1/recording-schedules/{sid}/runs"),
                         ("DELETE", f"/v1/recording-schedules/{sid}")):
        resp = client.request(method, path, headers=auth(OTHER_API_KEY, "bob-key"))
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "schedule_not_found"
    assert client.get("/v1/recording-schedules", headers=auth(OTHER_API_KEY)).json() == {"items": []}


def test_the_list_pages_oldest_first(client: TestClient) -> None:
    ids = [client.post("/v1/recording-schedules", headers=auth(idem=f"k{i}"),
                       json={"room_id": f"room-{i}", "start_at": later(), "duration": 60}).json()["id"]
           for i in range(5)]
    first = client.get("/v1/recording-schedules?limit=2", headers=auth()).json()
    assert [i["id"] for i in first["items"]] == ids[:2]
    second = client.get(first["next"], headers=auth()).json()
    third = client.get(second["next"], headers=auth()).json()
    assert [i["id"] for i in second["items"] + third["items"]] == ids[2:] and "next" not in third
    assert client.get("/v1/recording-schedules?limit=0", headers=auth()).json()["error"]["code"] == "invalid_limit"
    superscript = client.get("/v1/recording-schedules?limit=%C2%B2", headers=auth())  # "²" passes str.isdigit()
    assert (superscript.status_code, superscript.json()["error"]["code"]) == (422, "invalid_limit")
    after = client.get(f"/v1/recording-schedules/{ids[0]}/runs?after=%C2%B2", headers=auth())
    assert (after.status_code, after.json()["error"]["code"]) == (422, "invalid_after")


def test_delete_cancels_once_and_enqueues_the_cancel(client: TestClient, r: fakeredis.FakeRedis) -> None:
    sid = client.post("/v1/recording-schedules", headers=auth(), json=WEEKLY).json()["id"]
    deleted = client.delete(f"/v1/recording-schedules/{sid}", headers=auth(idem="del-1"))
    assert deleted.status_code == 200
    assert deleted.json()["status"] == "cancelled" and deleted.json()["next_run_at"] is None
    again = client.delete(f"/v1/recording-schedules/{sid}", headers=auth(idem="del-1"))
    assert again.headers["Idempotent-Replayed"] == "true" and again.json() == deleted.json()
    assert client.get(f"/v1/recording-schedules/{sid}", headers=auth()).json()["status"] == "cancelled"
    assert not r.sismember(s.ACTIVE_SCHEDULES, sid)
    assert tasks(r) == ["callq.schedule_book", "callq.schedule_cancel"]


def test_runs_show_each_occurrence_with_its_commands(client: TestClient, r: fakeredis.FakeRedis) -> None:
    sid = client.post("/v1/recording-schedules", headers=auth(), json=WEEKLY).json()["id"]
    for planned in (1_800_000_000, 1_800_604_800):
        r.hset(s.run_key(sid, planned), mapping={"planned": planned, "state": "completed", "recording_id": "rec",
                                                 "cmd:start": f"cmd_{planned}"})
        r.zadd(s.runs_key(sid), {str(planned): planned})
        r.rpush(s.run_commands_key(sid, planned), f"cmd_{planned}")
        r.hset(keys.command_key(f"cmd_{planned}"), mapping={"id": f"cmd_{planned}", "type": "start_recording",
                                                            "status": "succeeded"})
    page = client.get(f"/v1/recording-schedules/{sid}/runs?limit=1", headers=auth()).json()
    [run] = page["items"]
    assert run["planned_at"] == "2027-01-15T08:00:00Z" and run["state"] == "completed"
    assert run["commands"] == [{"id": "cmd_1800000000", "step": "start", "type": "start_recording",
                                "status": "succeeded", "links": {"self": "/v1/commands/cmd_1800000000"}}]
    rest = client.get(page["next"], headers=auth()).json()
    assert [x["planned_at"] for x in rest["items"]] == ["2027-01-22T08:00:00Z"] and "next" not in rest
