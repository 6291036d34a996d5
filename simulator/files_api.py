"""The recording-file storage endpoints a RecordingFileStatusUpdated points at (rooms-and-eventgrid.md §4.1).

``GET {public_url}/recordings/{documentId}/content`` (the file, as ``audio/wav``, ``audio/mpeg``, ``video/mp4`` or
``audio/mp4``; one ``Range`` honoured: 206 with Content-Range, 416 past the end; 500 naming the reason when its
encoding failed), ``GET …/metadata`` (JSON) and ``DELETE …/delete`` (200; the file is gone after). Only
HMAC-signed requests are served, as the SDK's ``download_recording`` / ``delete_recording`` sign them: the storage
URL's path, the ACS resource's host (here the simulator's own: ``Host``), and an ``x-ms-host`` header; 401/7509
otherwise. An unknown or deleted document is 404.
"""

from __future__ import annotations

import json
import time
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from . import recording_files
from .errors import AcsError, unauthenticated
from .hmac_auth import verify
from .model import RecordingFile
from .runtime import Runtime


def _rt(request: Request) -> Runtime:
    return request.state.runtime  # type: ignore[no-any-return]  # Starlette state is untyped


def _error(error: AcsError) -> Response:
    return Response(json.dumps(error.body()), status_code=error.status, media_type="application/json")


async def _file(request: Request) -> RecordingFile:
    """The document the path names, for a correctly signed request; raises AcsError otherwise."""
    rt = _rt(request)
    raw_path = (request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
    query = request.scope.get("query_string", b"").decode("latin-1")
    headers = {k.lower(): v for k, v in request.headers.items()}
    if "x-ms-host" not in headers or not verify(
            rt.settings.key_bytes, request.method, f"{raw_path}?{query}" if query else raw_path, headers,
            await request.body(), now_s=time.time(), max_skew_s=rt.settings.max_clock_skew_s):
        raise unauthenticated()
    file = rt.sim.store.recording_files.get(request.path_params["document_id"])
    if file is None or file.deleted:
        raise AcsError(404, "NotFound", "The recording file does not exist (or was deleted).")
    return file


async def content(request: Request) -> Response:
    """The file, or the one byte range asked for."""
    try:
        file = await _file(request)
        if file.error is not None:  # the encoder failed: say why (ACS would have no such file to announce)
            raise AcsError(500, "InternalServerError", file.error)
    except AcsError as exc:
        return _error(exc)
    total = recording_files.size(file)
    wanted = recording_files.byte_range(request.headers.get("range"), total)
    headers = {"Accept-Ranges": "bytes"}
    if wanted == "unsatisfiable":
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{total}"})
    first, last = wanted if isinstance(wanted, tuple) else (0, total - 1)
    if isinstance(wanted, tuple):
        headers["Content-Range"] = f"bytes {first}-{last}/{total}"
    headers["Content-Length"] = str(last - first + 1)
    return StreamingResponse(recording_files.content(file, first, last),
                             status_code=206 if isinstance(wanted, tuple) else 200, headers=headers,
                             media_type=recording_files.media_type(file))


async def metadata(request: Request) -> Response:
    try:
        file = await _file(request)
    except AcsError as exc:
        return _error(exc)
    document = recording_files.metadata(file, _rt(request).settings.resource_id)
    return Response(json.dumps(document), media_type="application/json")


async def delete(request: Request) -> Response:
    """200; the document's content and metadata are gone (404) from now on."""
    try:
        file = await _file(request)
    except AcsError as exc:
        return _error(exc)
    file.deleted = True
    rt = _rt(request)
    rt.log.add(method="DELETE", path=unquote(request.url.path), operation="deleteRecordingFile", body=None,
               call_connection_id=file.recording.call_connection_id, repeatability_id=None, status=200, fault=None)
    return Response(status_code=200)


FILE_ROUTES = [
    Route("/recordings/{document_id}/content", content, methods=["GET"]),
    Route("/recordings/{document_id}/metadata", metadata, methods=["GET"]),
    Route("/recordings/{document_id}/delete", delete, methods=["DELETE"]),
]
