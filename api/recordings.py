"""Recording routes: a recording's state and files, each file's content (whole or a byte range) and metadata, and
deleting the files at ACS.

A recording is the client's whose start callq ran (``callq:rec:{id}``); another client's is 404
``recording_not_found``. Its files are what ACS announced through Event Grid (``attach_event``, called for each
RecordingFileStatusUpdated): listing them asks nothing of ACS; fetching or deleting one goes to ACS through the SDK
in the thread pool, as the other ACS reads do, and pays the same shared rate budget.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from azure.core.rest import HttpResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from api.acs_event_fields import recording_file_status
from api.eventgrid_parse import Event
from workers import keys, reads, recording_download, recording_files
from workers.command import now_iso
from workers.errors import AcsError, CommandNotFound, Conflict
from workers.recording_download import ByteRange, RangeNotSatisfiable
from workers.recording_files import StoredFile

log = logging.getLogger("callq.api.recordings")
STREAM_BLOCK = 256 * 1024  # bytes handed to the event loop per thread-pool hop
EXTENSIONS = {"audio/wav": "wav", "audio/mpeg": "mp3", "video/mp4": "mp4", "audio/mp4": "m4a"}


async def attach_event(request: Request, event: Event) -> None:
    """Keep a RecordingFileStatusUpdated's chunks on the recording it names (if callq started it)."""
    if not event.acs.recording_id:
        return
    state = request.state
    status = recording_file_status(event.acs.recording_id, event.data)
    done = await state.scripts.run(recording_files.attach(
        status, files_at=event.time.isoformat().replace("+00:00", "Z") if event.time else now_iso(),
        ttl_s=state.settings.command_ttl_s))
    if done.new_chunks:  # a redelivery (Event Grid delivers at least once) adds none
        log.info("recording %s: %d file chunk(s) announced", status.recording_id, done.new_chunks)


async def _own(request: Request) -> tuple[str, dict[str, str], list[StoredFile]]:
    """The recording in the path (its hash and files), if it is the calling client's."""
    state = request.state
    rid: str = request.path_params["recording_id"]
    pipe = state.redis.pipeline(transaction=False)
    pipe.hgetall(keys.recording_key(rid))
    pipe.hgetall(keys.recording_files_key(rid))
    record, files = await pipe.execute()
    if record.get("client") != state.api_keys.client_for(request):
        raise CommandNotFound(f"No recording {rid!r} is known to this client.", code="recording_not_found")
    return rid, record, recording_files.files_of(record, files)


def _file(rid: str, files: list[StoredFile], index: int) -> StoredFile:
    found = next((f for f in files if f.index == index), None)
    if found is None:
        raise CommandNotFound(f"Recording {rid!r} has no file {index} (yet): its files are listed at "
                              f"/v1/recordings/{rid}/files once ACS has announced them.",
                              code="recording_file_not_found")
    if found.deleted_at:
        raise CommandNotFound(f"File {index} of recording {rid!r} was deleted at {found.deleted_at}.",
                              code="recording_file_deleted")
    return found


def _file_resource(rid: str, record: dict[str, str], stored: StoredFile, single: bool) -> dict[str, Any]:
    """One file; a recording in several chunks has each chunk's own start and length only in its metadata."""
    base = f"/v1/recordings/{rid}/files/{stored.index}"
    duration_ms = record.get("duration_ms")
    return {
        "index": stored.index,
        "content_type": recording_files.media_type(record),
        "duration_s": int(duration_ms) / 1000 if single and duration_ms else None,
        "start_time": (record.get("start_time") or None) if stored.index == 0 else None,
        "end_reason": stored.chunk.end_reason,
        "deleted_at": stored.deleted_at,
        "links": {"content": base, "metadata": f"{base}/metadata"},
    }


def _files(rid: str, record: dict[str, str], files: list[StoredFile]) -> list[dict[str, Any]]:
    return [_file_resource(rid, record, f, len(files) == 1) for f in files]


async def get_recording(request: Request) -> Response:
    """The recording: its state at ACS (``ended`` once ACS no longer has it) and its files."""
    state = request.state
    rid, record, files = await _own(request)
    acs: dict[str, Any] = {"recording_id": rid, "state": "ended", "kind": None}
    call_ended = await state.redis.hget(keys.call_key(record.get("call_connection_id", "")), "state") == "disconnected"
    if not record.get("files_at") and not call_ended:  # files come once it stopped: no need to ask then
        try:
            acs = await run_in_threadpool(reads.recording, state.acs, rid)
        except AcsError as exc:
            if exc.status != 404:
                raise
    duration_ms = record.get("duration_ms")
    return JSONResponse({
        **acs,
        "call_connection_id": record.get("call_connection_id") or None,
        "files_at": record.get("files_at") or None,
        "duration_s": int(duration_ms) / 1000 if duration_ms else None,
        "session_end_reason": record.get("session_end_reason") or None,
        "storage_type": record.get("storage_type") or None,
        "files": _files(rid, record, files),
        "links": {"self": f"/v1/recordings/{rid}", "files": f"/v1/recordings/{rid}/files"},
    })


async def list_files(request: Request) -> Response:
    """The files ACS has announced (none until it has: typically minutes after the recording stopped)."""
    rid, record, files = await _own(request)
    return JSONResponse({"items": _files(rid, record, files)})


async def delete_files(request: Request) -> Response:
    """Delete every file of the recording at ACS (files already deleted, or gone from ACS, count as deleted)."""
    state = request.state
    rid, record, files = await _own(request)
    if not files:
        raise Conflict(f"ACS has not announced recording {rid!r}'s files yet; delete them once "
                       f"/v1/recordings/{rid}/files lists them.", code="recording_files_not_ready")
    for stored in files:
        if stored.deleted_at:
            continue
        location = stored.chunk.delete_location
        if location is None:
            raise Conflict(f"ACS gave file {stored.index} no delete location.", code="recording_file_not_deletable")
        await run_in_threadpool(recording_download.delete, state.acs, location, state.settings)
        pipe = state.redis.pipeline(transaction=True)
        pipe.hset(keys.recording_key(rid), f"{recording_files.DELETED_PREFIX}{stored.index}", now_iso())
        pipe.expire(keys.recording_key(rid), state.settings.command_ttl_s)
        await pipe.execute()
    _, record, files = await _own(request)
    return JSONResponse({"items": _files(rid, record, files)})


async def get_file(request: Request) -> Response:
    """A file's content, streamed from ACS; one ``Range`` (``bytes=a-b``, ``a-``, ``-n``) is answered 206."""
    state = request.state
    rid, record, files = await _own(request)
    stored = _file(rid, files, int(request.path_params["index"]))
    # No validators to compare an If-Range with: a conditional range is served as the whole file.
    wanted = None if "if-range" in request.headers else ByteRange.parse(request.headers.get("range"))
    try:
        upstream = await run_in_threadpool(recording_download.download, state.acs, stored.chunk.content_location,
                                           state.settings, wanted)
    except RangeNotSatisfiable as exc:
        return JSONResponse({"error": {"code": exc.code, "message": exc.message, "details": []}}, status_code=416,
                            headers={"Content-Range": exc.content_range} if exc.content_range else None)
    media = _media_type(upstream, record)
    headers = {"Accept-Ranges": "bytes",
               "Content-Disposition": f'attachment; filename="recording-{stored.index}.{EXTENSIONS.get(media, "bin")}"'}
    for name in ("Content-Length", "Content-Range"):
        if name in upstream.headers and "Content-Encoding" not in upstream.headers:
            headers[name] = upstream.headers[name]
    return StreamingResponse(_body(upstream), status_code=206 if upstream.status_code == 206 else 200,
                             headers=headers, media_type=media)


def _media_type(upstream: HttpResponse, record: dict[str, str]) -> str:
    """What ACS served the file as, when it says (audio/…, video/…); else what the event's format means."""
    served = upstream.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if served.startswith(("audio/", "video/")):
        return served
    return recording_files.media_type(record) or "application/octet-stream"


def _read_some(chunks: Iterator[bytes]) -> bytes:
    block = bytearray()
    for piece in chunks:
        block += piece
        if len(block) >= STREAM_BLOCK:
            break
    return bytes(block)


async def _body(upstream: HttpResponse) -> AsyncIterator[bytes]:
    chunks = upstream.iter_bytes()
    try:
        while block := await run_in_threadpool(_read_some, chunks):
            yield block
    finally:
        await run_in_threadpool(upstream.close)


async def get_metadata(request: Request) -> Response:
    """A file's metadata document, as ACS keeps it (JSON)."""
    state = request.state
    rid, _, files = await _own(request)
    stored = _file(rid, files, int(request.path_params["index"]))
    if not stored.chunk.metadata_location:
        raise CommandNotFound(f"ACS gave file {stored.index} no metadata.", code="recording_file_not_found")
    document = await run_in_threadpool(recording_download.metadata, state.acs, stored.chunk.metadata_location,
                                       state.settings)
    return Response(json.dumps(document), media_type="application/json")


recording_routes = [
    Route("/v1/recordings/{recording_id}", get_recording, methods=["GET"]),
    Route("/v1/recordings/{recording_id}/files", list_files, methods=["GET"]),
    Route("/v1/recordings/{recording_id}/files", delete_files, methods=["DELETE"]),
    Route("/v1/recordings/{recording_id}/files/{index:int}", get_file, methods=["GET"]),
    Route("/v1/recordings/{recording_id}/files/{index:int}/metadata", get_metadata, methods=["GET"]),
]
