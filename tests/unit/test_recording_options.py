"""The recording options ACS offers on ``POST /v1/calls/{cc}/recordings``: validated with stable codes, stored as the
command's parameters only when given, and handed to the SDK's ``start_recording``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
from azure.communication.callautomation import AzureBlobContainerRecordingStorage
from starlette.testclient import TestClient

from api.schedule_schemas import ScheduleBody
from api.schemas import RecordingBody
from tests.unit.test_api_commands import CC, make_client, post
from workers import commands, keys
from workers.command import Command, Status
from workers.operations import OPERATIONS
from workers.settings import Settings

CONTAINER = "https://account.blob.core.windows.net/recordings"
BOB = {"communication_user": "8:acs:bob"}


@pytest.fixture
def r(server: fakeredis.FakeServer) -> fakeredis.FakeRedis:
    r = fakeredis.FakeRedis(server=server, decode_responses=True)
    r.hset(keys.call_key(CC), mapping={"client": "alice", "state": "connected", "server_call_id": "scid-1"})
    return r


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer, r: fakeredis.FakeRedis) -> Iterator[TestClient]:
    with make_client(settings, server) as c:
        yield c


@pytest.mark.parametrize(("body", "code"), [
    ({"channel_affinity": [{**BOB, "channel": 0}]}, "incompatible_recording_options"),  # mixed by default
    ({"channel": "unmixed", "channel_affinity": [{**BOB, "channel": 5}]}, "channel_out_of_range"),
    ({"channel": "unmixed", "channel_affinity": [{"channel": 1}]}, "invalid_participant"),
    ({"recording_storage": {"container_url": "http://account.blob.core.windows.net/recordings"}},
     "invalid_recording_storage"),
    ({"recording_storage": {"container_url": "https://account.blob.core.windows.net/"}}, "invalid_recording_storage"),
    ({"locator": "room"}, "validation_error"),
    ({"pause_on_start": "later"}, "validation_error"),
])
def test_bad_options_get_their_code(client: TestClient, r: fakeredis.FakeRedis, body: dict[str, Any],
                                    code: str) -> None:
    resp = post(client, f"/v1/calls/{CC}/recordings", body)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == code, resp.text
    assert r.llen("callq") == 0


def test_options_are_stored_as_given(client: TestClient, r: fakeredis.FakeRedis) -> None:
    body = {"channel": "unmixed", "pause_on_start": True, "locator": "call_connection",
            "recording_storage": {"container_url": CONTAINER},
            "channel_affinity": [{**BOB, "channel": 1}, {"phone_number": "+14255550123", "channel": 0}]}
    command = post(client, f"/v1/calls/{CC}/recordings", body).json()
    params = json.loads(r.hget(keys.command_key(command["id"]), "params") or "{}")
    assert params == {"content": "audio", "channel": "unmixed", "format": "wav", "pause_on_start": True,
                      "locator": "call_connection", "recording_storage": {"container_url": CONTAINER},
                      "channel_affinity": [{"participant": "8:acs:bob", "channel": 1},
                                           {"participant": "4:+14255550123", "channel": 0}],
                      "server_call_id": "scid-1"}


def test_a_body_without_the_new_options_keeps_its_fingerprint() -> None:
    # A request accepted before the options existed is still recognised when it is replayed.
    before = {"content": "audio", "channel": "mixed", "format": "wav"}
    assert RecordingBody.model_validate(before).params() == before
    route = f"POST /v1/calls/{CC}/recordings"
    assert commands.fingerprint(route, RecordingBody.model_validate({}).params()) == commands.fingerprint(route, before)
    schedule = {"room_id": "r", "start_at": "2030-01-01T10:00:00Z", "duration": 60}
    assert set(ScheduleBody.model_validate(schedule).compared()) == {
        "content", "channel", "format", "room_id", "start_at", "cron", "timezone", "every", "duration",
        "pause_windows"}


def test_a_schedule_cannot_start_paused_but_takes_the_other_options() -> None:
    schedule = {"room_id": "r", "start_at": "2030-01-01T10:00:00Z", "duration": 60}
    with pytest.raises(ValueError, match="incompatible_recording_options|cannot start paused"):
        ScheduleBody.model_validate({**schedule, "pause_on_start": True})
    body = ScheduleBody.model_validate({**schedule, "recording_storage": {"container_url": CONTAINER}})
    assert body.recording() == {"content": "audio", "channel": "mixed", "format": "wav",
                                "recording_storage": {"container_url": CONTAINER}}


class _Acs:
    """Records what ``start_recording`` was asked."""

    def __init__(self) -> None:
        self.asked: dict[str, Any] = {}

    def start_recording(self, **kwargs: Any) -> Any:
        self.asked = kwargs
        return SimpleNamespace(recording_id="rec-9", recording_state="inactive")


def _send(params: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    cmd = Command(id="c1", type="start_recording", status=Status.RUNNING, call_connection_id=CC,
                  params={"content": "audio", "channel": "unmixed", "format": "wav", "server_call_id": "scid-1",
                          **params})
    acs = _Acs()
    sent = OPERATIONS["start_recording"].send(acs, cmd, Settings())  # type: ignore[arg-type]
    return sent, acs.asked


def test_start_recording_hands_each_option_to_the_sdk() -> None:
    sent, asked = _send({"recording_storage": {"container_url": CONTAINER},
                         "channel_affinity": [{"participant": "4:+14255550123", "channel": 2}]})
    assert asked["server_call_id"] == "scid-1" and "call_connection_id" not in asked
    assert isinstance(asked["recording_storage"], AzureBlobContainerRecordingStorage)
    assert asked["recording_storage"].container_url == CONTAINER
    [affinity] = asked["channel_affinity"]
    assert (affinity.target_participant.raw_id, affinity.channel) == ("4:+14255550123", 2)
    assert asked["pause_on_start"] is None
    assert not sent.resolved and sent.recording_id == "rec-9"  # resolved by RecordingStateChanged "active"


def test_by_call_connection_and_paused_on_start_the_answer_is_the_outcome() -> None:
    sent, asked = _send({"locator": "call_connection", "pause_on_start": True})
    assert asked["call_connection_id"] == CC and "server_call_id" not in asked
    assert asked["pause_on_start"] is True and asked["recording_storage"] is None and asked["channel_affinity"] is None
    assert sent.resolved and sent.result == {"recording_id": "rec-9", "state": "inactive"}
