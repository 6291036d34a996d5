"""The operator page and its session cookie on fakeredis: login, what each client sees, no CSRF, escaping, rooms."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import fakeredis
import pytest
from starlette.testclient import TestClient

from api.app import create_app
from api.auth import SESSION_COOKIE, ApiKeys
from api.ui_rooms import ROOMS_SHOWN, window_state
from callq import _components, _credentials
from callq._table import ready_table
from tests.conftest import OTHER_API_KEY, TEST_API_KEY
from workers import keys, ledger, metrics, rooms, scripts, webhooks
from workers.command import Status
from workers.room_events import RoomEvent, record
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


# --- rooms ----------------------------------------------------------------------------------------------------------

ROOM, SCID, EARLIER = "99199690362660524", "c2VydmVyLWNhbGwtMg", "c2VydmVyLWNhbGwtMQ"
OPEN, NOT_YET, OVER = ("2000-01-01T00:00:00.000Z", "2099-01-01T00:00:00.000Z"), \
    ("2099-01-01T00:00:00.000Z", "2099-02-01T00:00:00.000Z"), ("2000-01-01T00:00:00.000Z", "2000-02-01T00:00:00.000Z")


def _steps(*steps: tuple[str, dict[str, str]]) -> dict[str, object]:
    """An automation as the API stores it: each step's type, body and command parameters."""
    return {"on_call_started": [{"type": t, "body": b, "params": b} for t, b in steps],
            "updated_at": "2026-01-01T08:00:00.000Z"}


GREET = _steps(("connect", {}), ("play", {"text": "Welcome"}))


def _room(r: fakeredis.FakeRedis, room_id: str = ROOM, client: str = "alice", window: tuple[str, str] = OPEN,
          automation: dict[str, object] | None = GREET, **fields: str) -> None:
    """A room as POST /v1/rooms (room_save.lua) and PUT …/automation write it."""
    acs = {"valid_from": window[0], "valid_until": window[1], "pstn_dial_out_enabled": "1",
           "acs_created_at": "2026-01-01T07:00:00.000Z", "origin": "created",
           "managed_since": "2026-01-01T07:00:01.000Z"}
    saved = scripts.run(r, rooms.save(client=client, room_id=room_id, fields={**acs, **fields}))
    assert saved.outcome == "new"
    if automation is not None:
        r.hset(keys.room_key(room_id), "automation", json.dumps(automation))


def _grid(r: fakeredis.FakeRedis, kind: str, event_id: str, *, room_id: str = ROOM, scid: str = SCID,
          data: dict[str, object] | None = None, time_: str = "2026-01-01T09:00:00.000Z") -> None:
    """One Event Grid event through room_event.lua, as the Event Grid endpoint records it."""
    doc = {"id": event_id, "type": f"Microsoft.Communication.{kind}", "time": time_,
           "data": {"serverCallId": scid, "room": {"id": room_id}, **(data or {})}}
    ev = RoomEvent(id=event_id, type=str(doc["type"]), room_id=room_id, server_call_id=scid, correlation_id="corr",
                   time=time_, document=doc)
    scripts.run(r, record(ev, run_id=f"run-{event_id}", advance_message="advance", steps_queue="callq.steps",
                          dedup_ttl_s=600, ttl_s=3600, retention_s=3600))


def _who(raw: str) -> dict[str, object]:
    return {"communicationIdentifier": {"rawId": raw}, "role": "Presenter"}


def _step(r: fakeredis.FakeRedis, scid: str, index: int, cid: str, cc: str, status: str,
          room_id: str = ROOM) -> None:
    """A run's step command, as the automation runner records it (``cmd:{index}`` and the run's command list)."""
    _command(r, cid, type="connect" if index == 0 else "play", status=status, call_connection_id=cc)
    r.hset(keys.room_run_key(room_id, scid), mapping={f"cmd:{index}": cid, "state": "running"})
    r.rpush(keys.room_run_commands_key(room_id, scid), cid)


def _room_with_two_calls(r: fakeredis.FakeRedis) -> None:
    """An earlier call whose run ended with the call, then the current one: callq joined it and is greeting."""
    _room(r)
    _grid(r, "CallStarted", "e1", scid=EARLIER, data={"startedBy": _who("8:acs:earlier-teacher")},
          time_="2026-01-01T08:00:00.000Z")
    _step(r, EARLIER, 0, "cmd_old_connect", "cc-old", "failed")
    # The 2021 docs' shape (rawId straight under the participant): the timeline reads it as the endpoint does.
    _grid(r, "CallEnded", "e2", scid=EARLIER, data={"endedBy": {"rawId": "8:acs:host"}},
          time_="2026-01-01T08:30:00.000Z")
    r.hset(keys.room_run_key(ROOM, EARLIER), mapping={"state": "ended", "ended_at": "2026-01-01T08:30:01.000Z",
                                                      "error": json.dumps({"code": "call_ended",
                                                                           "message": "The call ended first."})})
    _grid(r, "CallStarted", "e3", data={"startedBy": _who("8:acs:teacher")})
    _grid(r, "CallParticipantAdded", "e4", data={"user": _who("8:acs:pupil")}, time_="2026-01-01T09:00:05.000Z")
    _step(r, SCID, 0, "cmd_connect", "cc-room", "succeeded")
    _step(r, SCID, 1, "cmd_greet", "cc-room", "waiting")
    r.hset(keys.room_run_key(ROOM, SCID), "call_connection_id", "cc-room")
    r.hset(keys.room_key(ROOM), "call_connection_id", "cc-room")
    r.hset(keys.call_key("cc-room"), mapping={"client": "alice", "state": "connected", "room_id": ROOM,
                                              "server_call_id": SCID})


def _row(html: str, attribute: str, value: str) -> str:
    return html.split(f'{attribute}="{value}"')[1].split("</tr>")[0]


def test_a_rooms_window_is_open_not_yet_or_over() -> None:
    now = datetime(2026, 1, 1, 9, tzinfo=UTC)
    assert window_state("2026-01-01T09:00:00.000Z", "2026-01-01T10:00:00.000Z", now) == "open"
    assert window_state("2026-01-01T09:00:00.001Z", "2026-01-01T10:00:00.000Z", now) == "not yet"
    assert window_state("2026-01-01T08:00:00.000Z", "2026-01-01T09:00:00.000Z", now) == "over"
    assert window_state("", "2026-01-01T10:00:00.000Z", now) == "unknown"
    assert window_state("yesterday", "2026-01-01T10:00:00.000Z", now) == "unknown"


def test_the_overview_lists_the_clients_rooms(client: TestClient, r: fakeredis.FakeRedis) -> None:
    _room_with_two_calls(r)
    _room(r, "room-later", window=NOT_YET, automation=None, pstn_dial_out_enabled="0", origin="adopted")
    _room(r, "room-over", window=OVER, automation=None)
    _room(r, "room-bobs", client="bob")
    r.set(keys.client_automation_key("alice"), json.dumps(_steps(("connect", {}), ("start_recording", {}))))
    _log_in(client)

    page = client.get("/ui").text
    assert 'data-room="room-bobs"' not in page
    current = _row(page, "data-room", ROOM)
    assert f'href="/ui/rooms/{ROOM}"' in current and f'title="{ROOM}"' in current
    assert ">open<" in current and "<td>yes</td>" in current
    assert "room&#39;s own" in current and "connect → play" in current
    assert ">active<" in current and f'title="{SCID}"' in current
    assert 'href="/ui/calls/cc-room"' in current and ">connected<" in current  # callq's connection to the call
    assert current.rstrip().endswith('<span class="badge running">running</span></td>')  # the latest run's state
    later = _row(page, "data-room", "room-later")
    assert ">not yet<" in later and "<td>no</td>" in later and "adopted" in later
    assert "client default" in later and "connect → start_recording" in later and "none" in later
    assert ">over<" in _row(page, "data-room", "room-over")
    assert client.get("/ui/fragments/overview").text.count("<tr data-room=") == 3


def test_the_overview_shows_a_bounded_number_of_rooms(client: TestClient, r: fakeredis.FakeRedis) -> None:
    for i in range(ROOMS_SHOWN + 3):
        _room(r, f"room-{i:03d}", automation=None)
    _log_in(client)
    fragment = client.get("/ui/fragments/overview").text
    assert fragment.count("<tr data-room=") == ROOMS_SHOWN and "room-049" in fragment and "room-050" not in fragment
    assert f"the first {ROOMS_SHOWN} by id; 3 more" in fragment


def test_a_rooms_page_shows_its_automation_runs_and_timeline(client: TestClient, r: fakeredis.FakeRedis) -> None:
    _room_with_two_calls(r)
    _log_in(client)
    page = client.get(f"/ui/rooms/{ROOM}")
    assert page.status_code == 200 and f'data-refresh="/ui/fragments/rooms/{ROOM}"' in page.text
    assert 'data-stream=""' in page.text  # no SSE for rooms: the timer refreshes the page
    html = client.get(f"/ui/fragments/rooms/{ROOM}").text
    assert html == page.text.split('data-events="')[1].split(">", 1)[1].split("</main>")[0].lstrip("\n")

    automation = html.split('id="automation"')[1].split("</section>")[0]
    assert "room&#39;s own" in automation and "<td>play</td>" in automation
    assert "{&#34;text&#34;: &#34;Welcome&#34;}" in automation
    runs = html.split('id="runs"')[1].split("</section>")[0]
    assert runs.index(f'data-run="{SCID}"') < runs.index(f'data-run="{EARLIER}"')  # newest first
    current = runs.split(f'data-run="{SCID}"')[1].split("</article>")[0]
    assert 'data-state="running"' in runs and 'href="/ui/calls/cc-room"' in current
    assert 'data-command="cmd_connect" data-status="succeeded"' in current
    assert 'data-command="cmd_greet" data-status="waiting"' in current
    assert 'href="/ui/calls/cc-room" title="cmd_greet"' in current  # each step's command leads to its call
    earlier = runs.split(f'data-run="{EARLIER}"')[1].split("</article>")[0]
    assert 'data-state="ended"' in earlier and "<code>call_ended</code> The call ended first." in earlier
    assert 'data-command="" data-status="not sent"' in earlier  # the greeting never went out
    timeline = html.split('id="timeline"')[1].split("</section>")[0]
    kinds = [li.split('data-type="')[1].split('"')[0] for li in timeline.split("<li ")[1:]]
    assert kinds == ["CallParticipantAdded", "CallStarted", "CallEnded", "CallStarted"]
    added = timeline.split('data-type="CallParticipantAdded"')[1].split("</li>")[0]
    assert "8:acs:pupil" in added and f'title="{SCID}"' in added and "…LWNhbGwtMg</code>" in added
    assert "8:acs:earlier-teacher" in timeline and 'title="Microsoft.Communication.CallEnded"' in timeline
    assert "8:acs:host" in timeline.split('data-type="CallEnded"')[1].split("</li>")[0]


def test_another_clients_room_or_an_unknown_one_is_not_found(client: TestClient, r: fakeredis.FakeRedis) -> None:
    _room(r, "room-bobs", client="bob")
    _grid(r, "CallStarted", "e1", room_id="room-bobs", data={"startedBy": _who("8:acs:bob-teacher")})
    assert client.get("/ui/rooms/room-bobs").status_code == 303  # no session: to the login form
    assert client.get("/ui/fragments/rooms/room-bobs").status_code == 401
    _log_in(client)
    for path in ("/ui/rooms/room-bobs", "/ui/fragments/rooms/room-bobs", "/ui/rooms/no-such-room"):
        resp = client.get(path)
        assert resp.status_code == 404 and "No such room is managed by this client." in resp.text
        assert "bob-teacher" not in resp.text


def test_calls_link_to_their_room_when_the_client_manages_it(client: TestClient, r: fakeredis.FakeRedis) -> None:
    _room(r)
    _room(r, "room-bobs", client="bob")
    _call(r, "cc-managed", "alice", [])
    r.hset(keys.call_key("cc-managed"), "room_id", ROOM)
    _call(r, "cc-unmanaged", "alice", [])  # room-1: a room this client connected to but never created or adopted
    _call(r, "cc-in-bobs-room", "alice", [])
    r.hset(keys.call_key("cc-in-bobs-room"), "room_id", "room-bobs")
    _log_in(client)

    live = client.get("/ui").text.split('id="live-calls"')[1].split("</section>")[0]
    assert f'href="/ui/rooms/{ROOM}"' in _row(live, "data-call", "cc-managed")
    assert "/ui/rooms/" not in _row(live, "data-call", "cc-unmanaged") + _row(live, "data-call", "cc-in-bobs-room")
    assert f'<a href="/ui/rooms/{ROOM}" title="{ROOM}">{ROOM}</a>' in client.get("/ui/calls/cc-managed").text
    for cc, room_id in (("cc-unmanaged", "room-1"), ("cc-in-bobs-room", "room-bobs")):
        head = client.get(f"/ui/calls/{cc}").text.split("</section>")[0]
        assert room_id in head and "/ui/rooms/" not in head


def test_every_room_value_is_escaped(settings: Settings, server: fakeredis.FakeServer,
                                     r: fakeredis.FakeRedis) -> None:
    name = _hostile("client")
    listed = _hostile("listed room")  # only on the overview: a path segment cannot hold its "/"
    room_id = "room-\"'><img src=x onerror=alert(1)><script>alert(1)"
    scid = _hostile("server call")
    hostile_steps = {"on_call_started": [{"type": _hostile("step type"), "body": {"text": _hostile("step body")}}],
                     "updated_at": _hostile("automation updated")}
    for rid in (listed, room_id):
        _room(r, rid, client=name, window=(_hostile("valid from"), _hostile("valid until")),
              automation=hostile_steps, origin=_hostile("origin"), acs_created_at=_hostile("created at"),
              managed_since=_hostile("managed since"))
        _grid(r, "CallStarted", "e-" + rid, room_id=rid, scid=scid, time_=_hostile("event time"),
              data={"startedBy": _who(_hostile("started by"))})
        _grid(r, "CallParticipantAdded", "p-" + rid, room_id=rid, scid=scid, data={"user": _who(_hostile("user"))})
        r.xadd(keys.room_events_key(rid), {"event": json.dumps({"type": _hostile("event type")})})
        r.hset(keys.room_key(rid), mapping={"call_state": _hostile("call state"),
                                            "call_connection_id": _hostile("room call")})
        r.hset(keys.call_key(_hostile("room call")), mapping={"client": name, "state": _hostile("connection state")})
        _step(r, scid, 0, _hostile("step command"), _hostile("step call"), _hostile("step status"), room_id=rid)
        r.hset(keys.room_run_key(rid, scid), mapping={
            "state": _hostile("run state"), "ended_at": _hostile("run ended"),
            "call_connection_id": _hostile("run call"),
            "error": json.dumps({"code": _hostile("run error code"), "message": _hostile("run error")})})
    r.zadd(metrics.CALLS_KEY, {"cc-x": int(time.time() * 1000)})
    r.hset(keys.call_key("cc-x"), mapping={"client": name, "state": "connected", "room_id": room_id})
    key = "k" * 24
    app = create_app(replace(settings, api_keys={name: key}),
                     redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app, follow_redirects=False) as client:
        _log_in(client, key)
        overview = ["listed room", "valid from", "valid until", "origin", "step type", "server call", "call state",
                    "room call", "connection state", "run state"]
        _assert_inert(client.get("/ui").text, ["client", *overview])
        shown = _assert_inert(client.get("/ui/fragments/overview").text, overview)
        assert room_id in shown
        page = ["valid from", "valid until", "origin", "created at", "managed since", "step type",
                "automation updated", "server call", "call state", "room call", "connection state", "run state",
                "run ended", "run call", "run error code", "run error", "step command", "step call", "step status",
                "event time", "started by", "user", "event type"]
        resp = client.get(f"/ui/rooms/{quote(room_id, safe='')}")
        assert resp.status_code == 200
        shown = _assert_inert(resp.text, ["client", *page])
        assert room_id in shown and json.dumps({"text": _hostile("step body")}).replace(",", ", ") in shown
        _assert_inert(client.get(f"/ui/fragments/rooms/{quote(room_id, safe='')}").text, page)
        call = client.get("/ui/calls/cc-x")
        assert call.status_code == 200 and room_id in _assert_inert(call.text, ["client"])


# --- webhooks -------------------------------------------------------------------------------------------------------

HOOK_URL = "https://hooks.example.com/callq"


def _endpoint(r: fakeredis.FakeRedis, client: str = "alice", **fields: str) -> str:
    """An endpoint as POST /v1/webhooks (webhook_save.lua) makes it."""
    ep = webhooks.new_endpoint_id()
    base = {"url": HOOK_URL, "events": "*", "enabled": "1", "state": "healthy", "secret": webhooks.new_secret(),
            "created_at": "2026-01-01T07:00:00.000Z", "created_ms": str(int(time.time() * 1000)),
            "retention": "3600"}
    saved = scripts.run(r, webhooks.save(client=client, endpoint_id=ep, fields={**base, **fields}, mode="create",
                                         max_endpoints=20))
    assert saved.outcome == "new"
    return ep


def _finished(r: fakeredis.FakeRedis, cid: str, cc: str, status: Status = Status.SUCCEEDED, **fields: str) -> None:
    """A command of alice's on call ``cc`` reaching ``status``: the transition makes its webhook messages."""
    _command(r, cid, call_connection_id=cc, **fields)
    assert scripts.run(r, ledger.transition(cid, status, {})).outcome == "applied"


def _attempt(r: fakeredis.FakeRedis, outcome: webhooks.Outcome, status: int | None, error: str = "") -> str:
    """The first due lane's head, attempted with this outcome (as the deliverer records it); its message id."""
    now = int(time.time() * 1000)
    [c] = scripts.run(r, webhooks.claim(now_ms=now, lease_ms=60_000, most=1, token=f"t{now}{outcome}"))
    scripts.run(r, webhooks.record_result(c, outcome=outcome, now_ms=now, next_ms=now + 60_000 if outcome == "retry"
                                          else 0, status=status, error=error, lease_ms=60_000, next_token="n"))
    return c.message_id


def _endpoint_with_history(r: fakeredis.FakeRedis) -> tuple[str, dict[str, str]]:
    """An endpoint that delivered one message, failed one for good, is retrying one and has one waiting behind it."""
    ep = _endpoint(r, description="clinic app")
    _finished(r, "cmd_ok", "cc-ok")
    ok = _attempt(r, "succeeded", 200)
    _finished(r, "cmd_lost", "cc-lost", Status.FAILED, error=json.dumps({"code": "acs_failed"}))
    lost = _attempt(r, "failed", None, "timeout")
    _finished(r, "cmd_slow", "cc-slow")
    slow = _attempt(r, "retry", 503)
    _finished(r, "cmd_next", "cc-slow")
    [waiting] = [m for m in r.lrange(keys.webhook_lane_key(ep, "cc-slow"), 0, -1) if m != slow]
    return ep, {"ok": ok, "lost": lost, "slow": slow, "waiting": waiting}


def _cells(row: str) -> list[str]:
    return [td.split("</td>")[0] for td in row.split("<td>")[1:]]


def test_the_overview_lists_the_clients_webhook_endpoints_with_their_health(client: TestClient,
                                                                           r: fakeredis.FakeRedis) -> None:
    ep, _ = _endpoint_with_history(r)
    off = _endpoint(r, url="https://off.example.com/", enabled="0", state="disabled", disabled_reason="by_client",
                    events="command.failed,room.event")
    bobs = _endpoint(r, client="bob", url="https://bob.example.com/")
    _log_in(client)
    page = client.get("/ui").text
    section = page.split('id="webhooks"')[1].split("</section>")[0]
    assert bobs not in section and "bob.example.com" not in section
    row = _row(section, "data-webhook", ep)
    assert 'data-state="failing" class="bad"' in row and f'href="/ui/webhooks/{ep}"' in row
    assert "clinic app" in row and HOOK_URL in row and "<td>all</td>" in row and ">failing<" in row
    cells = _cells(row)
    assert cells[4] == "2"  # failures in a row since the success: the timeout, then the 503
    assert "<code>503</code>" in cells[6]  # the last failure's answer
    assert cells[7] == "1"  # one lane (cc-slow) waiting
    disabled = _row(section, "data-webhook", off)
    assert ">disabled<" in disabled and "by_client" in disabled and "command.failed, room.event" in disabled
    assert client.get("/ui/fragments/overview").text.count("<tr data-webhook=") == 2


def test_a_webhook_page_lists_its_deliveries_with_the_failing_ones_marked(client: TestClient,
                                                                         r: fakeredis.FakeRedis) -> None:
    ep, ids = _endpoint_with_history(r)
    _log_in(client)
    page = client.get(f"/ui/webhooks/{ep}")
    assert page.status_code == 200 and f'data-refresh="/ui/fragments/webhooks/{ep}"' in page.text
    assert 'data-stream=""' in page.text  # no SSE: the timer refreshes the page
    html = client.get(f"/ui/fragments/webhooks/{ep}").text
    assert html == page.text.split('data-events="')[1].split(">", 1)[1].split("</main>")[0].lstrip("\n")

    head = html.split("</section>")[0]
    assert ">failing<" in head and HOOK_URL in head and "clinic app" in head and "<code>503</code>" in head
    assert "failing since" in head and "deliveries waiting: 1" in head and "messages made: 4" in head
    deliveries = html.split('id="deliveries"')[1].split("</section>")[0]
    order = [tr.split('"')[1] for tr in deliveries.split("<tr data-delivery=")[1:]]
    assert order == [ids["waiting"], ids["slow"], ids["lost"], ids["ok"]]  # newest first
    assert "1 succeeded · 2 pending (1 retrying) · 1 failed" in deliveries
    lost = _row(deliveries, "data-delivery", ids["lost"])
    assert 'data-status="failed" class="bad"' in lost and "command.failed" in lost and "<code>timeout</code>" in lost
    assert 'href="/ui/calls/cc-lost"' in lost and 'title="cmd_lost"' in lost
    slow = _row(deliveries, "data-delivery", ids["slow"])
    assert 'data-status="pending" class="warn"' in slow and ">retrying<" in slow and "<code>503</code>" in slow
    assert slow.count("<time ") == 3  # last attempt, next attempt, made
    ok = _row(deliveries, "data-delivery", ids["ok"])
    assert 'data-status="succeeded">' in ok and "<code>200</code>" in ok and "delivered" in ok
    waiting = _row(deliveries, "data-delivery", ids["waiting"])
    assert 'data-status="pending">' in waiting and "retrying" not in waiting and _cells(waiting)[5] == "0"


def test_another_clients_webhook_or_an_unknown_one_is_not_found(client: TestClient, r: fakeredis.FakeRedis) -> None:
    bobs = _endpoint(r, client="bob", url="https://bob.example.com/")
    assert client.get(f"/ui/webhooks/{bobs}").status_code == 303  # no session: to the login form
    assert client.get(f"/ui/fragments/webhooks/{bobs}").status_code == 401
    _log_in(client)
    for path in (f"/ui/webhooks/{bobs}", f"/ui/fragments/webhooks/{bobs}", "/ui/webhooks/we_nope"):
        resp = client.get(path)
        assert resp.status_code == 404 and "No such webhook endpoint belongs to this client." in resp.text
        assert "bob.example.com" not in resp.text


def test_the_overview_says_when_there_are_no_webhook_endpoints(client: TestClient) -> None:
    _log_in(client)
    section = client.get("/ui/fragments/overview").text.split('id="webhooks"')[1].split("</section>")[0]
    assert "No webhook endpoints" in section and "<table>" not in section


def test_every_webhook_value_is_escaped(settings: Settings, server: fakeredis.FakeServer,
                                        r: fakeredis.FakeRedis) -> None:
    name = _hostile("client")
    listed = _hostile("listed endpoint")  # only on the overview: a path segment cannot hold its "/"
    ep = "we_\"'><img src=x onerror=alert(1)><script>alert(1)"
    hostile = {"url": _hostile("url"), "events": _hostile("events"), "description": _hostile("description"),
               "state": _hostile("state"), "disabled_reason": _hostile("disabled reason"),
               "consecutive_failures": _hostile("failures"), "last_success_at": _hostile("last success"),
               "last_failure_at": _hostile("last failure at"), "last_failure_code": _hostile("failure code"),
               "last_failure_error": _hostile("failure error"), "failing_since": _hostile("failing since"),
               "messages": _hostile("messages"), "created_at": _hostile("created at")}
    for endpoint_id in (listed, ep):
        r.hset(keys.webhook_key(endpoint_id), mapping={"id": endpoint_id, "client": name, **hostile})
        r.zadd(keys.client_webhooks_all_key(name), {endpoint_id: 1})
    mid = _hostile("delivery id")
    r.hset(keys.webhook_message_key(mid), mapping={
        "id": mid, "endpoint": ep, "type": _hostile("type"), "seq": _hostile("seq"), "status": _hostile("status"),
        "lane": _hostile("lane"), "command": _hostile("command"), "attempts": _hostile("attempts"),
        "last_code": _hostile("last code"), "last_error": _hostile("last error"),
        "next_attempt_at": _hostile("next attempt"), "last_attempt_at": _hostile("last attempt"),
        "created_ms": _hostile("created ms")})
    for field in ("call_connection_id", "room_id"):
        other = f"{field}-{mid}"
        r.hset(keys.webhook_message_key(other), mapping={"id": other, "endpoint": ep, "status": "failed",
                                                         field: _hostile(field), "delivered_at": _hostile("delivered")})
        r.zadd(keys.webhook_messages_key(ep), {other: 1})
    r.zadd(keys.webhook_messages_key(ep), {mid: 2})
    key = "k" * 24
    app = create_app(replace(settings, api_keys={name: key}),
                     redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    with TestClient(app, follow_redirects=False) as client:
        _log_in(client, key)
        overview = ["listed endpoint", "url", "events", "description", "state", "disabled reason", "last success",
                    "last failure at", "failure code", "failure error"]
        _assert_inert(client.get("/ui").text, ["client", *overview])
        shown = _assert_inert(client.get("/ui/fragments/overview").text, overview)
        assert ep in shown and "unknown" in shown  # a count that is not one
        page = [f for f in overview if f != "listed endpoint"] + [
            "failing since", "created at", "delivery id", "type", "seq", "status", "lane", "command", "attempts",
            "last code", "last error", "next attempt", "last attempt", "call_connection_id", "room_id", "delivered"]
        resp = client.get(f"/ui/webhooks/{quote(ep, safe='')}")
        assert resp.status_code == 200
        assert ep in _assert_inert(resp.text, ["client", *page])
        _assert_inert(client.get(f"/ui/fragments/webhooks/{quote(ep, safe='')}").text, page)
