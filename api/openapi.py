"""``/openapi.json`` built from the command table and the pydantic bodies, and a small ``/docs`` page."""

from __future__ import annotations

import html
import re
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from api import recording_openapi, resources, room_openapi, schedules, webhook_openapi
from api.auth import IDEMPOTENCY_KEY
from api.routes import COMMANDS, CommandSpec
from api.schedule_schemas import ScheduleBody
from workers.settings import Settings

_ERROR = {"$ref": "#/components/schemas/Error"}
_COMMAND = {"$ref": "#/components/schemas/Command"}
# callq's ids (and ACS's) never hold a "/": a value with one would be another route's path.
_ID = {"type": "string", "pattern": "^[^/]+$"}
_PATH_SCHEMAS = {"room_id": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[^/]*[!-.0-~][^/]*$"}}
_RETRY_AFTER = {"Retry-After": {"required": True, "description": "seconds to wait before trying again",
                                "schema": {"type": "integer", "minimum": 1}}}
_GET_COMMAND = "get_v1_commands_command_id"
WAIT_MAX_S = Settings.wait_max_s


def _ref(model: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model}"}


# path, summary, response schema, whether it asks ACS (and so may be throttled: 429, or fail upstream: 502).
_READS = [
    ("/v1/commands/{command_id}", "A command; ?wait=N (0-60) long-polls until it is terminal", _COMMAND, False),
    ("/v1/calls/{call_connection_id}", "The call as ACS sees it", _ref("Call"), True),
    ("/v1/calls/{call_connection_id}/commands", "The call's commands in acceptance order", _ref("CommandPage"), False),
    ("/v1/calls/{call_connection_id}/events", "The call's ACS events (paged with ?after=)", _ref("EventPage"), False),
    ("/v1/calls/{call_connection_id}/participants", "Participants as ACS lists them", _ref("ParticipantPage"), True),
    ("/v1/calls/{call_connection_id}/participants/{raw_id}", "One participant", _ref("CallParticipant"), True),
    ("/v1/recordings/{recording_id}", "A recording: its state at ACS and its files", _ref("Recording"), True),
]
_STREAM = "/v1/calls/{call_connection_id}/events/stream"
# One Server-Sent Event: id (the event's seq, for Last-Event-ID), event (its short type), data (the event as JSON).
_SSE_EVENT = {"type": "object", "required": ["id", "event", "data"], "properties": {
    "id": {"type": "string"}, "event": {"type": "string"},
    "data": {"type": "string", "contentMediaType": "application/json"}}}


def _op_id(path: str) -> str:
    return "get_" + path.strip("/").replace("/", "_").replace("{", "").replace("}", "")


def _params(path: str, *extra: dict[str, Any]) -> list[dict[str, Any]]:
    names = re.findall(r"{(\w+)}", path)
    return [{"name": n, "in": "path", "required": True, "schema": _PATH_SCHEMAS.get(n, _ID)}
            for n in names] + list(extra)


def _errors(*codes: int) -> dict[str, Any]:
    return {str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}},
                     **({"headers": _RETRY_AFTER} if c == 429 else {})} for c in codes}


def _links(source: str, *, to: str) -> dict[str, Any]:
    """OpenAPI links from a response holding an id at ``source`` (a JSON pointer) to every route taking it as ``to``."""
    found: dict[str, Any] = {}
    for path, ops in _operations().items():
        if "{" + to + "}" not in path or path.count("{") != 1:
            continue
        for method, op in ops:
            found[op] = {"operationId": op, "parameters": {to: f"$response.body#{source}"},
                         "description": f"{method.upper()} {path} for this response's {to}"}
    return found


@cache
def _operations() -> dict[str, list[tuple[str, str]]]:
    """Every (method, operationId) by path, before the document is built (links point at them)."""
    types = [spec.type for spec in COMMANDS]
    ops: dict[str, list[tuple[str, str]]] = {}
    for spec in COMMANDS:
        ops.setdefault(spec.path, []).append(("post", _command_op_id(spec, types)))
    for path, *_ in _READS:
        ops.setdefault(path, []).append(("get", _op_id(path)))
    ops.setdefault(_STREAM, []).append(("get", _op_id(_STREAM)))
    return ops


def _command_op_id(spec: CommandSpec, types: list[str]) -> str:
    return spec.type if types.count(spec.type) == 1 else f"{spec.type}_by_{spec.scope}"


def _command_links(spec: CommandSpec) -> dict[str, Any]:
    # A connect's (or start_recording's) 202 has no call (recording) id yet: ACS makes it. The command it
    # returns carries the id once ACS has answered, so these links lead through GET /v1/commands/{id}.
    own = {"get_command": {"operationId": _GET_COMMAND, "parameters": {"command_id": "$response.body#/id"},
                           "description": "the command, long-polled with ?wait= until ACS has answered"}}
    if spec.scope == "call":
        own.update(_links("/call_connection_id", to="call_connection_id"))
    if spec.scope == "recording":
        own.update(_links("/recording_id", to="recording_id"))
    return own


def _needs_body(model: type[BaseModel]) -> bool:
    """A route whose body has required fields (or a choice to make) refuses an empty body: it is required."""
    try:
        model.model_validate({})
    except ValidationError:
        return True
    return False


def _command_ops(idem: dict[str, Any]) -> dict[str, Any]:
    types = [spec.type for spec in COMMANDS]
    paths: dict[str, Any] = {}
    for spec in COMMANDS:
        paths.setdefault(spec.path, {})["post"] = {
            "operationId": _command_op_id(spec, types),
            "summary": spec.summary, "parameters": _params(spec.path, idem),
            "requestBody": {"required": _needs_body(spec.body),
                            "content": {"application/json": {"schema": _ref(spec.body.__name__)}}},
            "responses": {"202": {"description": "accepted (or replayed)", "headers": {"Location": {
                "description": "the command's URL", "schema": {"type": "string"}}},
                "content": {"application/json": {"schema": _COMMAND}}, "links": _command_links(spec)},
                **_errors(400, 401, 404, 409, 413, 415, 422, 429)},  # 429: the door (too_many_pending, ...)
        }
    return paths


def _read_ops() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for path, summary, schema, asks_acs in _READS:
        wait = [{"name": "wait", "in": "query", "required": False,
                 "schema": {"type": "number", "minimum": 0, "maximum": WAIT_MAX_S}}] \
            if path == "/v1/commands/{command_id}" else []
        response: dict[str, Any] = {"description": "ok", "content": {"application/json": {"schema": schema}}}
        if path == "/v1/commands/{command_id}":
            response["links"] = {**_links("/call_connection_id", to="call_connection_id"),
                                 **_links("/recording_id", to="recording_id")}
        # ACS's own 4xx answers (404 unknown call, 400 bad state …) pass through as acs_error.
        acs = {"4XX": {"description": "ACS refused the read (acs_error with ACS's status)",
                       "content": {"application/json": {"schema": _ERROR}}}, **_errors(429, 502)} if asks_acs else {}
        paths.setdefault(path, {})["get"] = {
            "operationId": _op_id(path), "summary": summary, "parameters": _params(path, *wait),
            "responses": {"200": response, **acs, **_errors(401, 404, 422)}}
    paths[_STREAM] = {"get": {
        "operationId": _op_id(_STREAM), "summary": "The call's events live, as Server-Sent Events (resumable with "
        "Last-Event-ID); the stream ends after CallDisconnected", "parameters": _params(_STREAM),
        "responses": {"200": {"description": "an event stream", "content": {"text/event-stream": {
            "schema": _SSE_EVENT}}}, **_errors(401, 404)}}}
    return paths


def _merged(*groups: dict[str, Any]) -> dict[str, Any]:
    """Paths from each group, a path's operations (a POST here, a GET there) gathered under it."""
    paths: dict[str, Any] = {}
    for group in groups:
        for path, ops in group.items():
            paths.setdefault(path, {}).update(ops)
    return paths


@cache
def document() -> dict[str, Any]:
    bodies: tuple[type[BaseModel], ...] = (ScheduleBody, *room_openapi.MODELS, *webhook_openapi.MODELS)
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        *((spec.body, "validation") for spec in COMMANDS), *((model, "validation") for model in bodies),
        *((model, "serialization") for model in (*resources.MODELS, *webhook_openapi.RESPONSE_MODELS,
                                                 *recording_openapi.MODELS))]
    _, defs = models_json_schema(models, ref_template="#/components/schemas/{model}")
    idem = {"name": "Idempotency-Key", "in": "header", "required": True,
            "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY.pattern}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "callq", "version": "1",
                 "description": "Exactly-once in-call commands for ACS Call Automation."},
        "components": {"schemas": defs.get("$defs", {}),
                       "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}}},
        "security": [{"apiKey": []}],
        "paths": _merged(_command_ops(idem), _read_ops(), schedules.openapi_paths(idem, _errors),
                         room_openapi.openapi_paths(idem, _errors), webhook_openapi.openapi_paths(idem, _errors),
                         recording_openapi.openapi_paths(_errors)),
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
