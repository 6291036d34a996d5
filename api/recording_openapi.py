"""The recording-file routes for ``/openapi.json`` (responses from ``api.resources``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from api.resources import RecordingFilePage

MODELS: tuple[type[BaseModel], ...] = (RecordingFilePage,)
_RID = {"name": "recording_id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[^/]+$"}}
_INDEX = {"name": "index", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0}}
_RANGE = [{"name": "Range", "in": "header", "required": False, "schema": {"type": "string"},
           "description": "one byte range: bytes=first-last, bytes=first- or bytes=-count (others are ignored)"},
          {"name": "If-Range", "in": "header", "required": False, "schema": {"type": "string"},
           "description": "callq has no validators to match: with If-Range the whole file is sent"}]
_BINARY = {"type": "string", "format": "binary"}
_MEDIA = ("audio/wav", "audio/mpeg", "video/mp4", "application/octet-stream")
_CONTENT_RANGE = {"Content-Range": {"required": True, "schema": {"type": "string"},
                                    "description": "bytes first-last/length"}}
_ACS = {"4XX": {"description": "ACS refused the request (acs_error with ACS's status)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}
_PAGE = {"description": "the recording's files", "content": {"application/json": {"schema": {
    "$ref": "#/components/schemas/RecordingFilePage"}}}}


def openapi_paths(errors: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    content = {media: {"schema": _BINARY} for media in _MEDIA}
    fetch = {**_ACS, **errors(401, 404, 409, 429, 502)}  # 409: a location callq does not fetch from
    return {
        "/v1/recordings/{recording_id}/files": {
            "get": {"operationId": "list_recording_files", "summary": "The files ACS announced for a recording "
                    "(none until RecordingFileStatusUpdated came)", "parameters": [_RID],
                    "responses": {"200": _PAGE, **errors(401, 404)}},
            "delete": {"operationId": "delete_recording_files", "summary": "Delete the recording's files at ACS",
                       "parameters": [_RID], "responses": {"200": _PAGE, **fetch}}},
        "/v1/recordings/{recording_id}/files/{index}": {
            "get": {"operationId": "get_recording_file", "summary": "A file's content, streamed from ACS (one "
                    "Range: 206)", "parameters": [_RID, _INDEX, *_RANGE], "responses": {
                        "200": {"description": "the whole file", "content": content},
                        "206": {"description": "the range asked for", "headers": _CONTENT_RANGE, "content": content},
                        "416": {"description": "the range starts past the end (range_not_satisfiable)",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                        **fetch}}},
        "/v1/recordings/{recording_id}/files/{index}/metadata": {
            "get": {"operationId": "get_recording_file_metadata", "summary": "A file's metadata document, as ACS "
                    "keeps it", "parameters": [_RID, _INDEX], "responses": {
                        "200": {"description": "ACS's metadata JSON", "content": {"application/json": {
                            "schema": {"type": "object"}}}}, **fetch}}},
    }
