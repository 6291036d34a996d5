"""Python clients of callq's HTTP API: ``Client`` (sync) and ``AsyncClient``, on httpx.

    with Client("http://127.0.0.1:8000", api_key) as callq:
        cmd = callq.connect(room_id)
        done = callq.wait(cmd["id"])            # long-polls until succeeded or failed
        callq.hang_up(done["call_connection_id"])

Every POST that needs an Idempotency-Key gets one made once per call (or the ``idempotency_key=`` given) and sent
again unchanged on each retry, so a retry after a lost answer returns the command the first try made. Connection
errors, 429 (honouring Retry-After, capped) and 503 are retried a few times with jittered backoff; other errors
raise ``CallqAPIError`` at once.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import httpx

from callq._client_base import (
    COMMAND_PATHS,
    JSON,
    STREAM_READ_TIMEOUT_S,
    CallqAPIError,
    CallqClientError,
    CallqConnectionError,
    CommandType,
    Methods,
    Op,
    RetryPolicy,
    SseParser,
    _seg,
    body_of,
    error_from,
    file_op,
    is_disconnect,
    is_terminal,
    sse_headers,
    wait_op,
)
from callq.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "COMMAND_PATHS", "AsyncClient", "CallqAPIError", "CallqClientError", "CallqConnectionError", "Client",
    "CommandType", "RetryPolicy", "WebhookVerificationError", "verify_webhook",
]

DEFAULT_TIMEOUT_S = 30.0


def _headers(op: Op) -> dict[str, str]:
    # Made here, once per logical call, before the retry loop: every try carries the same key.
    extra = dict(op.headers)
    return {"Idempotency-Key": op.key or str(uuid.uuid4()), **extra} if op.keyed else extra


def _request_args(op: Op, headers: dict[str, str]) -> dict[str, Any]:
    return {"json": op.json, "params": dict(op.params) or None, "headers": headers,
            "timeout": op.timeout_s if op.timeout_s is not None else httpx.USE_CLIENT_DEFAULT}


def _unreachable(base_url: str, exc: Exception) -> CallqConnectionError:
    return CallqConnectionError(f"cannot reach the callq API at {base_url}: {exc.__class__.__name__}: {exc}")


class Client(Methods[JSON, list[JSON]]):
    """Synchronous client; use as a context manager, or call ``close()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.BaseTransport | None = None, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> None:
        self._http = httpx.Client(base_url=base_url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {api_key}"})
        self._timeout_s, self._retry, self._sleep, self._clock = timeout, retry or RetryPolicy(), sleep, clock

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, op: Op) -> httpx.Response:
        headers = _headers(op)
        for attempt in itertools.count():
            try:
                resp = self._http.request(op.method, op.path, **_request_args(op, headers))
            except httpx.TransportError as exc:
                delay = self._retry.next_delay(attempt, None, None)
                if delay is None:
                    raise _unreachable(str(self._http.base_url), exc) from exc
            else:
                if resp.status_code < 400:
                    return resp
                delay = self._retry.next_delay(attempt, resp.status_code, resp.headers.get("retry-after"))
                if delay is None:
                    raise error_from(resp)
            self._sleep(delay)
        raise AssertionError("unreachable: itertools.count() does not end")

    def _do(self, op: Op) -> JSON:
        return body_of(self._send(op))

    def download_recording_file(self, recording_id: str, index: int, *, byte_range: str | None = None) -> bytes:
        """A recording file's content (``byte_range``: a Range header value such as ``"bytes=0-43"``)."""
        return self._send(file_op(recording_id, index, byte_range)).content

    def _pages(self, path: str) -> list[JSON]:
        items: list[JSON] = []
        url: str | None = path
        while url:  # each page names the next one (path and query) until the last
            page = self._do(Op("GET", url))
            items.extend(page.get("items", []))
            url = page.get("next")
        return items

    def wait(self, command_id: str, *, timeout_s: float = 60.0) -> JSON:
        """The command once terminal, long-polling as often as needed; as it is when ``timeout_s`` runs out."""
        deadline = self._clock() + timeout_s
        while True:
            command = self._do(wait_op(command_id, deadline - self._clock(), self._timeout_s))
            if is_terminal(command) or self._clock() >= deadline:
                return command

    def stream_events(self, cc: str, *, last_event_id: str | None = None) -> Iterator[JSON]:
        """The call's events as they arrive (its timeline so far first), until CallDisconnected.

        A dropped connection is resumed after the last event seen (``Last-Event-ID``), a few times in a row at most.
        """
        parser, failures = SseParser(last_id=last_event_id), 0
        timeout = httpx.Timeout(self._timeout_s, read=STREAM_READ_TIMEOUT_S)
        while True:
            try:
                with self._http.stream("GET", f"/v1/calls/{_seg(cc)}/events/stream",
                                       headers=sse_headers(parser.last_id), timeout=timeout) as resp:
                    if resp.status_code >= 400:
                        resp.read()
                        raise error_from(resp)
                    for line in resp.iter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            failures = 0
                            yield event
                            if is_disconnect(event):
                                return
                error: Exception = CallqConnectionError("the event stream ended before CallDisconnected")
            except httpx.TransportError as exc:
                error = exc
            delay = self._retry.next_delay(failures, None, None)
            failures += 1
            if delay is None:
                raise _unreachable(str(self._http.base_url), error) from error
            self._sleep(delay)


class AsyncClient(Methods[Awaitable[JSON], Awaitable[list[JSON]]]):
    """Asynchronous client; use as an async context manager, or await ``aclose()``."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = DEFAULT_TIMEOUT_S,
                 transport: httpx.AsyncBaseTransport | None = None, retry: RetryPolicy | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout, transport=transport,
                                       headers={"Authorization": f"Bearer {api_key}"})
        self._timeout_s, self._retry, self._sleep, self._clock = timeout, retry or RetryPolicy(), sleep, clock

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, op: Op) -> httpx.Response:
        headers = _headers(op)
        for attempt in itertools.count():
            try:
                resp = await self._http.request(op.method, op.path, **_request_args(op, headers))
            except httpx.TransportError as exc:
                delay = self._retry.next_delay(attempt, None, None)
                if delay is None:
                    raise _unreachable(str(self._http.base_url), exc) from exc
            else:
                if resp.status_code < 400:
                    return resp
                delay = self._retry.next_delay(attempt, resp.status_code, resp.headers.get("retry-after"))
                if delay is None:
                    raise error_from(resp)
            await self._sleep(delay)
        raise AssertionError("unreachable: itertools.count() does not end")

    async def _do(self, op: Op) -> JSON:
        return body_of(await self._send(op))

    async def download_recording_file(self, recording_id: str, index: int, *, byte_range: str | None = None) -> bytes:
        """A recording file's content (``byte_range``: a Range header value such as ``"bytes=0-43"``)."""
        return (await self._send(file_op(recording_id, index, byte_range))).content

    async def _pages(self, path: str) -> list[JSON]:
        items: list[JSON] = []
        url: str | None = path
        while url:
            page = await self._do(Op("GET", url))
            items.extend(page.get("items", []))
            url = page.get("next")
        return items

    async def wait(self, command_id: str, *, timeout_s: float = 60.0) -> JSON:
        """The command once terminal, long-polling as often as needed; as it is when ``timeout_s`` runs out."""
        deadline = self._clock() + timeout_s
        while True:
            command = await self._do(wait_op(command_id, deadline - self._clock(), self._timeout_s))
            if is_terminal(command) or self._clock() >= deadline:
                return command

    async def stream_events(self, cc: str, *, last_event_id: str | None = None) -> AsyncIterator[JSON]:
        """The call's events as they arrive (its timeline so far first), until CallDisconnected; resumes a dropped
        connection after the last event seen, a few times in a row at most."""
        parser, failures = SseParser(last_id=last_event_id), 0
        timeout = httpx.Timeout(self._timeout_s, read=STREAM_READ_TIMEOUT_S)
        while True:
            try:
                async with self._http.stream("GET", f"/v1/calls/{_seg(cc)}/events/stream",
                                             headers=sse_headers(parser.last_id), timeout=timeout) as resp:
                    if resp.status_code >= 400:
                        await resp.aread()
                        raise error_from(resp)
                    async for line in resp.aiter_lines():
                        event = parser.feed(line)
                        if event is not None:
                            failures = 0
                            yield event
                            if is_disconnect(event):
                                return
                error: Exception = CallqConnectionError("the event stream ended before CallDisconnected")
            except httpx.TransportError as exc:
                error = exc
            delay = self._retry.next_delay(failures, None, None)
            failures += 1
            if delay is None:
                raise _unreachable(str(self._http.base_url), error) from error
            await self._sleep(delay)
