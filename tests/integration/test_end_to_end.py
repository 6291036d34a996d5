"""One command end to end, the real way: API → Celery → SDK → simulator → signed CloudEvent → resolved."""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from callq import demo
from tests.conftest import TEST_API_KEY, wait_until
from tests.integration.conftest import Server, ThreadServer, eventgrid_validated, with_eventgrid
from workers.acs import repeatability_id
from workers.settings import Settings


@pytest.fixture
def stack_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Event Grid wired as `callq up` wires it: the demo's automation needs the room call's CallStarted."""
    monkeypatch.setenv("CALLQ_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8")  # as `callq up`: the demo's receiver is local
    return with_eventgrid({**stack_env, "CALLQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}, monkeypatch)


# The seed doc's room-call actions, in the order the demo runs them, each with the event that resolves it
# ("-": resolved by ACS's HTTP answer, as stop recording is).
SEED_SCENARIO = [
    ("connect", "succeeded", "CallConnected"),
    ("add_participant", "succeeded", "AddParticipantSucceeded"),
    ("send_dtmf", "succeeded", "SendDtmfTonesCompleted"),
    ("start_recording", "succeeded", "RecordingStateChanged"),
    ("pause_recording", "succeeded", "RecordingStateChanged"),
    ("resume_recording", "succeeded", "RecordingStateChanged"),
    ("stop_recording", "succeeded", "-"),
    ("play", "succeeded", "PlayCompleted"),
    ("remove_participant", "succeeded", "RemoveParticipantSucceeded"),
    ("hang_up", "succeeded", "CallDisconnected"),
]


def sim_room_call(sim: Server, *, started: bool = True) -> str:
    room_id = sim.http.post("/_sim/rooms", json={"pstn_dial_out_enabled": True}).json()["room_id"]
    if started:
        resp = sim.http.post(f"/_sim/rooms/{room_id}/call", json={"participants": ["8:acs:teacher"]})
        assert resp.status_code < 300, resp.text
    return str(room_id)


def sim_log(sim: Server) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = sim.http.get("/_sim/log").json()
    return entries


def post(api: httpx.Client, path: str, body: dict[str, Any] | None = None, key: str | None = None) -> httpx.Response:
    return api.post(path, json=body or {}, headers={"Idempotency-Key": key or str(uuid.uuid4())})


def wait(api: httpx.Client, command_id: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/v1/commands/{command_id}", params={"wait": 20}).json()
    return body


def test_connect_then_hang_up_resolve_from_acs_events(simulator: ThreadServer, api: httpx.Client,
                                                      start_worker: Callable) -> None:  # type: ignore[type-arg]
    start_worker()
    room_id = sim_room_call(simulator)

    accepted = post(api, f"/v1/rooms/{room_id}/connect")
    assert accepted.status_code == 202, accepted.text
    connect = wait(api, accepted.json()["id"])
    assert connect["status"] == "succeeded", connect
    assert connect["resolved_by"]["type"] == "CallConnected"
    cc = connect["call_connection_id"]
    assert cc and connect["result"]["call_connection_id"] == cc
    assert connect["result"]["server_call_id"]

    hang = post(api, f"/v1/calls/{cc}/hang-up", {"for_everyone": True})
    assert hang.status_code == 202, hang.text
    done = wait(api, hang.json()["id"])
    assert done["status"] == "succeeded", done
    assert done["resolved_by"]["type"] == "CallDisconnected"

    # The call is over: new commands for it are refused, and its history is readable in order.
    again = post(api, f"/v1/calls/{cc}/hang-up", {"for_everyone": True})
    assert again.status_code == 409 and again.json()["error"]["code"] == "call_ended"
    listed = api.get(f"/v1/calls/{cc}/commands").json()["items"]
    assert [c["type"] for c in listed] == ["connect", "hang_up"]
    events = [e["type"].rsplit(".", 1)[-1] for e in api.get(f"/v1/calls/{cc}/events").json()["items"]]
    assert "CallConnected" in events and "CallDisconnected" in events

    # ACS executed each command exactly once, with the repeatability id derived from the command id.
    ops = [e for e in sim_log(simulator) if e["operation"] in ("connect", "terminate")]
    assert [e["operation"] for e in ops] == ["connect", "terminate"]
    assert ops[0]["operation_context"] == connect["id"]
    assert ops[0]["repeatability_id"] == repeatability_id(connect["id"])
    assert ops[1]["repeatability_id"] == repeatability_id(done["id"])


def test_connect_to_a_room_whose_call_has_not_started_fails(simulator: ThreadServer, api: httpx.Client,
                                                            start_worker: Callable) -> None:  # type: ignore[type-arg]
    start_worker()
    room_id = sim_room_call(simulator, started=False)
    connect = wait(api, post(api, f"/v1/rooms/{room_id}/connect").json()["id"])
    assert connect["status"] == "failed", connect
    assert connect["resolved_by"]["type"] == "ConnectFailed"
    assert connect["error"]["code"] == "acs_failed"


def test_unsigned_or_forged_callbacks_are_refused_and_not_stored(simulator: ThreadServer, api: httpx.Client) -> None:
    event = [{"id": "e1", "type": "Microsoft.Communication.CallConnected", "source": "x",
              "data": {"callConnectionId": "cc-forged", "operationContext": "cmd_x"}}]
    for headers in ({}, {"Authorization": "Bearer not.a.jwt"}, {"Authorization": f"Bearer {TEST_API_KEY}"}):
        resp = httpx.post(f"{api.base_url}/v1/acs/events", json=event, headers=headers)
        assert resp.status_code == 401, resp.text
        assert resp.json()["error"]["code"] == "unauthorized"
    assert api.get("/v1/calls/cc-forged/events").status_code == 404


def test_demo_runs_the_seed_scenario_and_every_command_succeeds(simulator: ThreadServer, api_server: ThreadServer,
                                                             stack_settings: Settings,
                                                             start_worker: Callable) -> None:  # type: ignore[type-arg]
    start_worker()
    wait_until(lambda: eventgrid_validated(simulator), timeout_s=30, what="the simulator's Event Grid subscription")
    out = io.StringIO()
    code = demo.run(stack_settings, api_key=TEST_API_KEY, out=out)
    text = out.getvalue()
    assert code == 0, text
    lines = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [(cols[1], cols[2], cols[3]) for cols in lines] == SEED_SCENARIO, text
    assert "10 of 10 commands succeeded" in text
    # A webhook to a receiver in the demo's process: the call's messages in order, every signature valid.
    assert re.search(r"webhooks: \d+ messages about call \S+ reached the receiver \(call.event, command.succeeded\): "
                     r"seq 1-\d+ in order yes, signatures valid yes", text), text
    # The room made through callq: its call starts in the simulator and callq joins, records and welcomes alone.
    automated = [line.split() for line in text.splitlines() if line.strip()[:2] in ("a1", "a2", "a3")]
    assert [(cols[1], cols[2]) for cols in automated] == [
        ("connect", "succeeded"), ("start_recording", "succeeded"), ("play", "succeeded")], text
    assert " succeeded (callq joined on CallStarted)" in text and "CallEnded" in text
    # It ends by downloading its class recording (announced by Event Grid) and reading its length from the WAV header:
    # the length ACS reported, to the millisecond.
    found = re.search(r"recording file: \S+ file 0 downloaded, \d+ bytes, WAV 16000 Hz x 1: (\d+\.\d{3}) s "
                      r"\(ACS: (\d+(?:\.\d+)?) s\)", text)
    assert found is not None and float(found[1]) == float(found[2]), text
