"""Recording files on the real stack: a recording with a pause, its RecordingFileStatusUpdated through the simulator's
Event Grid, its files listed, downloaded whole and by Range (a WAV of the recorded time, the pause left out), its
metadata, and their deletion at ACS; a recording that starts paused; a scheduled run's link to its files; MP3 and MP4
files; recording events that name the recorder's connection, not callq's.

Real Redis, the simulator and the API (uvicorn threads), a real Celery worker (and beat) process.
"""

from __future__ import annotations

import io
import uuid
import wave
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from callq.client import CallqAPIError, Client
from tests import media
from tests.conftest import OTHER_API_KEY, TEST_API_KEY, wait_until
from tests.integration.conftest import ThreadServer, eventgrid_validated, with_eventgrid
from tests.integration.test_end_to_end import sim_log, sim_room_call
from tests.integration.test_schedules import SCHED_ENV, TERMINAL, create, runs_in, soon, start_beat

pytestmark = pytest.mark.integration
__all__ = ["start_beat"]  # a fixture this module's tests use

PAUSED_MS = 300  # the simulator holds the resume this long (its latency fault): the pause lasts at least that
RECORD = {"content": "audio", "channel": "mixed", "format": "wav"}


@pytest.fixture
def stack_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    # Files are announced a moment after a recording stops, not minutes; a second client checks isolation.
    extra = {"CALLQ_SIM_RECORDING_FILE_DELAY_S": "0.2",
             "CALLQ_API_KEYS": f"alice:{TEST_API_KEY},bob:{OTHER_API_KEY}"}
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return with_eventgrid({**stack_env, **extra}, monkeypatch)


@pytest.fixture
def stack(simulator: ThreadServer, api_server: ThreadServer, api: httpx.Client,
          start_worker: Callable[..., Any]) -> Iterator[httpx.Client]:
    start_worker("w1")
    wait_until(lambda: eventgrid_validated(simulator), timeout_s=30,
               what="the simulator's Event Grid subscription to be validated")
    yield api


def _done(api: httpx.Client, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    accepted = api.post(path, json=body or {}, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert accepted.status_code == 202, accepted.text
    done: dict[str, Any] = api.get(f"/v1/commands/{accepted.json()['id']}", params={"wait": 30}).json()
    assert done["status"] == "succeeded", done
    return done


def _connected(api: httpx.Client, simulator: ThreadServer) -> str:
    return str(_done(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")["call_connection_id"])


def _files(api: httpx.Client, rid: str) -> list[dict[str, Any]]:
    found = wait_until(lambda: api.get(f"/v1/recordings/{rid}/files").json()["items"], timeout_s=30,
                       what=f"recording {rid}'s files to be announced")
    return list(found)


def _recorded(api: httpx.Client, simulator: ThreadServer, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A recording of a new call, started with ``body`` and stopped: its id and its one file."""
    cc = _connected(api, simulator)
    rid = str(_done(api, f"/v1/calls/{cc}/recordings", body)["recording_id"])
    _done(api, f"/v1/recordings/{rid}/stop")
    [listed] = _files(api, rid)
    return rid, listed


def _wav(body: bytes) -> wave.Wave_read:
    return wave.open(io.BytesIO(body))


def _took_effect(simulator: ThreadServer) -> dict[str, float]:
    """When each recording operation took effect at the simulator (its own log)."""
    return {e["operation"]: e["t"] for e in sim_log(simulator) if "Recording" in e["operation"]}


def test_a_paused_recording_is_fetched_as_a_wav_of_its_recorded_time(stack: httpx.Client,
                                                                     simulator: ThreadServer) -> None:
    api = stack
    cc = _connected(api, simulator)
    rid = _done(api, f"/v1/calls/{cc}/recordings", RECORD)["recording_id"]
    assert api.get(f"/v1/recordings/{rid}").json()["files"] == []  # nothing announced while it records
    _done(api, f"/v1/recordings/{rid}/pause")
    simulator.http.put("/_sim/faults", json={"latency_ms": PAUSED_MS}).raise_for_status()
    _done(api, f"/v1/recordings/{rid}/resume")
    simulator.http.delete("/_sim/faults").raise_for_status()
    _done(api, f"/v1/recordings/{rid}/stop")

    [listed] = _files(api, rid)
    recording = api.get(f"/v1/recordings/{rid}").json()
    assert recording["state"] == "ended" and recording["call_connection_id"] == cc
    assert recording["session_end_reason"] == "RecordingStopped" and recording["files"] == [listed]
    assert (listed["index"], listed["content_type"], listed["end_reason"]) == (0, "audio/wav", "SessionEnded")
    assert listed["duration_s"] == recording["duration_s"] and listed["deleted_at"] is None

    whole = api.get(listed["links"]["content"])
    assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav", whole.text
    assert int(whole.headers["content-length"]) == len(whole.content)
    audio = _wav(whole.content)
    seconds = audio.getnframes() / audio.getframerate()
    assert (audio.getnchannels(), audio.getsampwidth()) == (1, 2)
    assert seconds == listed["duration_s"]  # to the frame: what ACS said it recorded
    # The recorded time is the active spans only, as the simulator's own log of the four operations has them.
    at = _took_effect(simulator)
    active_s = (at["pauseRecording"] - at["startRecording"]) + (at["stopRecording"] - at["resumeRecording"])
    assert seconds == pytest.approx(active_s, abs=0.02)
    assert at["resumeRecording"] - at["pauseRecording"] >= PAUSED_MS / 1000
    assert seconds <= at["stopRecording"] - at["startRecording"] - PAUSED_MS / 1000

    end = 44 + (len(whole.content) - 44) // 2  # inside the audio, however short the machine made the recording
    part = api.get(listed["links"]["content"], headers={"Range": f"bytes=44-{end}"})
    assert part.status_code == 206 and part.content == whole.content[44:end + 1]
    assert part.headers["content-range"] == f"bytes 44-{end}/{len(whole.content)}"
    head = api.get(listed["links"]["content"], headers={"Range": "bytes=0-43"})
    assert head.status_code == 206 and _wav(head.content).getnframes() == audio.getnframes()
    assert api.get(listed["links"]["content"], headers={"Range": "bytes=-100"}).content == whole.content[-100:]
    past = api.get(listed["links"]["content"], headers={"Range": f"bytes={len(whole.content)}-"})
    assert past.status_code == 416 and past.json()["error"]["code"] == "range_not_satisfiable"
    assert past.headers["content-range"] == f"bytes */{len(whole.content)}"

    meta = api.get(listed["links"]["metadata"]).json()
    assert meta["chunkDuration"] == round(seconds * 1000) and meta["chunkIndex"] == 0
    [pause] = meta["pauseResumeIntervals"]
    assert pause["duration"] >= PAUSED_MS

    bob = {"Authorization": f"Bearer {OTHER_API_KEY}"}
    for path in (f"/v1/recordings/{rid}", listed["links"]["content"], listed["links"]["metadata"]):
        assert api.get(path, headers=bob).json()["error"]["code"] == "recording_not_found"
    assert api.delete(f"/v1/recordings/{rid}/files", headers=bob).status_code == 404

    deleted = api.delete(f"/v1/recordings/{rid}/files")
    assert deleted.status_code == 200 and deleted.json()["items"][0]["deleted_at"], deleted.text
    assert [e["operation"] for e in sim_log(simulator) if e["operation"] == "deleteRecordingFile"] == [
        "deleteRecordingFile"]
    gone = api.get(listed["links"]["content"])
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "recording_file_deleted"
    assert api.delete(f"/v1/recordings/{rid}/files").status_code == 200  # deleting again changes nothing
    assert len([e for e in sim_log(simulator) if e["operation"] == "deleteRecordingFile"]) == 1


def test_a_recording_started_paused_records_from_its_resume(stack: httpx.Client, simulator: ThreadServer) -> None:
    api = stack
    cc = _connected(api, simulator)
    # Resolved by ACS's answer ("inactive"): nothing else is promised while it waits for consent.
    started = _done(api, f"/v1/calls/{cc}/recordings", {**RECORD, "pause_on_start": True})
    rid = started["recording_id"]
    assert started["result"]["state"] == "inactive"
    assert api.get(f"/v1/recordings/{rid}").json()["state"] == "inactive"
    [start] = [e for e in sim_log(simulator) if e["operation"] == "startRecording"]
    assert start["body"]["pauseOnStart"] is True
    _done(api, f"/v1/calls/{cc}/recording/resume")
    assert api.get(f"/v1/recordings/{rid}").json()["state"] == "active"
    _done(api, f"/v1/calls/{cc}/recording/stop")
    [listed] = _files(api, rid)
    audio = _wav(api.get(listed["links"]["content"]).content)
    at = _took_effect(simulator)
    assert audio.getnframes() / audio.getframerate() == pytest.approx(
        at["stopRecording"] - at["resumeRecording"], abs=0.02)


def test_a_scheduled_run_links_the_files_of_its_recording(
        stack: httpx.Client, simulator: ThreadServer, start_worker: Callable[..., Any],
        start_beat: Callable[[str], Any]) -> None:
    api = stack
    start_worker("w2", extra_env=SCHED_ENV)
    start_beat("b1")
    sid = create(api, {"room_id": sim_room_call(simulator), "start_at": soon(2), "duration": "PT3S",
                       "pause_windows": [{"offset": "PT1S", "duration": "PT1S"}], **RECORD})
    [run] = wait_until(lambda: runs_in(api, sid, TERMINAL, 1), timeout_s=30, what="the occurrence to end")
    assert run["state"] == "completed", run
    rid = run["recording_id"]
    assert run["links"] == {"recording": f"/v1/recordings/{rid}", "files": f"/v1/recordings/{rid}/files"}
    [listed] = wait_until(lambda: api.get(run["links"]["files"]).json()["items"], timeout_s=30,
                          what="the scheduled recording's files")
    audio = _wav(api.get(listed["links"]["content"]).content)
    at = _took_effect(simulator)
    active_s = (at["pauseRecording"] - at["startRecording"]) + (at["stopRecording"] - at["resumeRecording"])
    assert audio.getnframes() / audio.getframerate() == pytest.approx(active_s, abs=0.02)


def test_the_python_client_lists_downloads_and_deletes_a_recordings_files(stack: httpx.Client, simulator: ThreadServer,
                                                                          api_server: ThreadServer) -> None:
    api = stack
    rid, listed = _recorded(api, simulator, RECORD)
    with Client(api_server.url, TEST_API_KEY) as callq:
        assert callq.recording_files(rid)["items"] == [listed]
        assert callq.get_recording(rid)["files"] == [listed]
        whole = callq.download_recording_file(rid, 0)
        audio = _wav(whole)
        assert audio.getnframes() / audio.getframerate() == listed["duration_s"]
        assert callq.download_recording_file(rid, 0, byte_range="bytes=0-43") == whole[:44]
        assert callq.recording_file_metadata(rid, 0)
        callq.delete_recording_files(rid)
        with pytest.raises(CallqAPIError) as gone:
            callq.download_recording_file(rid, 0)
        assert (gone.value.status, gone.value.code) == (404, "recording_file_deleted")


def _recording_events(api: httpx.Client, cc: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(f"/v1/calls/{cc}/events").json()["items"]
    return [e for e in items if e["type"].endswith(".RecordingStateChanged")]


def test_recording_events_naming_the_recorders_connection_resolve_and_join_callqs_call(
        stack: httpx.Client, simulator: ThreadServer) -> None:
    """The simulator names the recorder's own endpoint as the events' callConnectionId, as real ACS does: callq finds
    the commands by recordingId and puts each event on the timeline of the call that started the recording."""
    api = stack
    cc = _connected(api, simulator)
    started = _done(api, f"/v1/calls/{cc}/recordings", RECORD)
    rid = started["recording_id"]
    paused = _done(api, f"/v1/recordings/{rid}/pause")
    resumed = _done(api, f"/v1/calls/{cc}/recording/resume")
    _done(api, f"/v1/recordings/{rid}/stop")  # resolved by ACS's 204; its RecordingStateChanged follows
    for done, state in ((started, "active"), (paused, "inactive"), (resumed, "active")):
        assert done["resolved_by"]["type"] == "RecordingStateChanged", done
        assert done["call_connection_id"] == cc and done["result"]["state"] == state, done

    events = wait_until(lambda: (found := _recording_events(api, cc)) and len(found) == 4 and found,
                        timeout_s=30, what="the recording's four RecordingStateChanged on callq's call")
    assert [e["data"]["state"] for e in events] == ["active", "inactive", "active", "inactive"]
    assert {e["data"]["recordingId"] for e in events} == {rid}
    named = {e["data"]["callConnectionId"] for e in events}
    assert len(named) == 1 and cc not in named, named  # every one names the recorder, none callq's connection
    assert {d["resolved_by"]["id"] for d in (started, paused, resumed)} <= {e["id"] for e in events}
    # The recorder's connection is no call of this client's: its events are not readable under it.
    [recorder] = named
    assert api.get(f"/v1/calls/{recorder}/events").status_code == 404
    assert api.get(f"/v1/recordings/{rid}").json()["call_connection_id"] == cc


@pytest.mark.parametrize(("body", "media_type", "suffix"), [
    ({"content": "audio", "channel": "mixed", "format": "mp3"}, "audio/mpeg", "mp3"),
    ({"content": "audioVideo", "channel": "mixed", "format": "mp4"}, "video/mp4", "mp4"),
])
def test_an_mp3_or_mp4_recording_is_downloaded_as_that_format(stack: httpx.Client, simulator: ThreadServer,
                                                              body: dict[str, str], media_type: str,
                                                              suffix: str) -> None:
    """The simulator encodes the file with ffmpeg; callq serves it with its Content-Type, whole and by Range."""
    api = stack
    rid, listed = _recorded(api, simulator, body)
    assert listed["content_type"] == media_type
    whole = api.get(listed["links"]["content"])
    assert whole.status_code == 200 and whole.headers["content-type"] == media_type, whole.text
    assert whole.headers["content-disposition"] == f'attachment; filename="recording-0.{suffix}"'
    if suffix == "mp3":
        assert media.mp3_first_frame(whole.content) == media.Mp3Frame(layer=3, sample_rate=16_000)
    else:
        assert media.mp4_brand(whole.content) is not None
    probe = media.ffprobe(whole.content, suffix)
    if probe is not None:  # a real decoder reads it, about as long as ACS said (MP3 pads its last frame)
        assert probe.duration_s == pytest.approx(listed["duration_s"], abs=0.15)
        assert {kind for kind, _ in probe.streams} == ({"audio"} if suffix == "mp3" else {"audio", "video"})
    part = api.get(listed["links"]["content"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == whole.content[:100]
    assert api.get(listed["links"]["metadata"]).json()["recordingInfo"]["format"] == suffix
