"""``/openapi.json`` built from the command table and the pydantic bodies, and a small ``/docs`` page."""

from __future__ import annotations

import html
import re
from functools import cache
from typing import Any

from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from api import schedules
from api.auth import IDEMPOTENCY_KEY
from api.routes import COMMANDS
from api.schedule_schemas import ScheduleBody

_ERROR = {"$ref": "#/components/schemas/Error"}
_COMMAND = {"$ref": "#/components/schemas/Command"}
_COMMAND_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["id", "type", "status", "links"],
    "properties": {
        "id": {"type": "string"}, "type": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "waiting", "succeeded", "failed"]},
        "call_connection_id": {"type": ["string", "null"]}, "room_id": {"type": ["string", "null"]},
        "recording_id": {"type": ["string", "null"]}, "attempts": {"type": "integer"},
        "created_at": {"type": "string"}, "updated_at": {"type": "string"},
        "resolved_at": {"type": ["string", "null"]}, "result": {"type": ["object", "null"]},
        "error": {"type": ["object", "null"]}, "resolved_by": {"type": ["object", "null"]},
        "links": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["error"],
    "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string"}, "message": {"type": "string"},
        "details": {"type": "array", "items": {"type": "object"}}}}},
}
_READS = [
    ("/v1/commands/{command_id}", "A command; ?wait=N (0-60) long-polls until it is terminal", _COMMAND),
    ("/v1/calls/{call_connection_id}", "The call as ACS sees it", {"type": "object"}),
    ("/v1/calls/{call_connection_id}/commands", "The call's commands in acceptance order", {"type": "object"}),
    ("/v1/calls/{call_connection_id}/events", "The call's ACS events (paged with ?after=)", {"type": "object"}),
    ("/v1/calls/{call_connection_id}/events/stream", "The call's events live, as Server-Sent Events "
     "(resumable with Last-Event-ID)", {"type": "string"}),
    ("/v1/calls/{call_connection_id}/participants", "Participants as ACS lists them", {"type": "object"}),
    ("/v1/calls/{call_connection_id}/participants/{raw_id}", "One participant", {"type": "object"}),
    ("/v1/recordings/{recording_id}", "A recording's state", {"type": "object"}),
]


_PATH_SCHEMAS = {"room_id": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"\S"}}


def _params(path: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    names = re.findall(r"{(\w+)}", path)
    return [{"name": n, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(n, {"type": "string"})}
            for n in names] + list(extra)


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}} for c in codes}


@cache
def document() -> dict[str, Any]:
    _, defs = models_json_schema([(spec.body, "validation") for spec in COMMANDS],
                                 ref_template="#/components/schemas/{model}")
    schemas = {**defs.get("$defs", {}), "Command": _COMMAND_SCHEMA, "Error": _ERROR_SCHEMA}
    idem = {"name": "Idempotency-Key", "in": "header", "required": True,
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern}}
    paths: dict[str, Any] = {}
    types = [spec.type for spec in COMMANDS]
    for spec in COMMANDS:
        paths.setdefault(spec.path, {})["post"] = {
            "operationId": spec.type if types.count(spec.type) == 1 else f"{spec.type}_by_{spec.scope}",
            "summary": spec.summary, "parameters": _params(spec.path, idem),
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{spec.body.__name__}"}}}},
            "responses": {"202": {"description": "accepted (or replayed)", "content": {
                "application/json": {"schema": _COMMAND}}}, **_errors(400, 401, 404, 409, 413, 415, 422)},
        }
    for path, summary, schema in _READS:
        wait = [{"name": "wait", "in": "query", "required": False, "schema": {"type": "number"}}] \
            if path.startswith("/v1/commands") else []
        paths.setdefault(path, {})["get"] = {
            "operationId": "get_" + path.strip("/").replace("/", "_").replace("{", "").replace("}", ""),
            "summary": summary, "parameters": _params(path, *wait),
            "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": schema}}},
                          **_errors(400, 401, 404, 422, 502)},
        }
    paths.update(schedules.openapi_paths(idem, _errors))
    _, schedule_defs = models_json_schema([(ScheduleBody, "validation")], ref_template="#/components/schemas/{model}")
    schemas.update(schedule_defs.get("$defs", {}))
    return {
        "openapi": "3.1.0",
        "info": {"title": "callq", "version": "1",
                 "description": "Exactly-once in-call commands for ACS Call Automation."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
        "paths": paths,
    }


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


async def docs(request: Request) -> Response:
    rows = "".join(
        f"<tr><td>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
        f"<td>{html.escape(op['summary'])}</td></tr>"
        for path, ops in document()["paths"].items() for method, op in ops.items())
    return HTMLResponse(f"<!doctype html><html><head><meta charset='utf-8'><title>callq API</title></head><body>"
                        f"<h1>callq API</h1><p>Machine-readable: <a href='/openapi.json'>/openapi.json</a>. "
                        f"Authenticate with <code>Authorization: Bearer &lt;key&gt;</code>; every POST needs an "
                        f"<code>Idempotency-Key</code>.</p><table border='1' cellpadding='4'>"
                        f"<tr><th>method</th><th>path</th><th>what</th></tr>{rows}</table></body></html>")
