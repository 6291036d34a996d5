"""The ``/calling/...`` ASGI endpoint: HMAC auth, injected faults, repeatability, execution, the log."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote

from starlette.types import Receive, Scope, Send

from .errors import AcsError, invalid_request, not_supported, unauthenticated
from .faults import Throttled
from .hmac_auth import verify
from .operation import Req
from .records import StoredResponse
from .routing import OPERATIONS, Match, Operation, resolve
from .runtime import Runtime
from .wire import Headers, drop, json_response, read_body, send_response

EARLY_DELIVERY_TIMEOUT_S = 10.0
_KEYS_PATH = "/calling/keys"
_OPENID_PATH = "/calling/.well-known/acsopenidconfiguration"


@dataclass(frozen=True)
class _Incoming:
    method: str
    raw_path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    echo: Headers  # response headers every answer carries


async def acs_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one ACS request (mounted at ``/calling``; ``raw_path`` keeps the SDK's percent-encoding)."""
    rt: Runtime = scope["state"]["runtime"]
    method = scope["method"]
    raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1").partition("?")[0]
    if method == "GET" and raw_path in (_KEYS_PATH, _OPENID_PATH):  # public, like ACS's own
        doc = rt.signer.jwks() if raw_path == _KEYS_PATH else rt.signer.openid_configuration()
        return await send_response(send, json_response(200, doc, ()))
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    request_id = headers.get("x-ms-client-request-id")
    echo: Headers = ((b"x-ms-client-request-id", request_id.encode("latin-1")),) if request_id else ()
    query = scope.get("query_string", b"").decode("latin-1")
    incoming = _Incoming(method, raw_path, query, headers, await read_body(receive), echo)
    target = f"{raw_path}?{query}" if query else raw_path
    settings = rt.settings
    if not verify(settings.key_bytes, method, target, headers, incoming.body, now_s=time.time(),
                  max_skew_s=settings.max_clock_skew_s):
        return await send_response(send, _error_response(unauthenticated(), echo))
    rt.log.requests_seen += 1
    if rt.faults.knobs.latency_ms > 0:
        await asyncio.sleep(rt.faults.knobs.latency_ms / 1000.0)
    rejection = rt.faults.admit(time.monotonic())
    rt.log.arrived(method, raw_path, rejection.status if rejection is not None else None)
    if rejection is not None:
        return await send_response(send, _error_response(rejection, echo))
    match = resolve(method, raw_path)
    if match is None:
        unknown = AcsError(404, "NotFound", f"No ACS operation at {raw_path}")
        return await send_response(send, _error_response(unknown, echo))
    if not match.operation:
        return await send_response(send, _error_response(not_supported(f"{method} {raw_path}"), echo))
    await _run_operation(rt, send, OPERATIONS[match.operation], match, incoming)


async def _run_operation(rt: Runtime, send: Any, op: Operation, match: Match, incoming: _Incoming) -> None:
    repeat_id = incoming.headers.get("repeatability-request-id")
    if repeat_id:
        first = rt.cache.get(repeat_id)
        if first is not None:  # a repeat: answer as the first time, execute nothing, send no events
            return await send_response(send, first)
        if not incoming.headers.get("repeatability-first-sent"):
            error = invalid_request("Repeatability-First-Sent is required with Repeatability-Request-ID")
            return await send_response(send, _error_response(error, incoming.echo))
    response, parsed, cc, acks = _execute(rt, op, match, incoming, repeat_id)
    if repeat_id:
        rt.cache.put(repeat_id, response)
    fault = None
    if 200 <= response.status < 300:
        fault = rt.faults.fail_after_execute(op.name, mutating=op.mutating)
        if op.mutating:
            rt.log.add(method=incoming.method, path=unquote(incoming.raw_path), operation=op.name, body=parsed,
                       call_connection_id=cc, repeatability_id=repeat_id, status=response.status, fault=fault)
    if acks:  # early_delivery: the events reach their target before the response leaves
        try:
            await asyncio.wait_for(asyncio.gather(*acks), EARLY_DELIVERY_TIMEOUT_S)
        except TimeoutError:
            pass
    if fault == "drop":
        return await drop(send)
    if fault == "503":
        response = _error_response(AcsError(503, "9999", "Unknown internal server error."), incoming.echo)
    await send_response(send, response)


def _execute(
    rt: Runtime, op: Operation, match: Match, incoming: _Incoming, repeat_id: str | None
) -> tuple[StoredResponse, Any, str | None, list[asyncio.Future[None]]]:
    """Run the handler synchronously, so no other request interleaves with its state change."""
    parsed: Any = None
    rt.sim.begin_request()
    try:
        parsed = _parse_json(incoming.body)
        req = Req(match.call_connection_id, match.recording_id, match.participant_raw_id, parsed or {},
                  dict(parse_qsl(incoming.query)))
        reply = op.handler(rt.sim, req)
    except AcsError as exc:
        return _error_response(exc, incoming.echo), parsed, None, rt.sim.end_request()
    acks = rt.sim.end_request()
    headers = incoming.echo
    if repeat_id and op.repeatability_result:
        headers += ((b"repeatability-result", b"accepted"),)
    return json_response(reply.status, reply.body, headers), parsed, reply.call_connection_id, acks


def _parse_json(body: bytes) -> dict[str, Any] | None:
    if not body.strip():
        return None
    try:
        parsed = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_request("the body is not valid JSON") from None
    if not isinstance(parsed, dict):
        raise invalid_request("the body must be a JSON object")
    return parsed


def _error_response(error: AcsError, headers: Headers) -> StoredResponse:
    if isinstance(error, Throttled):
        headers += ((b"retry-after", f"{error.retry_after_s:g}".encode()),)
    return json_response(error.status, error.body(), headers)
