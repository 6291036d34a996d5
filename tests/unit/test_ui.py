"""The operator page and its session cookie on fakeredis: login, what each client sees, no CSRF, escaping."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import fakeredis
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import SESSION_COOKIE, ApiKeys
from callq import _components, _credentials
from callq._table import ready_table
from tests.conftest import OTHER_API_KEY, TEST_API_KEY
from workers import keys, metrics
from workers.settings import Settings


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer) -> Iterator[TestClient]:
    app = create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app, follow_redirects=False) as c:
        yield c


def _command(r: fakeredis.FakeRedis, cid: str, **fields: str) -> None:
    base = {"id": cid, "client": "alice", "type": "play", "status": "waiting", "attempts": "1",
            "created_at": "2026-01-01T00:00:00.000Z", "updated_at": "2026-01-01T00:00:01.000Z"}
    r.hset(keys.command_key(cid), mapping={**base, **fields})


def _call(r: fakeredis.FakeRedis, cc: str, client: str, roster: list[str]) -> None:
    r.hset(keys.call_key(cc), mapping={"client": client, "state": "connected", "room_id": "room-1",
                                       "connect_command": f"{cc}-connect"})
    _command(r, f"{cc}-connect", client=client, type="connect", status="succeeded", call_connection_id=cc)
    r.rpush(keys.call_commands_key(cc), f"{cc}-connect")
    event = {"id": f"e-{cc}", "type": "Microsoft.Communication.ParticipantsUpdated", "time": "2026-01-01T00:00:00Z",
             "data": {"callConnectionId": cc, "participants": [{"identifier": {"rawId": raw}} for raw in roster]}}
    r.xadd(keys.call_events_key(cc), {"event": json.dumps(event)})
    r.zadd(metrics.CALLS_KEY, {cc: int(time.time() * 1000)})


def _log_in(client: TestClient, key: str = TEST_API_KEY) -> None:
    resp = client.post("/ui/login", content=f"api_key={key}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 303 and resp.headers["location"] == "/ui"


def test_without_a_session_the_page_is_a_login_form_with_a_strict_csp(client: TestClient) -> None:
    resp = client.get("/ui")
    assert resp.status_code == 200 and 'name="api_key"' in resp.text
    assert "script-src 'self'" in resp.headers["content-security-policy"]
    assert client.get("/ui/fragments/overview").status_code == 401
    assert client.get("/ui/calls/cc-1").status_code == 303


def test_login_from_another_site_is_refused(client: TestClient) -> None:
    resp = client.post("/ui/login", content=f"api_key={TEST_API_KEY}",
                       headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": "https://evil.example"})
    assert resp.status_code == 403 and "set-cookie" not in resp.headers


def test_callq_up_prints_the_operator_page_and_metrics_urls() -> None:
    settings = Settings(api_keys={"dev": "k" * 24}, flower_password="pw-123456789")
    components = _components.stack(settings, python="python", redis_server="redis-server")
    table = ready_table(settings, components, _credentials.DevCredentials(), Path("/d"), banner="ready")
    assert "| ui " in table and "http://127.0.0.1:8000/ui " in table
    assert "| metrics " in table and "http://127.0.0.1:8000/metrics " in table
    assert table.startswith("ready — 6 components up")


def test_login_sets_an_httponly_strict_cookie_that_holds_no_key(client: TestClient) -> None:
    wrong = client.post("/ui/login", content="api_key=not-a-key-at-all-000",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert wrong.status_code == 401 and "not valid" in wrong.text and "set-cookie" not in wrong.headers
    resp = client.post("/ui/login", content=f"api_key={TEST_API_KEY}",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    cookie = resp.headers["set-cookie"]
    assert resp.status_code == 303
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert TEST_API_KEY not in cookie


def test_each_client_sees_only_its_own_calls_and_troubles(client: TestClient, r: fakeredis.FakeRedis) -> None:
    _call(r, "cc-alice", "alice", ["8:acs:teacher", "<script>alert(1)</script>"])
    _call(r, "cc-bob", "bob", ["8:acs:bob-only"])
    _command(r, "cmd_retry", last_error=json.dumps({"code": "acs_error", "message": "ACS answered 503"}))
    _command(r, "cmd_throttle", status="queued", throttled="ACS rate limit reached; retry in 0.40s")
    _command(r, "cmd_failed", status="failed", error=json.dumps({"code": "acs_failed", "message": "no call"}))
    _command(r, "cmd_recovered", status="succeeded", last_error=json.dumps({"code": "acs_error"}))
    _command(r, "cmd_bobs", client="bob", status="failed", error=json.dumps({"code": "acs_failed"}))
    for cid in ("cmd_retry", "cmd_throttle", "cmd_failed", "cmd_recovered", "cmd_bobs"):
        r.zadd(metrics.ATTENTION_KEY, {cid: int(time.time() * 1000)})
    _log_in(client)

    page = client.get("/ui").text
    assert 'data-call="cc-alice"' in page and "8:acs:teacher" in page
    assert "cc-bob" not in page and "bob-only" not in page and "cmd_bobs" not in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page
    fragment = client.get("/ui/fragments/overview").text
    for cid, trouble in (("cmd_retry", "retrying"), ("cmd_throttle", "throttled"), ("cmd_failed", "failed")):
        row = fragment.split(f'data-command="{cid}"')[1].split("</tr>")[0]
        assert f">{trouble}<" in row
    assert "cmd_recovered" not in fragment
    assert client.get("/ui/calls/cc-bob").status_code == 404
    call = client.get("/ui/calls/cc-alice")
    assert call.status_code == 200 and 'data-stream="/v1/calls/cc-alice/events/stream"' in call.text


def test_the_cookie_authorises_reads_but_never_a_command(client: TestClient, r: fakeredis.FakeRedis) -> None:
    _call(r, "cc-alice", "alice", [])
    _log_in(client)
    assert client.get("/v1/calls/cc-alice/commands").status_code == 200
    post = client.post("/v1/calls/cc-alice/hang-up", json={}, headers={"Idempotency-Key": "k1"})
    assert post.status_code == 401  # a cookie rides along on cross-site requests: it must not send commands
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, "YWxpY2U.9999999999.forged")
    assert client.get("/v1/calls/cc-alice/commands").status_code == 401
    assert 'name="api_key"' in client.get("/ui").text


def test_sessions_expire_and_end_with_their_key() -> None:
    keys_ = ApiKeys({"alice": TEST_API_KEY})
    token = keys_.session_for("alice", 60, now=1000)
    assert keys_.session_client(token, now=1059) == "alice"
    assert keys_.session_client(token, now=1061) is None
    assert ApiKeys({"alice": OTHER_API_KEY}).session_client(token, now=1000) is None  # key rotated
    assert ApiKeys({"bob": TEST_API_KEY}).session_client(token, now=1000) is None
    name, expires, mac = token.split(".")
    assert keys_.session_client(f"{name}.{int(expires) + 100}.{mac}", now=1000) is None


def _hostile(field: str) -> str:
    """A value that would run script if pasted raw into text or an attribute; ``field`` tells them apart."""
    return f"<script>alert('{field}')</script>\"'><img src=x onerror=alert('{field}')>"


class _Markup(HTMLParser):
    """Every start tag, and every text and attribute value as a browser decodes it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.shown: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self.shown += [value for _, value in attrs if value]

    def handle_data(self, data: str) -> None:
        self.shown.append(data)


def _assert_inert(html: str, fields: list[str]) -> str:
    """No injected element or handler, and each field's value shown intact (as text, an attribute, or in a link)."""
    assert "<script>alert" not in html and "<img" not in html
    markup = _Markup()
    markup.feed(html)
    for tag, attrs in markup.tags:
        assert tag != "script" or attrs == [("src", "/ui/assets/ui.js")], (tag, attrs)
        assert not [name for name, _ in attrs if name.startswith("on")], (tag, attrs)
    shown = "\n".join(markup.shown)
    assert [f for f in fields if _hostile(f) not in shown and quote(_hostile(f)) not in shown] == []
    return shown


def test_every_value_from_redis_or_a_client_is_escaped(settings: Settings, server: fakeredis.FakeServer,
                                                        r: fakeredis.FakeRedis) -> None:
    name = _hostile("client")
    listed = _hostile("listed call")  # only on the overview: a path segment cannot hold its "/"
    cc = "cc-\"'><img src=x onerror=alert(1)><script>alert(1)"
    r.hset(keys.call_key(listed), mapping={"client": name, "state": _hostile("listed state"),
                                           "room_id": _hostile("listed room")})
    r.hset(keys.call_key(cc), mapping={"client": name, "state": _hostile("call state"),
                                       "room_id": _hostile("room")})
    _command(r, _hostile("command id"), client=name, type=_hostile("command type"), attempts=_hostile("attempts"),
             updated_at=_hostile("updated at"), call_connection_id=_hostile("command call"), status="queued",
             throttled=_hostile("throttled"))
    _command(r, "cmd_retry", client=name, call_connection_id=cc, status=_hostile("status"),
             last_error=json.dumps({"code": _hostile("retry code"), "message": _hostile("retry message")}))
    _command(r, "cmd_failed", client=name, call_connection_id=cc, status="failed",
             error=json.dumps({"code": _hostile("error code"), "message": _hostile("error message")}))
    _command(r, "cmd_done", client=name, status="succeeded", resolved_by=json.dumps({"type": _hostile("resolved by")}))
    r.rpush(keys.call_commands_key(cc), _hostile("command id"), "cmd_retry", "cmd_failed", "cmd_done")
    events = [
        {"type": _hostile("event type"), "time": _hostile("event time"),
         "data": {"operationContext": _hostile("command id")}},
        {"type": "Microsoft.Communication.PlayFailed",
         "data": {"resultInformation": {"code": _hostile("code"), "subCode": _hostile("sub code"),
                                        "message": _hostile("result message")}}},
        {"type": "Microsoft.Communication.RecordingStateChanged", "data": {"state": _hostile("recording state")}},
        {"type": "Microsoft.Communication.ParticipantsUpdated",
         "data": {"participants": [{"identifier": {"rawId": _hostile("participant")}, "isMuted": True}]}},
    ]
    for call_id in (listed, cc):
        for event in events:
            r.xadd(keys.call_events_key(call_id), {"event": json.dumps(event)})
        r.zadd(metrics.CALLS_KEY, {call_id: int(time.time() * 1000)})
    for cid in (_hostile("command id"), "cmd_retry", "cmd_failed"):
        r.zadd(metrics.ATTENTION_KEY, {cid: int(time.time() * 1000)})
    key = "k" * 24
    app = create_app(replace(settings, api_keys={name: key}),
                     redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app, follow_redirects=False) as client:
        _log_in(client, key)
        overview = ["client", "listed call", "listed state", "participant", "command id", "command type",
                    "command call", "throttled", "attempts", "updated at", "retry code", "retry message",
                    "error code", "error message"]
        _assert_inert(client.get("/ui").text, overview)
        _assert_inert(client.get("/ui/fragments/overview").text, overview[1:])
        call = ["call state", "room", "participant", "command id", "command type", "attempts", "status",
                "retry code", "retry message", "error code", "error message", "resolved by", "event type",
                "event time", "code", "sub code", "result message", "recording state"]
        page = client.get(f"/ui/calls/{quote(cc, safe='')}")
        assert page.status_code == 200
        assert cc in _assert_inert(page.text, ["client", *call])
        _assert_inert(client.get(f"/ui/fragments/calls/{quote(cc, safe='')}").text, call)
        unknown = client.get("/ui/calls/%3Cscript%3Ealert(1)%3C")
        assert unknown.status_code == 404
        _assert_inert(unknown.text, ["client"])
