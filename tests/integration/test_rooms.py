"""Room calls from start to end on the real stack: the Rooms API through the unmodified SDK against the simulator,
Event Grid's deliveries (Entra tokens the simulator signs, verified against its OpenID document), automations that
join, record and welcome on their own exactly once, and calls that end.

Real Redis, the simulator and the API (uvicorn threads), a real Celery worker process.
"""

from __future__ import annotations

import asyncio
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
    # Recording files are announced (RecordingFileStatusUpdated) a moment after a recording stops, not minutes.
    monkeypatch.setenv("CALLQ_SIM_RECORDING_FILE_DELAY_S", "0.2")
    return with_eventgrid({**stack_env, "CALLQ_SIM_RECORDING_FILE_DELAY_S": "0.2"}, monkeypatch)


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
    # A room made elsewhere (here: straight at the simulator) is adopted by id.
    elsewhere = simulator.http.post("/_sim/rooms", json={"participants": [TEACHER]}).json()["room_id"]
    adopted = api.put(f"/v1/rooms/{elsewhere}")
    assert adopted.status_code == 201 and adopted.json()["origin"] == "adopted", adopted.text
    assert sorted(r["id"] for r in api.get("/v1/rooms").json()["items"]) == sorted([room_id, elsewhere])
    assert api.put("/v1/rooms/12345678901234567").json()["error"]["code"] == "room_not_found"
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
    # The recording stopped with the call: its file's announcement names only the call, and finds its room.
    wait_until(lambda: "RecordingFileStatusUpdated" in _timeline(api, room_id), timeout_s=30,
               what="RecordingFileStatusUpdated on the room's timeline")
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


QUERY_TOKEN = "integration-query-token-0123456789"


def _call_started(room_id: str, server_call_id: str, event_id: str) -> list[dict[str, Any]]:
    return [{"id": event_id, "topic": "/subscriptions/s/resourcegroups/g/providers/microsoft.communication/"
             "communicationservices/acs", "subject": f"call/{server_call_id}/startedBy/{TEACHER}",
             "eventType": "Microsoft.Communication.CallStarted", "dataVersion": "1.0", "metadataVersion": "1",
             "eventTime": "2026-12-03T10:00:00.0000000Z",
             "data": {"startedBy": {"communicationIdentifier": {"rawId": TEACHER}, "role": "Presenter"},
                      "serverCallId": server_call_id, "room": {"id": room_id}, "correlationId": "corr",
                      "isTwoParty": False, "isRoomsCall": True}}]


def test_one_call_started_delivered_to_two_api_processes_at_once_runs_once(
        stack_env: dict[str, str], simulator: ThreadServer, api_server: ThreadServer, api: httpx.Client,
        tmp_path: Any, start_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Event Grid may deliver the same event twice, to two API processes behind a load balancer, at the same time."""
    from tests.conftest import free_port
    from tests.integration.conftest import ProcessServer

    second_env = {**stack_env, "CALLQ_API_PORT": str(free_port()), "CALLQ_EVENTGRID_QUERY_TOKENS": QUERY_TOKEN}
    second = ProcessServer("api.app:create_app", second_env, int(second_env["CALLQ_API_PORT"]),
                           tmp_path / "api2.log").start()
    third_env = {**second_env, "CALLQ_API_PORT": str(free_port())}
    third = ProcessServer("api.app:create_app", third_env, int(third_env["CALLQ_API_PORT"]),
                          tmp_path / "api3.log").start()
    try:
        start_worker("w1")
        # The simulator's own subscription is removed: this test delivers the event itself, twice.
        simulator.http.delete("/_sim/eventgrid/subscriptions/callq").raise_for_status()
        room_id = _room(api)
        started = simulator.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER]}).json()
        body = _call_started(room_id, started["server_call_id"], "same-event-id")

        async def both() -> list[httpx.Response]:
            async with httpx.AsyncClient(timeout=30) as c:
                return list(await asyncio.gather(*(
                    c.post(f"{server.url}/v1/eventgrid/events?token={QUERY_TOKEN}", json=body)
                    for server in (second, third))))

        answers = asyncio.run(both())
        assert [a.status_code for a in answers] == [200, 200]
        assert sorted(a.json()["stored"] for a in answers) == [0, 1]
        run = _ended_run(api, room_id)
        assert run["state"] == "succeeded" and len(_runs(api, room_id)) == 1
        assert [c["type"] for c in api.get(f"/v1/calls/{run['call_connection_id']}/commands").json()["items"]] == [
            "connect", "start_recording", "play"]
    finally:
        second.stop()
        third.stop()


def test_a_call_whose_disconnect_was_lost_is_closed_by_the_stale_call_sweep(
        simulator: ThreadServer, api: httpx.Client, start_worker: Any, redis_url: str) -> None:
    start_worker("w1", extra_env={"CALLQ_STALE_CALL_SECONDS": "1"})
    simulator.http.delete("/_sim/eventgrid/subscriptions/callq").raise_for_status()  # no CallEnded either
    room_id = simulator.http.post("/_sim/rooms", json={}).json()["room_id"]
    simulator.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER]}).raise_for_status()
    connect = _post(api, f"/v1/rooms/{room_id}/connect").json()
    cc = api.get(f"/v1/commands/{connect['id']}", params={"wait": 30}).json()["call_connection_id"]
    play = _post(api, f"/v1/calls/{cc}/play", {"text": "Hold music.", "loop": True}).json()
    wait_until(lambda: api.get(f"/v1/commands/{play['id']}").json()["status"] == "waiting", timeout_s=30,
               what="the play to be running at ACS")
    simulator.http.put("/_sim/faults", json={"callback_target_down": True}).raise_for_status()
    simulator.http.delete(f"/_sim/rooms/{room_id}/call").raise_for_status()  # CallDisconnected cannot reach callq
    done = api.get(f"/v1/commands/{play['id']}", params={"wait": 60}).json()
    assert done["status"] == "failed" and done["error"]["code"] == "call_ended", done
    assert done["resolved_by"]["id"] == f"callq-stale-{cc}"
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    assert r.hget(keys.call_key(cc), "state") == "disconnected" and r.zscore(keys.LIVE_CALLS, cc) is None


def test_the_clients_default_automation_serves_a_room_without_its_own(stack: httpx.Client,
                                                                        simulator: ThreadServer) -> None:
    api = stack
    default = {"on_call_started": [{"type": "connect"}, {"type": "play", "body": {"text": "Hello from the default."}}]}
    assert api.put("/v1/automation", json=default).json()["scope"] == "client"
    room_id = _room(api, automation=None)
    simulator.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": [TEACHER]}).raise_for_status()
    run = _ended_run(api, room_id)
    assert run["state"] == "succeeded" and run["automation"] == "client"
    assert [s["type"] for s in run["steps"]] == ["connect", "play"]
    assert api.delete("/v1/automation").status_code == 204
    assert api.get("/v1/automation").json()["error"]["code"] == "automation_not_found"
