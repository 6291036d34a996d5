"""Room calls from start to end on the real stack: the Rooms API through the unmodified SDK against the simulator,
Event Grid's deliveries (Entra tokens the simulator signs, verified against its OpenID document), automations that
join, record and welcome on their own exactly once, and calls that end.

Real Redis, the simulator and the API (uvicorn threads), a real Celery worker process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import wait_until
from tests.integration.conftest import ThreadServer, eventgrid_validated, with_eventgrid
from workers import keys

pytestmark = pytest.mark.integration

TEACHER, STUDENT = "8:acs:r_teacher", "8:acs:r_student"
WELCOME = {"on_call_started": [
    {"type": "connect"},
    {"type": "start_recording", "body": {"content": "audio", "channel": "mixed", "format": "wav"}},
    {"type": "play", "body": {"text": "Welcome to the class."}}]}


@pytest.fixture
def stack_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    return with_eventgrid(stack_env, monkeypatch)


@pytest.fixture
def stack(simulator: ThreadServer, api_server: ThreadServer, api: httpx.Client,
          start_worker: Any) -> Iterator[httpx.Client]:
    start_worker("w1")
    # The subscription is validated (the handshake answered by callq) before Event Grid delivers anything.
    wait_until(lambda: eventgrid_validated(simulator), timeout_s=30,
               what="the simulator's Event Grid subscription to be validated")
    yield api


def _post(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return api.post(path, json=body, headers={"Idempotency-Key": str(uuid.uuid4())})


def _room(api: httpx.Client, automation: dict[str, Any] | None = WELCOME) -> str:
    made = _post(api, "/v1/rooms", {"pstn_dial_out_enabled": True, "participants": [
        {"communication_user": TEACHER, "role": "presenter"}, {"communication_user": STUDENT}]})
    assert made.status_code == 201, made.text
    room_id = str(made.json()["id"])
    if automation is not None:
        put = api.put(f"/v1/rooms/{room_id}/automation", json=automation)
        assert put.status_code == 200, put.text
    return room_id


def _runs(api: httpx.Client, room_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/v1/rooms/{room_id}/automation/runs").json()["items"])


def _ended_run(api: httpx.Client, room_id: str) -> dict[str, Any]:
    wait_until(lambda: any(r["state"] in ("succeeded", "failed", "ended") for r in _runs(api, room_id)),
               timeout_s=45, what=f"room {room_id}'s automation run to end")
    (run,) = _runs(api, room_id)
    return run


def _timeline(api: httpx.Client, room_id: str) -> list[str]:
    return [e["type"].rsplit(".", 1)[-1] for e in api.get(f"/v1/rooms/{room_id}/events").json()["items"]]


def test_rooms_are_made_read_changed_and_deleted_through_the_rooms_sdk(stack: httpx.Client,
                                                                      simulator: ThreadServer) -> None:
    api = stack
    room_id = _room(api, automation=None)
    at_acs = simulator.http.get(f"/_sim/rooms/{room_id}").json()
    assert at_acs["pstn_dial_out_enabled"] is True
    got = api.get(f"/v1/rooms/{room_id}").json()
    assert got["id"] == room_id and got["origin"] == "created" and got["valid_until"]
    changed = api.patch(f"/v1/rooms/{room_id}", json={"pstn_dial_out_enabled": False})
    assert changed.status_code == 200 and changed.json()["pstn_dial_out_enabled"] is False
    assert simulator.http.get(f"/_sim/rooms/{room_id}").json()["pstn_dial_out_enabled"] is False
    people = api.put(f"/v1/rooms/{room_id}/participants", json={"participants": [
        {"communication_user": STUDENT, "role": "collaborator"}, {"communication_user": "8:acs:r_parent"}]})
    assert people.status_code == 200, people.text
    assert {p["communication_user"]: p["role"] for p in people.json()["items"]} == {
        TEACHER: "presenter", STUDENT: "collaborator", "8:acs:r_parent": "attendee"}
    removed = api.post(f"/v1/rooms/{room_id}/participants/remove", json={"participants": ["8:acs:r_parent"]})
    assert [p["communication_user"] for p in removed.json()["items"]] == [TEACHER, STUDENT]
    assert [r["id"] for r in api.get("/v1/rooms").json()["items"]] == [room_id]
    assert api.delete(f"/v1/rooms/{room_id}").status_code == 204
    assert simulator.http.get(f"/_sim/rooms/{room_id}").status_code == 404
    assert api.get(f"/v1/rooms/{room_id}").status_code == 404


def test_a_retried_create_makes_one_room_at_acs(stack: httpx.Client, simulator: ThreadServer) -> None:
    api, key = stack, str(uuid.uuid4())
    body = {"participants": [{"communication_user": TEACHER, "role": "presenter"}]}
    first = api.post("/v1/rooms", json=body, headers={"Idempotency-Key": key})
    again = api.post("/v1/rooms", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 201 and first.json()["id"] == again.json()["id"]
    creates = [e for e in simulator.http.get("/_sim/log").json()
               if e.get("method") == "POST" and str(e.get("path", "")).rstrip("/").endswith("/rooms")]
    assert len(creates) == 1, creates


def test_a_room_call_that_starts_is_joined_recorded_and_welcomed_once(stack: httpx.Client, simulator: ThreadServer,
                                                                     redis_url: str) -> None:
    api = stack
    room_id = _room(api)
    started = simulator.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER, STUDENT]})
    assert started.status_code == 201, started.text
    run = _ended_run(api, room_id)
    assert run["state"] == "succeeded", run
    assert [(s["type"], s["status"]) for s in run["steps"]] == [
        ("connect", "succeeded"), ("start_recording", "succeeded"), ("play", "succeeded")]
    cc = run["call_connection_id"]
    assert run["server_call_id"] == started.json()["server_call_id"]
    commands = api.get(f"/v1/calls/{cc}/commands").json()["items"]
    assert [c["type"] for c in commands] == ["connect", "start_recording", "play"]
    room = api.get(f"/v1/rooms/{room_id}").json()
    assert room["call"]["state"] == "active" and room["call"]["call_connection_id"] == cc
    timeline = _timeline(api, room_id)  # in arrival order: Event Grid promises none
    assert timeline.count("CallStarted") == 1 and timeline.count("CallParticipantAdded") == 2
    # The room call's events reach the call's own timeline too, once callq is connected.
    assert simulator.http.delete(f"/_sim/rooms/{room_id}/call").status_code == 204
    wait_until(lambda: "CallEnded" in _timeline(api, room_id), timeout_s=30, what="CallEnded on the room's timeline")
    assert api.get(f"/v1/rooms/{room_id}").json()["call"]["state"] == "ended"
    wait_until(lambda: api.get(f"/v1/calls/{cc}").status_code in (404, 409) or
               redis.Redis.from_url(redis_url, decode_responses=True).hget(keys.call_key(cc), "state") ==
               "disconnected", timeout_s=30, what="callq's call to end")
    assert len(_runs(api, room_id)) == 1


def test_duplicate_deliveries_start_one_run(stack: httpx.Client, simulator: ThreadServer) -> None:
    api = stack
    room_id = _room(api)
    faults = simulator.http.put("/_sim/faults", json={"eventgrid_duplicate_rate": 1.0})
    assert faults.status_code in (200, 204), faults.text
    simulator.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER]}).raise_for_status()
    run = _ended_run(api, room_id)
    assert run["state"] == "succeeded"
    delivered = [d for d in simulator.http.get("/_sim/eventgrid/deliveries", params={"kind": "notification"}).json()
                 if "Microsoft.Communication.CallStarted" in d["types"] and d["status"] == 200]
    assert len(delivered) >= 2, f"the fault delivered CallStarted more than once: {delivered}"
    assert len(_runs(api, room_id)) == 1
    assert [c["type"] for c in api.get(f"/v1/calls/{run['call_connection_id']}/commands").json()["items"]] == [
        "connect", "start_recording", "play"]


def test_a_call_started_before_the_automation_is_set_runs_nothing(stack: httpx.Client,
                                                                  simulator: ThreadServer) -> None:
    api = stack
    room_id = _room(api, automation=None)
    simulator.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER]}).raise_for_status()
    wait_until(lambda: "CallStarted" in _timeline(api, room_id), timeout_s=30, what="CallStarted recorded")
    assert api.put(f"/v1/rooms/{room_id}/automation", json=WELCOME).status_code == 200
    simulator.http.post(f"/_sim/rooms/{room_id}/call/participants",
                        json={"participants": [STUDENT]}).raise_for_status()
    wait_until(lambda: "CallParticipantAdded" in _timeline(api, room_id)[2:], timeout_s=30,
               what="the later join recorded")
    assert _runs(api, room_id) == []


def test_a_call_that_ends_before_its_steps_finish_ends_the_run(stack: httpx.Client, simulator: ThreadServer) -> None:
    api = stack
    slow = {"on_call_started": [{"type": "connect"},
                                {"type": "play", "body": {"text": "A long welcome.", "loop": True}},
                                {"type": "play", "body": {"text": "Never heard."}}]}
    room_id = _room(api, automation=slow)
    simulator.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER]}).raise_for_status()
    wait_until(lambda: any(r["state"] == "running" for r in _runs(api, room_id)), timeout_s=30,
               what="the run to queue its steps")
    simulator.http.delete(f"/_sim/rooms/{room_id}/call").raise_for_status()
    run = _ended_run(api, room_id)
    assert run["state"] == "ended" and run["error"]["code"] == "call_ended"
    assert run["steps"][-1]["status"] == "failed"
