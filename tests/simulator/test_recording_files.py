"""Recording files: the chunk RecordingFileStatusUpdated announces is a playable WAV of the recorded time (paused spans
left out), with ACS-like metadata, served only to HMAC-signed requests, with Range, and deletable; MP3 and MP4 are
encoded by ffmpeg (and a simulator without it fails the start, one whose encoder fails serves a 500 saying so); the
start options (pauseOnStart, externalStorage, channelAffinity) are honoured."""

from __future__ import annotations

import io
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.communication.callautomation import (
    AzureBlobContainerRecordingStorage,
    ChannelAffinity,
    CommunicationUserIdentifier,
)
from azure.core.exceptions import HttpResponseError
from eghook import Hook
from simharness import KEY, ServerThread, Sim, sign_headers

from simulator.app import create_app
from simulator.settings import Settings
from tests import media
from tests.conftest import free_port

ALICE, BOB = "8:acs:res_alice", "8:acs:res_bob"


def _file_event(sim: Sim, hook: Hook, path: str, recording_id: str) -> dict[str, Any]:
    def of_recording(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [e["data"] for e in events if e["eventType"].endswith("RecordingFileStatusUpdated")
                and e["subject"].endswith(f"/recordingId/{recording_id}")]
    return of_recording(hook.wait_events(path, lambda events: bool(of_recording(events))))[0]


def _signed(sim: Sim, method: str, url: str, **headers: str) -> httpx.Response:
    """As the SDK's download/delete send it: HMAC over the storage URL's path, plus x-ms-host."""
    return sim.admin.request(method, url, headers={**sign_headers(KEY, method, url, b""), "x-ms-host": "127.0.0.1",
                                                   **headers})


def _recorded(sim: Sim, hook: Hook, client: Any, *, content: str = "audio", fmt: str = "wav",
              **options: Any) -> tuple[str, dict[str, Any]]:
    """Start, pause, resume and stop a recording; returns its id and its file event's chunk and data."""
    path = hook.new_path()
    sim.subscribe(f"files-{path.strip('/')[-8:]}", hook.url(path))
    room_id, server_call_id = sim.room()
    sim.connect(client, room_id)
    rec = client.start_recording(server_call_id=server_call_id, recording_content_type=content,
                                 recording_format_type=fmt, **options)
    client.pause_recording(rec.recording_id)
    client.resume_recording(rec.recording_id)
    client.stop_recording(rec.recording_id)
    return rec.recording_id, _file_event(sim, hook, path, rec.recording_id)


def _wav(body: bytes) -> wave.Wave_read:
    return wave.open(io.BytesIO(body))


def test_the_file_is_a_wav_of_the_recorded_time_with_its_metadata(sim: Sim, hook: Hook, client: Any) -> None:
    _, data = _recorded(sim, hook, client, recording_channel_type="mixed")
    [chunk] = data["recordingStorageInfo"]["recordingChunks"]
    got = _signed(sim, "GET", chunk["contentLocation"])
    assert got.status_code == 200 and got.headers["content-type"] == "audio/wav", got.text
    assert got.headers["accept-ranges"] == "bytes" and int(got.headers["content-length"]) == len(got.content)
    audio = _wav(got.content)
    assert (audio.getnchannels(), audio.getsampwidth(), audio.getframerate()) == (1, 2, 16000)
    # Exactly the recorded time: ACS's duration in ms, 16 frames each.
    assert audio.getnframes() == data["recordingDurationMs"] * 16
    assert any(audio.readframes(160))  # a tone, not silence
    meta = _signed(sim, "GET", chunk["metadataLocation"]).json()
    assert meta["chunkDocumentId"] == chunk["documentId"] and meta["chunkIndex"] == 0
    assert meta["chunkDuration"] == data["recordingDurationMs"]
    assert meta["recordingInfo"]["format"] == "wav" and meta["recordingInfo"]["audioConfiguration"]["channels"] == 1
    [pause] = meta["pauseResumeIntervals"]  # the one pause, left out of the file
    assert set(pause) == {"startTime", "duration"} and pause["duration"] >= 0
    log = {e["operation"]: e["t"] for e in sim.log() if "Recording" in e["operation"]}
    wall_ms = (log["stopRecording"] - log["startRecording"]) * 1000
    assert data["recordingDurationMs"] + pause["duration"] == pytest.approx(wall_ms, abs=5)
    assert {p["participantId"] for p in meta["participants"]} == {ALICE, BOB}


def test_a_range_is_served_206_and_one_past_the_end_416(sim: Sim, hook: Hook, client: Any) -> None:
    _, data = _recorded(sim, hook, client)
    url = data["recordingStorageInfo"]["recordingChunks"][0]["contentLocation"]
    whole = _signed(sim, "GET", url).content
    part = _signed(sim, "GET", url, Range="bytes=10-49")
    assert part.status_code == 206 and part.content == whole[10:50]
    assert part.headers["content-range"] == f"bytes 10-49/{len(whole)}"
    assert _signed(sim, "GET", url, Range="bytes=-8").content == whole[-8:]
    assert _signed(sim, "GET", url, Range=f"bytes={len(whole) - 4}-").content == whole[-4:]
    past = _signed(sim, "GET", url, Range=f"bytes={len(whole)}-")
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(whole)}"
    assert _signed(sim, "GET", url, Range="bytes=0-1,4-5").status_code == 200  # several ranges: ignored


def test_only_signed_requests_are_served_and_a_delete_is_final(sim: Sim, hook: Hook, client: Any) -> None:
    _, data = _recorded(sim, hook, client)
    chunk = data["recordingStorageInfo"]["recordingChunks"][0]
    assert sim.admin.get(chunk["contentLocation"]).status_code == 401
    no_host = sim.admin.get(chunk["contentLocation"], headers=sign_headers(KEY, "GET", chunk["contentLocation"], b""))
    assert no_host.status_code == 401 and no_host.json()["error"]["code"] == "7509"
    other = chunk["metadataLocation"]  # a signature is for one path only
    forged = {**sign_headers(KEY, "GET", chunk["contentLocation"], b""), "x-ms-host": "127.0.0.1"}
    assert sim.admin.get(other, headers=forged).status_code == 401
    assert _signed(sim, "DELETE", chunk["deleteLocation"]).status_code == 200
    assert _signed(sim, "GET", chunk["contentLocation"]).status_code == 404
    assert _signed(sim, "GET", chunk["metadataLocation"]).status_code == 404
    assert _signed(sim, "DELETE", chunk["deleteLocation"]).status_code == 404
    assert [e["path"] for e in sim.log(operation="deleteRecordingFile")] == [
        chunk["deleteLocation"].removeprefix(sim.base)]


def test_pause_on_start_records_nothing_until_resumed(sim: Sim, hook: Hook, client: Any) -> None:
    path = hook.new_path()
    sim.subscribe("files-pause-on-start", hook.url(path))
    room_id, server_call_id = sim.room()
    sim.connect(client, room_id)
    rec_path = sim.path + "-rec"
    rec = client.start_recording(server_call_id=server_call_id, pause_on_start=True, recording_content_type="audio",
                                 recording_format_type="wav",
                                 recording_state_callback_url=sim.receiver.base + rec_path)
    assert client.get_recording_properties(rec.recording_id).recording_state == "inactive"
    client.resume_recording(rec.recording_id)
    states = sim.receiver.wait_for(rec_path, "RecordingStateChanged")
    assert [e["data"]["state"] for e in states] == ["active"]  # nothing was sent for the paused start
    client.stop_recording(rec.recording_id)
    data = _file_event(sim, hook, path, rec.recording_id)
    meta = _signed(sim, "GET", data["recordingStorageInfo"]["recordingChunks"][0]["metadataLocation"]).json()
    [paused] = meta["pauseResumeIntervals"]  # from the start until the resume
    assert paused["startTime"] == meta["chunkStartTime"]
    log = {e["operation"]: e["t"] for e in sim.log() if "Recording" in e["operation"]}
    assert paused["duration"] == pytest.approx((log["resumeRecording"] - log["startRecording"]) * 1000, abs=5)


def test_unmixed_audio_has_a_channel_per_participant_in_affinity_order(sim: Sim, hook: Hook, client: Any) -> None:
    affinity = [ChannelAffinity(CommunicationUserIdentifier(BOB), 0)]
    _, data = _recorded(sim, hook, client, recording_channel_type="unmixed", channel_affinity=affinity)
    chunk = data["recordingStorageInfo"]["recordingChunks"][0]
    assert _wav(_signed(sim, "GET", chunk["contentLocation"]).content).getnchannels() == 2
    meta = _signed(sim, "GET", chunk["metadataLocation"]).json()
    assert [p["participantId"] for p in meta["participants"]] == [BOB, ALICE]


def test_bad_affinity_and_storage_are_refused_400_8523(sim: Sim, client: Any) -> None:
    room_id, server_call_id = sim.room()
    sim.connect(client, room_id)
    bob = CommunicationUserIdentifier(BOB)
    for options in ({"recording_channel_type": "mixed", "channel_affinity": [ChannelAffinity(bob, 0)]},
                    {"recording_channel_type": "unmixed", "channel_affinity": [
                        ChannelAffinity(bob, 1), ChannelAffinity(CommunicationUserIdentifier(ALICE), 1)]},
                    {"recording_storage": AzureBlobContainerRecordingStorage("http://acct.blob.core.windows.net/c")}):
        with pytest.raises(HttpResponseError) as err:
            client.start_recording(server_call_id=server_call_id, recording_content_type="audio", **options)
        assert (err.value.status_code, err.value.error.code) == (400, "8523"), options


def test_own_storage_is_named_in_the_file_event(sim: Sim, hook: Hook, client: Any) -> None:
    storage = AzureBlobContainerRecordingStorage("https://acct.blob.core.windows.net/recordings")
    rid, data = _recorded(sim, hook, client, recording_storage=storage)
    assert (data["storageType"], data["recordingId"]) == ("blobstorage", rid)
    # ACS keeps its own copy as well: the chunk is still served.
    chunk = data["recordingStorageInfo"]["recordingChunks"][0]
    assert _signed(sim, "GET", chunk["contentLocation"]).status_code == 200


def test_an_mp3_recording_is_an_mp3_of_the_recorded_time(sim: Sim, hook: Hook, client: Any) -> None:
    _, data = _recorded(sim, hook, client, fmt="mp3")
    assert data["recordingFormatType"] == "Mp3"
    chunk = data["recordingStorageInfo"]["recordingChunks"][0]
    got = _signed(sim, "GET", chunk["contentLocation"])
    assert got.status_code == 200 and got.headers["content-type"] == "audio/mpeg", got.text
    assert int(got.headers["content-length"]) == len(got.content)
    assert media.mp3_first_frame(got.content) == media.Mp3Frame(layer=3, sample_rate=16_000)
    probe = media.ffprobe(got.content, "mp3")
    if probe is not None:  # the decoder's reading; MP3 pads its last frame (36 ms at 16 kHz) and adds its delay
        assert probe.streams == [("audio", "mp3")]
        assert probe.duration_s == pytest.approx(data["recordingDurationMs"] / 1000, abs=0.15)
    part = _signed(sim, "GET", chunk["contentLocation"], Range="bytes=100-199")
    assert part.status_code == 206 and part.content == got.content[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(got.content)}"
    info = _signed(sim, "GET", chunk["metadataLocation"]).json()["recordingInfo"]
    assert (info["format"], info["audioConfiguration"]["channels"]) == ("mp3", 1) and "videoConfiguration" not in info


def test_an_mp4_recording_of_audio_and_video_has_both_tracks(sim: Sim, hook: Hook, client: Any) -> None:
    _, data = _recorded(sim, hook, client, content="audioVideo", fmt="mp4")
    chunk = data["recordingStorageInfo"]["recordingChunks"][0]
    got = _signed(sim, "GET", chunk["contentLocation"])
    assert got.status_code == 200 and got.headers["content-type"] == "video/mp4", got.text
    assert media.mp4_brand(got.content) is not None
    probe = media.ffprobe(got.content, "mp4")
    if probe is not None:
        assert sorted(probe.streams) == [("audio", "aac"), ("video", "h264")]
        assert probe.duration_s == pytest.approx(data["recordingDurationMs"] / 1000, abs=0.15)
    info = _signed(sim, "GET", chunk["metadataLocation"]).json()["recordingInfo"]
    assert info["format"] == "mp4" and info["videoConfiguration"]["longerSideLength"] == 320


def test_an_mp4_of_audio_only_is_served_as_audio_mp4(sim: Sim, hook: Hook, client: Any) -> None:
    _, data = _recorded(sim, hook, client, content="audio", fmt="mp4")
    got = _signed(sim, "GET", data["recordingStorageInfo"]["recordingChunks"][0]["contentLocation"])
    assert got.headers["content-type"] == "audio/mp4" and media.mp4_brand(got.content) is not None
    probe = media.ffprobe(got.content, "mp4")
    assert probe is None or probe.streams == [("audio", "aac")]


@pytest.fixture
def sim_with_encoder(hook: Hook, receiver: Any, request: pytest.FixtureRequest) -> Iterator[Sim]:
    """A second simulator whose ffmpeg is ``request.param``."""
    port = free_port()
    settings = Settings(access_key=KEY, port=port, callback_backoff_s=0.01, recording_file_delay_s=0.05,
                        ffmpeg=request.param)
    with ServerThread(create_app(settings), port):
        handle = Sim(f"http://127.0.0.1:{port}", settings, receiver)
        yield handle
        handle.admin.close()


@pytest.mark.parametrize("sim_with_encoder", ["/nonexistent/ffmpeg"], indirect=True)
def test_without_its_encoder_an_mp3_start_fails_saying_why(sim_with_encoder: Sim) -> None:
    sim = sim_with_encoder
    room_id, server_call_id = sim.room()
    with sim.client() as client:
        sim.connect(client, room_id)
        started = client.start_recording(server_call_id=server_call_id, recording_content_type="audio",
                                         recording_format_type="mp3")
        failed = sim.receiver.wait_for(sim.path, "StartRecordingFailed")[0]["data"]
        assert failed["recordingId"] == started.recording_id
        assert (failed["resultInformation"]["code"], failed["resultInformation"]["subCode"]) == (500, 9999)
        message = failed["resultInformation"]["message"]
        assert "'/nonexistent/ffmpeg' was not found" in message and "apt-get install ffmpeg" in message
        wav = client.start_recording(server_call_id=server_call_id, recording_content_type="audio",
                                     recording_format_type="wav")  # WAV needs no encoder
        assert client.get_recording_properties(wav.recording_id).recording_state == "active"


@pytest.mark.parametrize("sim_with_encoder", ["/bin/false"], indirect=True)
def test_a_file_whose_encoding_failed_is_a_500_naming_the_encoder(sim_with_encoder: Sim, hook: Hook) -> None:
    sim = sim_with_encoder
    with sim.client() as client:
        _, data = _recorded(sim, hook, client, fmt="mp3")
    chunk = data["recordingStorageInfo"]["recordingChunks"][0]
    got = _signed(sim, "GET", chunk["contentLocation"])
    assert got.status_code == 500 and "/bin/false could not encode mp3" in got.json()["error"]["message"]
    assert sim.admin.get("/_sim/health").json() == {"status": "ok"}  # still serving
