"""callq.client against httpx.MockTransport: retries with one key, Retry-After, errors, waits, pages, streams, and
Standard Webhooks verification (against signatures computed here, independently of callq.webhooks)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from callq._api_commands import participant
from callq.client import (
    AsyncClient,
    CallqAPIError,
    CallqConnectionError,
    Client,
    RetryPolicy,
    WebhookVerificationError,
    verify_webhook,
)

Handler = Callable[[httpx.Request], httpx.Response]
QUEUED = {"id": "cmd_1", "type": "connect", "status": "queued"}


def _client(handler: Handler, sleeps: list[float] | None = None, clock: Callable[[], float] | None = None,
            max_attempts: int = 4) -> Client:
    return Client("http://callq.test", "k", transport=httpx.MockTransport(handler),
                  retry=RetryPolicy(max_attempts=max_attempts, rng=random.Random(7)),
                  sleep=(sleeps if sleeps is not None else []).append, clock=clock or (lambda: 0.0))


def _error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json={"error": {"code": code, "message": f"{code}!",
                                                                   "details": [{"field": "x"}]}})


def test_a_command_reuses_one_idempotency_key_across_retries() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("refused", request=request)
        if len(seen) == 2:
            return _error(503, "unavailable")
        return httpx.Response(202, json=QUEUED)

    sleeps: list[float] = []
    with _client(handler, sleeps) as callq:
        assert callq.connect("room 1") == QUEUED
    assert [r.url.raw_path for r in seen] == [b"/v1/rooms/room%201/connect"] * 3  # ids are escaped
    keys = {r.headers["idempotency-key"] for r in seen}
    assert len(keys) == 1 and len(keys.pop()) == 36  # one UUID, made once for the logical call
    assert len(sleeps) == 2 and all(s >= 0 for s in sleeps)
    assert seen[0].headers["authorization"] == "Bearer k"


def test_each_logical_call_gets_its_own_key_and_an_explicit_key_is_sent_as_given() -> None:
    keys: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers["idempotency-key"])
        return httpx.Response(202, json=QUEUED)

    with _client(handler) as callq:
        callq.hang_up("cc")
        callq.hang_up("cc")
        callq.hang_up("cc", idempotency_key="mine-1")
    assert keys[0] != keys[1] and keys[2] == "mine-1"


def test_retry_after_is_honoured_and_capped() -> None:
    answers = iter([_error(429, "too_many_pending", {"Retry-After": "3"}),
                    _error(429, "client_rate_limited", {"Retry-After": "3600"}),
                    httpx.Response(202, json=QUEUED)])
    sleeps: list[float] = []
    with _client(lambda request: next(answers), sleeps) as callq:
        callq.cancel_media("cc")
    base = RetryPolicy().base_s  # the jitter added on top of the asked delay
    assert 3 <= sleeps[0] <= 3 + base
    assert 30 <= sleeps[1] <= 30 + base  # capped: an hour is not worth blocking on


def test_other_client_errors_are_not_retried_and_carry_the_api_error() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return _error(422, "invalid_phone_number")

    sleeps: list[float] = []
    with _client(handler, sleeps) as callq, pytest.raises(CallqAPIError) as caught:
        callq.send_dtmf("cc", "12", "1#")
    assert len(calls) == 1 and sleeps == []
    err = caught.value
    assert (err.status, err.code, err.message, err.details) == (422, "invalid_phone_number", "invalid_phone_number!",
                                                                 [{"field": "x"}])
    assert json.loads(calls[0].content) == {"phone_number": "12", "tones": "1#"}


def test_a_non_callq_error_body_is_kept_and_retries_end() -> None:
    with _client(lambda request: httpx.Response(502, text="bad gateway")) as callq, \
            pytest.raises(CallqAPIError) as caught:
        callq.get_room("r")
    assert (caught.value.status, caught.value.code, caught.value.message) == (502, "http_error", "bad gateway")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    sleeps: list[float] = []
    with _client(refuse, sleeps, max_attempts=3) as callq, pytest.raises(CallqConnectionError):
        callq.get_command("cmd_1")
    assert len(sleeps) == 2  # three tries, two waits between them


def test_bodies_are_built_from_the_keyword_arguments() -> None:
    bodies: list[tuple[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append((request.url.path, json.loads(request.content) if request.content else None))
        return httpx.Response(202, json=QUEUED)

    with _client(handler) as callq:
        callq.add_participant("cc", phone_number="+14255550123", source_caller_id="+18005550199",
                              invitation_timeout=30)
        callq.play("cc", text="hi", targets=[{"phone_number": "+14255550123"}])
        callq.play("cc", text="salut", source_locale="fr-FR", voice_kind="female")
        callq.start_recording("cc", content="audio", format="mp3")
        callq.pause_recording("cc")
    assert bodies == [
        ("/v1/calls/cc/participants", {"phone_number": "+14255550123", "source_caller_id": "+18005550199",
                                       "invitation_timeout": 30}),
        ("/v1/calls/cc/play", {"text": "hi", "loop": False, "targets": [{"phone_number": "+14255550123"}]}),
        ("/v1/calls/cc/play", {"text": "salut", "source_locale": "fr-FR", "voice_kind": "female", "loop": False}),
        ("/v1/calls/cc/recordings", {"content": "audio", "format": "mp3"}),
        ("/v1/calls/cc/recording/pause", {}),
    ]


def test_wait_long_polls_until_terminal() -> None:
    statuses = iter(["queued", "running", "succeeded"])
    waits: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        waits.append(request.url.params["wait"])
        return httpx.Response(200, json={**QUEUED, "status": next(statuses)})

    with _client(handler) as callq:
        assert callq.wait("cmd_1", timeout_s=45)["status"] == "succeeded"
    assert waits == ["30.0"] * 3  # the clock stands still: each poll asks for the most one poll may wait


def test_wait_returns_the_command_as_it_is_when_the_timeout_runs_out() -> None:
    now = [0.0]
    waits: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        waited = float(request.url.params["wait"])
        waits.append(waited)
        now[0] += waited  # as the server would: it held the request that long
        return httpx.Response(200, json={**QUEUED, "status": "running"})

    with _client(handler, clock=lambda: now[0]) as callq:
        assert callq.wait("cmd_1", timeout_s=40)["status"] == "running"
    assert waits == [30.0, 10.0]


def test_list_rooms_follows_every_page() -> None:
    pages = {"": {"items": [{"id": "a"}, {"id": "b"}], "next": "/v1/rooms?after=b&limit=2"},
             "after=b&limit=2": {"items": [{"id": "c"}]}}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=pages[request.url.query.decode()])

    with _client(handler) as callq:
        assert [r["id"] for r in callq.list_rooms()] == ["a", "b", "c"]


def _sse(*events: dict[str, Any]) -> bytes:
    chunks = [b": keep-alive\n\n"]
    for n, event in enumerate(events, 1):
        chunks.append(f"id: {n}-0\nevent: x\ndata: {json.dumps({'seq': f'{n}-0', **event})}\n\n".encode())
    return b"".join(chunks)


def test_stream_events_resumes_after_a_drop_and_ends_on_call_disconnected() -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("last-event-id"))
        if len(sent) == 1:  # the first connection drops after one event, cleanly but early
            return httpx.Response(200, content=_sse({"type": "Microsoft.Communication.CallConnected"}))
        return httpx.Response(200, content=_sse({"type": "Microsoft.Communication.CallDisconnected"}))

    with _client(handler) as callq:
        types = [e["type"].rsplit(".", 1)[-1] for e in callq.stream_events("cc")]
    assert types == ["CallConnected", "CallDisconnected"]
    assert sent == [None, "1-0"]


def test_the_async_client_retries_with_one_key_and_waits() -> None:
    keys: list[str] = []
    statuses = iter(["running", "succeeded"])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            keys.append(request.headers["idempotency-key"])
            return _error(503, "unavailable") if len(keys) == 1 else httpx.Response(202, json=QUEUED)
        return httpx.Response(200, json={**QUEUED, "status": next(statuses)})

    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def run() -> dict[str, Any]:
        async with AsyncClient("http://callq.test", "k", transport=httpx.MockTransport(handler), sleep=sleep,
                               clock=lambda: 0.0) as callq:
            command = await callq.connect("r")
            return await callq.wait(command["id"])

    assert asyncio.run(run())["status"] == "succeeded"
    assert len(keys) == 2 and keys[0] == keys[1] and len(sleeps) == 1


# Standard Webhooks, computed here from the spec rather than with callq.webhooks.sign.
KEY = b"callq-test-webhook-key-32-bytes!"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"an older key that is rotating out").decode()
NOW = 1_765_000_000
BODY = b'{"type":"command.succeeded","data":{"id":"cmd_1"}}'


def _signature(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, msg_id.encode() + b"." + str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def _headers(signature: str, timestamp: int = NOW) -> dict[str, str]:
    return {"Webhook-Id": "msg_1", "Webhook-Timestamp": str(timestamp), "Webhook-Signature": signature}


@pytest.fixture
def good() -> Iterator[str]:
    yield _signature(KEY, "msg_1", NOW, BODY)


def test_verify_webhook_accepts_a_signed_delivery(good: str) -> None:
    verify_webhook(_headers(good), BODY, SECRET, now=NOW + 299)
    verify_webhook(_headers(good), BODY.decode(), SECRET, now=NOW - 299)


def test_verify_webhook_accepts_either_signature_while_a_secret_rotates(good: str) -> None:
    old = _signature(base64.b64decode(OTHER_SECRET[6:]), "msg_1", NOW, BODY)
    verify_webhook(_headers(f"{old} {good}"), BODY, SECRET, now=NOW)
    verify_webhook(_headers(f"{old} {good}"), BODY, OTHER_SECRET, now=NOW)


@pytest.mark.parametrize("case", ["tampered body", "wrong secret", "stale", "future", "missing header",
                                  "other version"])
def test_verify_webhook_refuses(case: str, good: str) -> None:
    body, secret, headers = BODY, SECRET, _headers(good)
    if case == "tampered body":
        body = BODY.replace(b"cmd_1", b"cmd_2")
    elif case == "wrong secret":
        secret = OTHER_SECRET
    elif case == "stale":
        headers = _headers(_signature(KEY, "msg_1", NOW - 301, BODY), NOW - 301)
    elif case == "future":
        headers = _headers(_signature(KEY, "msg_1", NOW + 301, BODY), NOW + 301)
    elif case == "missing header":
        del headers["Webhook-Id"]
    else:
        headers = _headers("v2," + good.split(",", 1)[1])
    with pytest.raises(WebhookVerificationError):
        verify_webhook(headers, body, secret, now=NOW)


@pytest.mark.parametrize(("text", "expected"), [
    ("8:acs:teacher:presenter", {"communication_user": "8:acs:teacher", "role": "presenter"}),
    ("8:acs:student", {"communication_user": "8:acs:student"}),  # its last part is not a role: the default applies
])
def test_cli_participant_takes_an_optional_role_after_the_raw_id(text: str, expected: dict[str, str]) -> None:
    assert participant(text) == expected
