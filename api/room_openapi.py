"""The room and automation routes for ``/openapi.json`` (bodies from ``api.room_schemas``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api.automations import MAX_STEPS, STEP_SPECS
from api.room_schemas import ParticipantsBody, RemoveBody, RoomBody, RoomPatch

MODELS = (RoomBody, RoomPatch, ParticipantsBody, RemoveBody)
_ROOM = {"type": "object", "description": "A room: id (ACS's), valid_from, valid_until, pstn_dial_out_enabled, "
         "created_at, origin (created|adopted), managed_since, automation, call (server_call_id, state active|ended, "
         "started_at, ended_at, call_connection_id), links"}
_PARTICIPANTS = {"type": "object", "description": "items: each participant's communication_user and role"}
_RUNS = {"type": "object", "description": "items: each room call's run: id, server_call_id, call_connection_id, "
         "state (starting|running|succeeded|failed|ended), automation (room|client), steps (index, type, command_id, "
         "status), error; next: the following page"}
_AUTOMATION = {"type": "object", "required": ["on_call_started"], "additionalProperties": False, "properties": {
    "on_call_started": {"type": "array", "minItems": 1, "maxItems": MAX_STEPS, "items": {
        "type": "object", "required": ["type"], "additionalProperties": False, "properties": {
            "type": {"type": "string", "enum": sorted(STEP_SPECS)},
            "body": {"type": "object", "description": "the body of that command type's route"}}}}},
    "description": "The first step is connect, and only the first."}
_PAGE = [{"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1,
                                                                         "maximum": 100}},
         {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}}]
_ACS = {"4XX": {"description": "ACS refused the request (acs_error with ACS's status)",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}


def openapi_paths(idem: dict[str, Any], errors: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    room = {"name": "room_id", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": 128, "pattern": "^[!-.0-~]+$"}}

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    def ok(status: str, what: str, schema: dict[str, Any] | None, *codes: int, acs: bool = False) -> dict[str, Any]:
        answer: dict[str, Any] = {"description": what}
        if schema is not None:
            answer["content"] = {"application/json": {"schema": schema}}
        return {status: answer, **(_ACS if acs else {}), **errors(*codes, *((502,) if acs else ()))}

    def ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    return {
        "/v1/rooms": {
            "post": {"operationId": "create_room", "summary": "Create a room at ACS (exactly once per key)",
                     "parameters": [idem], "requestBody": body(ref("RoomBody")),
                     "responses": ok("201", "created (or replayed)", _ROOM, 400, 401, 409, 413, 415, 422, acs=True)},
            "get": {"operationId": "list_rooms", "summary": "Your rooms, by id", "parameters": _PAGE,
                    "responses": ok("200", "a page", {"type": "object"}, 401, 422)}},
        "/v1/rooms/{room_id}": {
            "get": {"operationId": "get_room", "summary": "A room, as ACS has it now", "parameters": [room],
                    "responses": ok("200", "the room", _ROOM, 401, 404, acs=True)},
            "put": {"operationId": "adopt_room", "summary": "Manage a room created elsewhere", "parameters": [room],
                    "responses": {**ok("200", "already yours", _ROOM, 401, 404, 409, acs=True),
                                  "201": {"description": "adopted", "content": {"application/json": {
                                      "schema": _ROOM}}}}},
            "patch": {"operationId": "update_room", "summary": "Change a room's window or dial-out flag",
                      "parameters": [room], "requestBody": body(ref("RoomPatch")),
                      "responses": ok("200", "the room", _ROOM, 400, 401, 404, 413, 415, 422, acs=True)},
            "delete": {"operationId": "delete_room", "summary": "Delete a room at ACS and in callq",
                       "parameters": [room], "responses": ok("204", "deleted", None, 401, 404, acs=True)}},
        "/v1/rooms/{room_id}/participants": {
            "get": {"operationId": "list_room_participants", "summary": "The room's participants",
                    "parameters": [room], "responses": ok("200", "participants", _PARTICIPANTS, 401, 404, acs=True)},
            "put": {"operationId": "put_room_participants", "summary": "Add participants or change their roles",
                    "parameters": [room], "requestBody": body(ref("ParticipantsBody")),
                    "responses": ok("200", "participants after", _PARTICIPANTS, 400, 401, 404, 413, 415, 422,
                                    acs=True)}},
        "/v1/rooms/{room_id}/participants/remove": {
            "post": {"operationId": "remove_room_participants", "summary": "Remove participants",
                     "parameters": [room], "requestBody": body(ref("RemoveBody")),
                     "responses": ok("200", "participants after", _PARTICIPANTS, 400, 401, 404, 413, 415, 422,
                                     acs=True)}},
        "/v1/rooms/{room_id}/automation": {
            "put": {"operationId": "put_room_automation", "summary": "What callq does when the room's call starts",
                    "parameters": [room], "requestBody": body(_AUTOMATION),
                    "responses": ok("200", "the automation", {"type": "object"}, 400, 401, 404, 413, 415, 422)},
            "get": {"operationId": "get_room_automation", "summary": "The room's automation", "parameters": [room],
                    "responses": ok("200", "the automation", {"type": "object"}, 401, 404)},
            "delete": {"operationId": "delete_room_automation", "summary": "Remove the room's automation",
                       "parameters": [room], "responses": ok("204", "removed", None, 401, 404)}},
        "/v1/rooms/{room_id}/automation/runs": {
            "get": {"operationId": "list_room_automation_runs", "summary": "One run per room call",
                    "parameters": [room, _PAGE[1]], "responses": ok("200", "a page of runs", _RUNS, 401, 404, 422)}},
        "/v1/rooms/{room_id}/events": {
            "get": {"operationId": "list_room_events", "summary": "The room's Event Grid events (CloudEvents form)",
                    "parameters": [room, _PAGE[1]],
                    "responses": ok("200", "a page of events", {"$ref": "#/components/schemas/EventPage"}, 401, 404,
                                    422)}},
        "/v1/automation": {
            "put": {"operationId": "put_client_automation", "summary": "Your default automation, for rooms "
                    "without one", "requestBody": body(_AUTOMATION),
                    "responses": ok("200", "the automation", {"type": "object"}, 400, 401, 413, 415, 422)},
            "get": {"operationId": "get_client_automation", "summary": "Your default automation",
                    "responses": ok("200", "the automation", {"type": "object"}, 401, 404)},
            "delete": {"operationId": "delete_client_automation", "summary": "Remove your default automation",
                       "responses": ok("204", "removed", None, 401)}},
    }
