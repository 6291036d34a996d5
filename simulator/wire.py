"""Raw ASGI plumbing the ACS-facing endpoints share: read a body, send a stored response, drop a connection."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Receive, Send

from .records import StoredResponse

Headers = tuple[tuple[bytes, bytes], ...]
JSON_TYPE = (b"content-type", b"application/json; charset=utf-8")


async def read_body(receive: Receive) -> bytes:
    """The whole request body."""
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def json_response(status: int, body: dict[str, Any] | None, headers: Headers) -> StoredResponse:
    """A JSON answer (no body for 204, nor for ``body=None``)."""
    if status == 204:  # never a body with a 204: the SDK would misread the next keep-alive response
        return StoredResponse(204, headers, b"")
    if body is None:
        return StoredResponse(status, headers + ((b"content-length", b"0"),), b"")
    data = json.dumps(body, separators=(",", ":")).encode()
    return StoredResponse(status, headers + (JSON_TYPE, (b"content-length", str(len(data)).encode())), data)


async def send_response(send: Send, response: StoredResponse) -> None:
    """Send ``response`` as it is."""
    await send({"type": "http.response.start", "status": response.status, "headers": list(response.headers)})
    await send({"type": "http.response.body", "body": response.body})


async def drop(send: Send) -> None:
    """Lose the response: the client fails reading it, as if the connection had dropped."""
    # ASGI cannot abort a connection outright; a response that promises a body and ends without it makes
    # the server close the connection, and the client fails reading it, as if the connection had dropped.
    await send({"type": "http.response.start", "status": 503, "headers": [(b"content-length", b"64")]})
