"""callq.client and the CLI built on it against the real stack: simulator, API (uvicorn threads), a Celery worker."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from callq import cli
from callq.client import Client
from tests.conftest import TEST_API_KEY
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import sim_room_call

pytestmark = pytest.mark.integration


@pytest.fixture
def callq(simulator: ThreadServer, api_server: ThreadServer, start_worker: Callable[..., Any]) -> Iterator[Client]:
    start_worker()
    with Client(api_server.url, TEST_API_KEY) as client:
        yield client


def test_client_connects_hangs_up_and_reads_the_calls_timeline(simulator: ThreadServer, callq: Client) -> None:
    connected = callq.wait(callq.connect(sim_room_call(simulator))["id"], timeout_s=30)
    assert connected["status"] == "succeeded", connected
    cc = connected["call_connection_id"]
    hung_up = callq.wait(callq.hang_up(cc)["id"], timeout_s=30)
    assert hung_up["status"] == "succeeded" and hung_up["resolved_by"]["type"] == "CallDisconnected", hung_up

    assert [c["type"] for c in callq.call_commands(cc)["items"]] == ["connect", "hang_up"]
    timeline = [e["type"].rsplit(".", 1)[-1] for e in callq.call_events(cc)]
    assert timeline[0] == "CallConnected" and timeline[-1] == "CallDisconnected"
    # The stream replays the timeline so far and ends on CallDisconnected, so this returns.
    assert [e["type"].rsplit(".", 1)[-1] for e in callq.stream_events(cc)] == timeline


def test_cli_connect_waits_then_tails_the_call(simulator: ThreadServer, callq: Client,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # No --api-url / --api-key: the CLI finds both in the settings (CALLQ_API_PORT, CALLQ_API_KEYS), as `callq demo`.
    assert cli.main(["connect", sim_room_call(simulator), "--wait", "--timeout", "30"]) == 0
    command = json.loads(capsys.readouterr().out)
    assert command["status"] == "succeeded" and command["type"] == "connect", command
    cc = command["call_connection_id"]
    assert callq.wait(callq.hang_up(cc)["id"], timeout_s=30)["status"] == "succeeded"

    assert cli.main(["tail", cc]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "CallConnected" in lines[0] and "CallDisconnected" in lines[-1], lines


def test_cli_reports_api_errors_without_a_traceback(callq: Client, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["wait", "cmd_nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("callq: the API answered HTTP 404 command_not_found") and "Traceback" not in err


def test_cli_creates_lists_and_shows_rooms(callq: Client, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["rooms", "create", "--participant", "8:acs:c_teacher:presenter", "--participant",
                     "8:acs:c_student", "--dial-out"]) == 0
    room = json.loads(capsys.readouterr().out)
    assert room["pstn_dial_out_enabled"] is True
    assert {p["communication_user"]: p["role"] for p in callq.room_participants(room["id"])["items"]} == {
        "8:acs:c_teacher": "presenter", "8:acs:c_student": "attendee"}

    assert cli.main(["rooms", "list"]) == 0
    assert capsys.readouterr().out.startswith(f"{room['id']}  until {room['valid_until']}  dial-out on")
    assert cli.main(["rooms", "get", room["id"]]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == room["id"]
