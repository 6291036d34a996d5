"""Recording files on fakeredis against a fake ACS storage: Event Grid's RecordingFileStatusUpdated attaches chunks to
the recording callq started (once), the routes list, stream (Range passed through, 206/416), fetch metadata and
delete them, per client; a location off ACS's storage is never signed; against real ACS the SDK's own download and
delete make the requests, Range in the form the SDK can send."""

from __future__ import annotations

import dataclasses
import io
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import fakeredis
import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter
from starlette.testclient import TestClient

from api.app import create_app
from tests.conftest import OTHER_API_KEY, TEST_ACS_KEY, TEST_API_KEY
from tests.unit.test_acs_client import serving
from workers import keys, recording_download
from workers.acs import create_client
from workers.errors import Conflict
from workers.recording_download import ByteRange
from workers.settings import Settings

QUERY = "eventgrid-query-token-0123456789"
RID, CC = "rec-1", "cc-1"
AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
FILE = bytes(range(256)) * 4  # what the fake storage holds: 1024 bytes
META = {"chunkDocumentId": "doc-1", "chunkIndex": 0, "chunkDuration": 1000}


class _Storage(BaseHTTPRequestHandler):
    """ACS's recording storage: one document's content (Range honoured), metadata and delete; remembers requests."""

    seen: ClassVar[list[tuple[str, str, dict[str, str]]]] = []
    gone: ClassVar[bool] = False

    def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        self.seen.append(("GET", self.path, {k.lower(): v for k, v in self.headers.items()}))
        if self.gone:
            return self._answer(404, b'{"error": {"code": "NotFound", "message": "gone"}}')
        if self.path.endswith("/metadata"):
            return self._answer(200, json.dumps(META).encode(), Content_Type="application/json")
        wanted = self.headers.get("Range")
        if not wanted:
            return self._answer(200, FILE, Content_Type="application/octet-stream")
        first, _, last = wanted.removeprefix("bytes=").partition("-")
        if int(first or 0) >= len(FILE):
            return self._answer(416, Content_Range=f"bytes */{len(FILE)}")
        end = int(last) if last else len(FILE) - 1
        return self._answer(206, FILE[int(first):end + 1], Content_Range=f"bytes {first}-{end}/{len(FILE)}")

    def do_DELETE(self) -> None:
        self.seen.append(("DELETE", self.path, {k.lower(): v for k, v in self.headers.items()}))
        self._answer(404 if self.gone else 200)

    def log_message(self, *args: object) -> None:
        pass  # quiet


@pytest.fixture
def storage() -> Iterator[str]:
    _Storage.seen, _Storage.gone = [], False
    with serving(_Storage) as url:
        yield url


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer, r: fakeredis.FakeRedis,
           storage: str) -> Iterator[TestClient]:
    r.hset(keys.call_key(CC), mapping={"client": "alice", "state": "disconnected", "server_call_id": "scid-1"})
    r.hset(keys.recording_key(RID), mapping={"client": "alice", "call_connection_id": CC})
    # The fake storage is the "simulator" here: callq fetches files only from its ACS endpoint.
    configured = settings.with_(acs_endpoint=storage, eventgrid_query_tokens=(QUERY,))
    app = create_app(configured, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app) as c:
        # Without the rate budget (its Redis is not fakeredis'): tests/unit/test_api_reads.py covers it.
        c.app_state["acs"].close()
        c.app_state["acs"] = create_client(configured)
        yield c


def file_event(event_id: str, rid: str, base: str, **data: Any) -> dict[str, Any]:
    docs = f"{base}/recordings/doc-1"
    chunk = {"documentId": "doc-1", "index": 0, "endReason": "SessionEnded", "contentLocation": f"{docs}/content",
             "metadataLocation": f"{docs}/metadata", "deleteLocation": f"{docs}/delete"}
    return {"id": event_id, "topic": "/subscriptions/s/x",
            "eventType": "Microsoft.Communication.RecordingFileStatusUpdated",
            "subject": f"/recording/call/corr/serverCallId/scid-1/recordingId/{rid}", "dataVersion": "1.0",
            "metadataVersion": "1", "eventTime": "2026-12-03T10:00:00.1234567Z",
            "data": {"recordingStorageInfo": {"recordingChunks": [chunk]}, "recordingStartTime": "2026-12-03T09:59:00Z",
                     "recordingDurationMs": 2500, "sessionEndReason": "RecordingStopped",
                     "recordingContentType": "Audio", "recordingChannelType": "Mixed", "recordingFormatType": "Wav",
                     **data}}


def deliver(client: TestClient, *events: dict[str, Any]) -> None:
    resp = client.post(f"/v1/eventgrid/events?token={QUERY}", json=list(events))
    assert resp.status_code == 200, resp.text


def test_a_file_event_attaches_its_chunks_once_to_a_recording_callq_started(
        client: TestClient, r: fakeredis.FakeRedis, storage: str) -> None:
    deliver(client, file_event("e1", RID, storage))
    deliver(client, file_event("e1", RID, storage), file_event("e2", RID, storage))  # redelivered, and again
    deliver(client, file_event("e3", "rec-unknown", storage))
    assert list(r.hgetall(keys.recording_files_key(RID))) == ["0"]
    assert not r.exists(keys.recording_key("rec-unknown"), keys.recording_files_key("rec-unknown"))
    [listed] = client.get(f"/v1/recordings/{RID}/files", headers=AUTH).json()["items"]
    assert listed == {"index": 0, "content_type": "audio/wav", "duration_s": 2.5, "start_time": "2026-12-03T09:59:00Z",
                      "end_reason": "SessionEnded", "deleted_at": None,
                      "links": {"content": f"/v1/recordings/{RID}/files/0",
                                "metadata": f"/v1/recordings/{RID}/files/0/metadata"}}
    recording = client.get(f"/v1/recordings/{RID}", headers=AUTH).json()
    assert (recording["state"], recording["duration_s"], recording["files"]) == ("ended", 2.5, [listed])
    assert recording["files_at"] == "2026-12-03T10:00:00.123456Z" and _Storage.seen == []  # ACS was not asked


def test_another_clients_recording_and_its_files_are_404(client: TestClient, storage: str) -> None:
    deliver(client, file_event("e1", RID, storage))
    bob = {"Authorization": f"Bearer {OTHER_API_KEY}"}
    for path in (f"/v1/recordings/{RID}", f"/v1/recordings/{RID}/files", f"/v1/recordings/{RID}/files/0",
                 f"/v1/recordings/{RID}/files/0/metadata"):
        resp = client.get(path, headers=bob)
        assert resp.status_code == 404 and resp.json()["error"]["code"] == "recording_not_found", path
    assert client.delete(f"/v1/recordings/{RID}/files", headers=bob).status_code == 404
    assert _Storage.seen == []


def test_a_file_is_streamed_from_acs_signed_with_the_range_passed_through(client: TestClient, storage: str) -> None:
    deliver(client, file_event("e1", RID, storage))
    whole = client.get(f"/v1/recordings/{RID}/files/0", headers=AUTH)
    assert whole.status_code == 200 and whole.content == FILE
    assert whole.headers["content-type"] == "audio/wav"  # storage said octet-stream: the event's format says more
    assert whole.headers["accept-ranges"] == "bytes" and "recording-0.wav" in whole.headers["content-disposition"]
    part = client.get(f"/v1/recordings/{RID}/files/0", headers={**AUTH, "Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == FILE[:100]
    assert part.headers["content-range"] == f"bytes 0-99/{len(FILE)}"
    (_, path, first), (_, _, ranged) = _Storage.seen
    assert path == "/recordings/doc-1/content" and "range" not in first and ranged["range"] == "bytes=0-99"
    assert ranged["x-ms-host"] == "127.0.0.1" and ranged["authorization"].startswith("HMAC-SHA256 ")
    assert ranged["accept-encoding"] == "identity"
    # A conditional range: callq has nothing to compare If-Range with, so the whole file comes.
    conditional = client.get(f"/v1/recordings/{RID}/files/0", headers={**AUTH, "Range": "bytes=0-9", "If-Range": "x"})
    assert conditional.status_code == 200 and conditional.content == FILE


def test_a_range_past_the_end_is_416_and_a_file_acs_lost_is_404(client: TestClient, storage: str) -> None:
    deliver(client, file_event("e1", RID, storage))
    past = client.get(f"/v1/recordings/{RID}/files/0", headers={**AUTH, "Range": f"bytes={len(FILE)}-"})
    assert past.status_code == 416 and past.json()["error"]["code"] == "range_not_satisfiable"
    assert past.headers["content-range"] == f"bytes */{len(FILE)}"
    assert client.get(f"/v1/recordings/{RID}/files/1", headers=AUTH).json()["error"]["code"] == \
        "recording_file_not_found"
    _Storage.gone = True
    lost = client.get(f"/v1/recordings/{RID}/files/0", headers=AUTH)
    assert lost.status_code == 404 and lost.json()["error"]["code"] == "recording_file_gone"


def test_metadata_is_acs_json(client: TestClient, storage: str) -> None:
    deliver(client, file_event("e1", RID, storage))
    got = client.get(f"/v1/recordings/{RID}/files/0/metadata", headers=AUTH)
    assert got.status_code == 200 and got.json() == META


def test_a_location_off_acs_storage_is_never_fetched(client: TestClient, storage: str) -> None:
    deliver(client, file_event("e1", RID, "http://127.0.0.2:9"))  # another host than callq's ACS endpoint
    for path in (f"/v1/recordings/{RID}/files/0", f"/v1/recordings/{RID}/files/0/metadata"):
        resp = client.get(path, headers=AUTH)
        assert resp.status_code == 409 and resp.json()["error"]["code"] == "recording_file_not_downloadable"
    assert client.delete(f"/v1/recordings/{RID}/files", headers=AUTH).status_code == 409


def test_delete_deletes_each_file_at_acs_once(client: TestClient, r: fakeredis.FakeRedis, storage: str) -> None:
    not_yet = client.delete(f"/v1/recordings/{RID}/files", headers=AUTH)
    assert not_yet.status_code == 409 and not_yet.json()["error"]["code"] == "recording_files_not_ready"
    deliver(client, file_event("e1", RID, storage))
    deleted = client.delete(f"/v1/recordings/{RID}/files", headers=AUTH)
    assert deleted.status_code == 200 and deleted.json()["items"][0]["deleted_at"]
    assert [(m, p) for m, p, _ in _Storage.seen] == [("DELETE", "/recordings/doc-1/delete")]
    assert client.delete(f"/v1/recordings/{RID}/files", headers=AUTH).status_code == 200
    assert len(_Storage.seen) == 1  # already deleted: ACS is not asked again
    deliver(client, file_event("e9", RID, storage))  # the chunk announced again stays deleted
    gone = client.get(f"/v1/recordings/{RID}/files/0", headers=AUTH)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "recording_file_deleted"


class _Acs(BaseAdapter):
    """Real ACS storage as requests sees it: answers each request with ``status``, remembering it."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.seen: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.seen.append(request)
        response = requests.Response()
        response.status_code, response.request = self.status, request
        body = b"" if request.method == "DELETE" else b"audio"
        response.raw = urllib3.HTTPResponse(body=io.BytesIO(body), status=self.status, preload_content=False)
        if body:
            response.headers["Content-Type"] = "audio/wav"
        return response

    def close(self) -> None:
        """Nothing to close: no connection."""


@pytest.fixture
def real(settings: Settings) -> Iterator[tuple[Any, _Acs, Settings]]:
    """A client pointed at a real ACS resource whose transport ends in ``_Acs``."""
    real = dataclasses.replace(settings, acs_endpoint="https://contoso.communication.azure.com",
                               acs_access_key=TEST_ACS_KEY)
    acs = _Acs()
    client = create_client(real)
    transport = client._client._client._pipeline._transport
    transport.session = requests.Session()
    transport.session.mount("https://", acs)
    yield client, acs, real
    client.close()


STORED = "https://us-storage.asm.skype.com/v1/objects/0-eus-d1-abc/content/audio"


@pytest.mark.parametrize(("wanted", "sent"), [
    (None, None), (ByteRange(0, 99), "bytes=0-99"), (ByteRange(100, 109), "bytes=100-109"),
    (ByteRange(100), "bytes=100-"), (ByteRange(suffix=50), "bytes=-50")])
def test_real_acs_is_asked_through_the_sdks_download(real: tuple[Any, _Acs, Settings], wanted: ByteRange | None,
                                                     sent: str | None) -> None:
    client, acs, settings = real
    response = recording_download.download(client, STORED, settings, wanted)
    assert response.read() == b"audio"
    [request] = acs.seen
    assert request.url == STORED and request.headers.get("Range") == sent
    assert request.headers["x-ms-host"] == "contoso.communication.azure.com"
    assert request.headers["Authorization"].startswith("HMAC-SHA256 ")


def test_real_acs_refuses_locations_off_its_storage_before_signing(real: tuple[Any, _Acs, Settings]) -> None:
    client, acs, settings = real
    for url in ("https://account.blob.core.windows.net/recordings/x.wav", "http://us-storage.asm.skype.com/x",
                "https://evil.example/asm.skype.com/x"):
        with pytest.raises(Conflict):
            recording_download.download(client, url, settings)
    assert acs.seen == []


def test_real_acs_deletes_through_the_sdk_and_a_lost_file_counts_as_deleted(real: tuple[Any, _Acs, Settings]) -> None:
    client, acs, settings = real
    assert recording_download.delete(client, STORED.replace("/content/audio", "/content/deletedata"), settings)
    assert [r.method for r in acs.seen] == ["DELETE"] and acs.seen[0].headers["x-ms-host"]
    acs.status = 404
    assert not recording_download.delete(client, STORED, settings)


@pytest.mark.parametrize(("header", "parsed"), [
    ("bytes=0-9", ByteRange(0, 9)), ("bytes=5-", ByteRange(5)), ("bytes=-3", ByteRange(suffix=3)),
    ("bytes=9-0", None), ("bytes=0-1,4-5", None), ("items=0-9", None), ("bytes=-0", None), ("", None), (None, None)])
def test_one_byte_range_is_understood_and_the_rest_ignored(header: str | None, parsed: ByteRange | None) -> None:
    assert ByteRange.parse(header) == parsed
