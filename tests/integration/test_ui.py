"""The operator page in headless Chromium: log in, see a call appear, watch its events arrive over SSE; a room's
runs and Event Grid timeline; a webhook endpoint's health and deliveries.

Chromium is Debian's (``make test`` installs it); Playwright drives it through ``executable_path`` because its own
browser download cannot work here. Screenshots land in ``tests/output/`` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import TEST_API_KEY
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from workers import keys, ledger, rooms, scripts, webhooks
from workers.command import Status
from workers.room_events import RoomEvent, record

pytestmark = pytest.mark.integration
OUTPUT = Path(__file__).resolve().parents[1] / "output"
CHROMIUM = "/usr/bin/chromium"
# Debian's Chromium, headless as root, with nothing reaching out to Google's services (this network is closed).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install playwright (it drives Debian's chromium)")
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail("chromium is not installed: run `make test` (it installs it) or `apt-get install -y chromium`")
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _log_in(browser: Any, api_url: str, key: str) -> Any:
    page = browser.new_page(viewport={"width": 1440, "height": 900})
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{api_url}/ui")
    page.fill("#api_key", key)
    page.click("button[type=submit]")
    page.locator("#live-calls").wait_for()
    return page


def test_operator_page_shows_a_live_call_and_its_events_as_they_arrive(
        browser: Any, simulator: ThreadServer, api_server: ThreadServer, api: httpx.Client,
        start_worker: Callable[..., Any]) -> None:
    start_worker()
    OUTPUT.mkdir(exist_ok=True)
    page = _log_in(browser, api_server.url, TEST_API_KEY)
    cookie = next(c for c in page.context.cookies() if c["name"] == "callq_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TEST_API_KEY not in cookie["value"]

    # A connect to a room whose call has not started fails: it shows among the commands needing attention.
    failed = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator, started=False)}/connect").json()["id"])
    assert failed["status"] == "failed", failed
    connect = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
    assert connect["status"] == "succeeded", connect
    cc = connect["call_connection_id"]
    rec = wait(api, post(api, f"/v1/calls/{cc}/recordings", {"content": "audio", "channel": "mixed",
                                                             "format": "wav"}).json()["id"])
    assert rec["status"] == "succeeded", rec

    # The overview refreshes itself: the call and the failure appear without a reload.
    row = page.locator(f'#live-calls tr[data-call="{cc}"]')
    row.wait_for()
    page.locator(f'#attention tr[data-command="{failed["id"]}"]').wait_for()
    assert "8:acs:teacher" in row.inner_text() and "recording" in row.inner_text()
    page.screenshot(path=str(OUTPUT / "ui-overview.png"), full_page=True)

    row.locator("a").click()
    page.locator('#timeline li[data-type="CallConnected"]').wait_for()
    page.locator('#live[data-state="on"]').wait_for()  # the EventSource is open, authenticated by the cookie

    # New events arrive while the page is open: pushed over SSE, rendered without a reload.
    play = post(api, f"/v1/calls/{cc}/play", {"text": "This class is being recorded."}).json()
    page.locator('#timeline li[data-type="PlayCompleted"]').wait_for()
    page.locator(f'#commands tr[data-command="{play["id"]}"][data-status="succeeded"]').wait_for()
    page.screenshot(path=str(OUTPUT / "ui-call-live.png"), full_page=True)
    hang_up = post(api, f"/v1/calls/{cc}/hang-up", {"for_everyone": True}).json()
    page.locator('#timeline li[data-type="CallDisconnected"]').wait_for()
    page.locator(f'#commands tr[data-command="{hang_up["id"]}"][data-status="succeeded"]').wait_for()
    page.locator('#live[data-state="off"]').wait_for()
    page.screenshot(path=str(OUTPUT / "ui-call-ended.png"), full_page=True)
    page.close()


def test_a_wrong_key_stays_on_the_login_form(browser: Any, api_server: ThreadServer) -> None:
    page = browser.new_page()
    page.set_default_timeout(WAIT_MS)
    page.goto(f"{api_server.url}/ui")
    page.fill("#api_key", "not-the-right-key-at-all")
    page.click("button[type=submit]")
    assert "not valid" in page.locator("[role=alert]").inner_text()
    assert not [c for c in page.context.cookies() if c["name"] == "callq_session"]
    page.close()


def _grid(r: redis.Redis, room_id: str, kind: str, event_id: str, data: dict[str, object]) -> None:
    """An Event Grid event recorded as the Event Grid endpoint records it (room_event.lua on the real Redis)."""
    scid = "aHR0cHM6Ly9zZXJ2ZXItY2FsbC0x"
    doc = {"id": event_id, "type": f"Microsoft.Communication.{kind}", "time": "2026-01-01T09:00:00.000Z",
           "data": {"serverCallId": scid, "room": {"id": room_id}, **data}}
    scripts.run(r, record(RoomEvent(id=event_id, type=str(doc["type"]), room_id=room_id, server_call_id=scid,
                                    correlation_id="corr", time=str(doc["time"]), document=doc),
                          run_id=f"run-{event_id}", advance_message="advance", steps_queue="callq.ui-test",
                          dedup_ttl_s=600, ttl_s=3600, retention_s=3600))


def test_room_page_shows_a_run_and_its_timeline(browser: Any, api_server: ThreadServer,
                                                stack_env: dict[str, str]) -> None:
    # Seeded through Redis as the room routes, the Event Grid endpoint and the runner write it: this page reads
    # those records, and needs neither ACS nor Event Grid to show them.
    room_id, scid = "99100000000000001", "aHR0cHM6Ly9zZXJ2ZXItY2FsbC0x"
    r = redis.Redis.from_url(stack_env["CALLQ_REDIS_URL"], decode_responses=True)
    scripts.run(r, rooms.save(client="alice", room_id=room_id, fields={
        "valid_from": "2026-01-01T00:00:00.000Z", "valid_until": "2099-01-01T00:00:00.000Z",
        "pstn_dial_out_enabled": "0", "origin": "created", "managed_since": "2026-01-01T00:00:00.000Z"}))
    r.hset(keys.room_key(room_id), "automation", '{"on_call_started": [{"type": "connect", "body": {}, '
                                                 '"params": {}}], "updated_at": "2026-01-01T08:00:00.000Z"}')
    who = {"communicationIdentifier": {"rawId": "8:acs:teacher"}}
    _grid(r, room_id, "CallStarted", "eg-1", {"startedBy": who})
    r.hset(keys.command_key("cmd_ui_connect"), mapping={"id": "cmd_ui_connect", "client": "alice", "type": "connect",
                                                        "status": "succeeded", "call_connection_id": "cc-ui"})
    r.hset(keys.room_run_key(room_id, scid), mapping={"cmd:0": "cmd_ui_connect", "state": "succeeded"})

    page = _log_in(browser, api_server.url, TEST_API_KEY)
    row = page.locator(f'#rooms tr[data-room="{room_id}"]')
    assert "room's own" in row.inner_text() and "succeeded" in row.inner_text()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "ui-overview-rooms.png"), full_page=True)
    row.locator("a").click()
    page.locator(f'#runs article[data-run="{scid}"][data-state="succeeded"]').wait_for()
    page.locator('#runs tr[data-command="cmd_ui_connect"][data-status="succeeded"]').wait_for()
    started = page.locator('#timeline li[data-type="CallStarted"]')
    assert "8:acs:teacher" in started.inner_text()
    # The page re-fetches itself: an event recorded while it is open shows up without a reload.
    _grid(r, room_id, "CallParticipantAdded", "eg-2", {"user": {"communicationIdentifier": {"rawId": "8:acs:pupil"}}})
    assert "8:acs:pupil" in page.locator('#timeline li[data-type="CallParticipantAdded"]').inner_text()
    page.screenshot(path=str(OUTPUT / "ui-room.png"), full_page=True)
    page.close()
    r.close()


def _attempt(r: redis.Redis, outcome: webhooks.Outcome, status: int | None, error: str = "") -> str:
    """The first due lane's head attempted, recorded as the deliverer records it (webhook_result.lua)."""
    now = int(time.time() * 1000)
    [c] = scripts.run(r, webhooks.claim(now_ms=now, lease_ms=60_000, most=1, token=f"ui-{now}-{outcome}"))
    scripts.run(r, webhooks.record_result(c, outcome=outcome, now_ms=now, next_ms=now + 3_600_000 if outcome ==
                                          "retry" else 0, status=status, error=error, lease_ms=60_000,
                                          next_token=f"ui-next-{now}"))
    return c.message_id


def test_webhook_page_shows_an_endpoints_health_and_failing_deliveries(browser: Any, api_server: ThreadServer,
                                                                       stack_env: dict[str, str]) -> None:
    # Seeded through Redis as the webhook routes, a command's terminal move and the deliverer write it (no worker:
    # the attempts are recorded here), so the page shows a delivery that failed for good and one being retried.
    r = redis.Redis.from_url(stack_env["CALLQ_REDIS_URL"], decode_responses=True)
    ep = webhooks.new_endpoint_id()
    scripts.run(r, webhooks.save(client="alice", endpoint_id=ep, mode="create", max_endpoints=20, fields={
        "url": "https://hooks.example.com/callq", "events": "*", "enabled": "1", "state": "healthy",
        "description": "clinic app", "secret": webhooks.new_secret(), "created_at": "2026-01-01T00:00:00.000Z",
        "created_ms": str(int(time.time() * 1000)), "retention": "3600"}))
    for cid, cc in (("cmd_ui_lost", "cc-ui-lost"), ("cmd_ui_slow", "cc-ui-slow")):
        r.hset(keys.command_key(cid), mapping={"id": cid, "client": "alice", "type": "play", "status": "waiting",
                                               "call_connection_id": cc})
        scripts.run(r, ledger.transition(cid, Status.SUCCEEDED, {}))
    lost = _attempt(r, "failed", None, "timeout")
    slow = _attempt(r, "retry", 503)

    page = _log_in(browser, api_server.url, TEST_API_KEY)
    row = page.locator(f'#webhooks tr[data-webhook="{ep}"][data-state="failing"]')
    assert "clinic app" in row.inner_text() and "503" in row.inner_text()
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "ui-overview-webhooks.png"), full_page=True)
    row.locator("a").click()
    failed = page.locator(f'#deliveries tr.bad[data-delivery="{lost}"][data-status="failed"]')
    assert "timeout" in failed.inner_text() and "cc-ui-lost" in failed.inner_text()
    page.locator(f'#deliveries tr.warn[data-delivery="{slow}"][data-status="pending"]').wait_for()
    # The page re-fetches itself: the retried delivery getting through shows up without a reload.
    r.zadd(keys.WEBHOOKS_DUE, {f"{ep} cc-ui-slow": 0})  # due now rather than in an hour
    assert _attempt(r, "succeeded", 200) == slow
    page.locator(f'#deliveries tr[data-delivery="{slow}"][data-status="succeeded"]').wait_for()
    assert "healthy" in page.locator(".call-head").inner_text()
    page.screenshot(path=str(OUTPUT / "ui-webhook.png"), full_page=True)
    page.close()
    r.close()
