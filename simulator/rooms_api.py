"""The ``/rooms`` ASGI endpoint (Rooms API, azure-communication-rooms 1.2.0): HMAC over the percent-*decoded*
target, api-version, faults, repeatable create, the log.

Choices where the reference found nothing:

- ``api-version`` must be one the SDK knows (2023-06-14, 2024-04-15, 2025-03-13), else 400
  ``UnsupportedApiVersion`` (missing: 400 ``MissingApiVersionParameter``; Azure's usual codes). So the SDK's
  page-2 bug (``api-version=ApiVersion.V2025_03_13`` when the client was built without ``api_version="2025-03-13"``)
  fails here, as the worst case of the unknown real answer: build ``RoomsClient(..., api_version="2025-03-13")``.
- A bad signature is 401 ``Denied`` "Denied by the resource provider." (the ACS gateway's answer on other
  data-plane APIs).
- Repeatable create (``Repeatability-Request-ID`` + ``Repeatability-First-Sent``, the rules ACS documents for
  Email): the ID must be a UUID and First-Sent an IMF-fixdate (else 400); First-Sent more than 5 minutes ago → 412
  ``PreconditionFailed``; the same ID with another body → 400; a repeat replays the first 201 byte for byte —
  ``Repeatability-Result: accepted`` included (the OASIS repeatable-requests rule: the original response is
  returned) — and creates nothing. Only successes are kept: a failed create runs again on a repeat.
- Injected faults (``/_sim/faults``) apply as for ``/calling``: rejections as 429 ``TooManyRequests`` (with
  ``Retry-After``) or 500/503, and ``execute_then_fail*`` for the operations createRoom, updateRoom, deleteRoom
  and updateRoomParticipants.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from starlette.types import Receive, Scope, Send

from . import rooms
from .errors import AcsError
from .faults import Throttled
from .hmac_auth import verify
from .model import utc_now
from .records import StoredResponse
from .rooms import RoomsError
from .runtime import Runtime
from .wire import Headers, drop, json_response, read_body, send_response

REPEATABILITY_WINDOW_S = 300.0
_SUPPORTED = (b"api-supported-versions", ", ".join(rooms.API_VERSIONS).encode())
_MUTATING = {"createRoom", "updateRoom", "deleteRoom", "updateRoomParticipants"}


class RoomsEndpoint:
    """Serves ``/rooms`` and everything under it (an ASGI app, so Starlette passes the raw scope through)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Authenticate, route, execute, answer."""
        rt: Runtime = scope["state"]["runtime"]
        method = scope["method"]
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").partition("?")[0]
        query = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        body = await read_body(receive)
        echo: Headers = (_SUPPORTED, (b"ms-cv", uuid.uuid4().hex[:22].encode()))
        if "x-ms-client-request-id" in headers:
            echo += ((b"x-ms-client-request-id", headers["x-ms-client-request-id"].encode("latin-1")),)
        target = unquote(f"{raw_path}?{query}" if query else raw_path)  # the Rooms SDK signs the decoded target
        if not verify(rt.settings.key_bytes, method, target, headers, body, now_s=time.time(),
                      max_skew_s=rt.settings.max_clock_skew_s):
            denied = RoomsError(401, "Denied", "Denied by the resource provider.")
            return await send_response(send, _error(denied, echo))
        rt.log.requests_seen += 1
        if rt.faults.knobs.latency_ms > 0:
            await asyncio.sleep(rt.faults.knobs.latency_ms / 1000.0)
        rejection = rt.faults.admit(time.monotonic())
        rt.log.arrived(method, unquote(raw_path), rejection.status if rejection is not None else None)
        try:
            if rejection is not None:
                raise _as_rooms_error(rejection)
            operation, room_id = _route(method, unquote(raw_path))
            params = dict(parse_qsl(query))
            _check_version(params.get("api-version"))
            parsed = _json_body(body) if method in ("POST", "PATCH") else None
        except RoomsError as exc:
            return await send_response(send, _error(exc, echo))
        request = _Request(rt, operation, room_id, params, parsed, headers, echo, _base_url(scope, headers))
        response, fault, executed = _run(request)
        if executed and 200 <= response.status < 300 and operation in _MUTATING:
            rt.log.add(method=method, path=unquote(raw_path), operation=operation, body=parsed,
                       call_connection_id=None, repeatability_id=headers.get("repeatability-request-id"),
                       status=response.status, fault=fault)
        if fault == "drop":
            return await drop(send)
        if fault == "503":
            response = _error(RoomsError(503, "ServiceUnavailable", "The service is temporarily unavailable."), echo)
        await send_response(send, response)


class _Request:
    """One routed Rooms request."""

    def __init__(self, rt: Runtime, operation: str, room_id: str | None, params: dict[str, str],
                 body: dict[str, Any] | None, headers: dict[str, str], echo: Headers, base_url: str) -> None:
        self.rt, self.operation, self.room_id, self.params = rt, operation, room_id, params
        self.body, self.headers, self.echo, self.base_url = body or {}, headers, echo, base_url


def _run(req: _Request) -> tuple[StoredResponse, str | None, bool]:
    """Execute (synchronously: nothing interleaves with the state change): the response, the execute_then_fail
    fault's verdict, and whether anything executed (a replayed create did not: no fault, no log entry)."""
    try:
        if req.operation == "createRoom":
            response, executed = _create(req)
        else:
            response, executed = json_response(*_HANDLERS[req.operation](req), req.echo), True
    except RoomsError as exc:
        return _error(exc, req.echo), None, False
    if not executed:
        return response, None, False
    return response, req.rt.faults.fail_after_execute(req.operation, mutating=req.operation in _MUTATING), True


def _create(req: _Request) -> tuple[StoredResponse, bool]:
    cache, request_id = req.rt.rooms_cache, _repeatability(req.headers)
    fingerprint = hashlib.sha256(json.dumps(req.body, sort_keys=True).encode()).hexdigest()
    if request_id is not None:
        first = cache.get(request_id)
        if first is not None:
            if first.fingerprint != fingerprint:
                raise rooms.bad_request("The Repeatability-Request-ID was already used with a different request.")
            return first, False
    room = rooms.create(req.rt.sim.store, req.body, utc_now())
    headers = req.echo + ((b"location", room.room_id.encode()),)
    if request_id is not None:
        headers += ((b"repeatability-result", b"accepted"),)
    response = json_response(201, rooms.room_json(room), headers)
    if request_id is not None:
        cache.put(request_id, StoredResponse(response.status, response.headers, response.body, fingerprint))
    return response, True


def _repeatability(headers: dict[str, str]) -> str | None:
    request_id = headers.get("repeatability-request-id")
    if request_id is None:
        return None
    try:
        uuid.UUID(request_id)
    except ValueError:
        raise rooms.bad_request("The Repeatability-Request-ID header must be a UUID.") from None
    first_sent = headers.get("repeatability-first-sent")
    if not first_sent:
        raise rooms.bad_request("The Repeatability-First-Sent header is required with Repeatability-Request-ID.")
    try:
        sent_at = parsedate_to_datetime(first_sent)
    except (TypeError, ValueError, IndexError):
        raise rooms.bad_request("The Repeatability-First-Sent header must be an HTTP date "
                                "(e.g. Wed, 25 Nov 2026 10:12:23 GMT).") from None
    if sent_at.tzinfo is None or (utc_now() - sent_at).total_seconds() > REPEATABILITY_WINDOW_S:
        raise RoomsError(412, "PreconditionFailed",
                         "Repeatability-First-Sent is older than the 5 minute repeatability window.")
    return request_id


def _get(req: _Request) -> tuple[int, dict[str, Any] | None]:
    return 200, rooms.room_json(rooms.find(req.rt.sim.store, req.room_id or ""))


def _update(req: _Request) -> tuple[int, dict[str, Any] | None]:
    room = rooms.find(req.rt.sim.store, req.room_id or "")
    return 200, rooms.room_json(rooms.update(room, req.body, utc_now()))


def _delete(req: _Request) -> tuple[int, dict[str, Any] | None]:
    room = rooms.find(req.rt.sim.store, req.room_id or "")
    del req.rt.sim.store.rooms[room.room_id]  # a running call goes on; the room can no longer be joined
    return 204, None


def _list(req: _Request) -> tuple[int, dict[str, Any] | None]:
    newest_first = sorted(req.rt.sim.store.rooms.values(), key=lambda r: r.seq, reverse=True)
    items = [rooms.room_json(r) for r in newest_first]
    return 200, _page(req, items, f"{req.base_url}/rooms")


def _participants(req: _Request) -> tuple[int, dict[str, Any] | None]:
    room = rooms.find(req.rt.sim.store, req.room_id or "")
    items: list[dict[str, Any]] = [{"rawId": r, "role": role} for r, role in (room.participants or {}).items()]
    return 200, _page(req, items, f"{req.base_url}/rooms/{quote(room.room_id)}/participants")


def _update_participants(req: _Request) -> tuple[int, dict[str, Any] | None]:
    rooms.update_participants(rooms.find(req.rt.sim.store, req.room_id or ""), req.body)
    return 200, {}


def _page(req: _Request, items: list[dict[str, Any]], next_base: str) -> dict[str, Any]:
    offset = rooms.offset_of(req.params.get("nextLink"), items)
    return rooms.page(items, offset=offset, size=req.rt.faults.knobs.rooms_page_size, next_base=next_base,
                      version=req.params["api-version"])


_HANDLERS = {
    "getRoom": _get,
    "updateRoom": _update,
    "deleteRoom": _delete,
    "listRooms": _list,
    "listRoomParticipants": _participants,
    "updateRoomParticipants": _update_participants,
}


def _route(method: str, path: str) -> tuple[str, str | None]:
    parts = path.rstrip("/").split("/")[2:]  # after "", "rooms"
    table: dict[tuple[int, str], str] = {
        (0, "POST"): "createRoom", (0, "GET"): "listRooms",
        (1, "GET"): "getRoom", (1, "PATCH"): "updateRoom", (1, "DELETE"): "deleteRoom",
        (2, "GET"): "listRoomParticipants", (2, "PATCH"): "updateRoomParticipants",
    }
    if len(parts) > 2 or (len(parts) == 2 and parts[1] != "participants"):
        raise RoomsError(404, "NotFound", f"No Rooms API resource at {path}.")
    operation = table.get((len(parts), method))
    if operation is None:
        raise RoomsError(405, "MethodNotAllowed", f"{method} is not allowed on {path}.")
    return operation, parts[0] if parts else None


def _check_version(version: str | None) -> None:
    if not version:
        raise RoomsError(400, "MissingApiVersionParameter",
                         "The api-version query parameter (?api-version=) is required for all requests.")
    if version not in rooms.API_VERSIONS:
        raise RoomsError(400, "UnsupportedApiVersion",
                         f"The HTTP resource does not support the API version '{version}'. "
                         f"Supported versions: {', '.join(rooms.API_VERSIONS)}.")


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        parsed = json.loads(body) if body.strip() else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise RoomsError(400, "BadRequest", rooms.MALFORMED) from None
    if not isinstance(parsed, dict):
        raise RoomsError(400, "BadRequest", rooms.MALFORMED)
    return parsed


def _base_url(scope: Scope, headers: dict[str, str]) -> str:
    # nextLink is absolute (as ACS's); built from the Host the client used, so it works behind any name or port.
    return f"{scope.get('scheme', 'http')}://{headers.get('host', 'localhost')}"


def _as_rooms_error(error: AcsError) -> RoomsError:
    if isinstance(error, Throttled):
        return RoomsError(429, "TooManyRequests", "Too many requests.", retry_after_s=error.retry_after_s)
    return RoomsError(error.status, "InternalServerError" if error.status == 500 else "ServiceUnavailable",
                      "The service is temporarily unavailable.")


def _error(error: RoomsError, headers: Headers) -> StoredResponse:
    headers += ((b"x-ms-error-code", error.code.encode()),)
    if error.retry_after_s is not None:
        headers += ((b"retry-after", f"{error.retry_after_s:g}".encode()),)
    return json_response(error.status, error.body(), headers)
