"""The operator page at ``/ui``: live calls, each call's commands and event timeline, commands in trouble.

Plain server-rendered HTML and one small script, no build step. Each page's ``<main>`` is rendered here and
re-fetched as a fragment: every couple of seconds, and on a call's page at once whenever its SSE stream
(``/v1/calls/{id}/events/stream``) delivers an event, so events show up as ACS sends them.

Authentication is the API's: an ``Authorization`` header, or a session cookie from the login form (the API key
is posted once, and the cookie holds only the client name, an expiry and a MAC keyed by that key's digest).
EventSource cannot send headers, so the cookie is what lets the browser open the stream; cookies are accepted
for reads only (see ``api.auth``), are HttpOnly and SameSite=Strict, and the pages send a strict CSP.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import parse_qs, quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from api.auth import SESSION_COOKIE
from api.metrics import Health, read_health
from workers import keys, metrics
from workers.command import Status
from workers.errors import Unauthorized
from workers.operations import OPERATIONS

TEMPLATES = Path(__file__).parent / "templates"
SESSION_TTL_S = 12 * 3600
REFRESH_S = 2
CALLS_SHOWN = 100
ATTENTION_SHOWN = 50
ENDED_SHOWN = 10
EVENTS_SHOWN = 500
MAX_FORM_BYTES = 4096
# SSE delivers named events only to listeners of that name, so the page listens for every type ACS sends.
EVENT_TYPES = sorted(set().union(*(op.succeeds_on | op.fails_on for op in OPERATIONS.values())) | {
    "CallConnected", "CallDisconnected", "ParticipantsUpdated", "RecordingStateChanged", "ConnectFailed",
    "ContinuousDtmfRecognitionToneReceived", "ContinuousDtmfRecognitionToneFailed",
    "ContinuousDtmfRecognitionStopped", "PlayStarted", "CallTransferAccepted", "CallTransferFailed"})
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
                               "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make our own login POST send "Origin: null"
    "Cache-Control": "no-store",
}
ENDED = frozenset({"disconnected", "connect failed"})
ASSETS = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}


@functools.cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _client(request: Request) -> str | None:
    try:
        return str(request.state.api_keys.client_for(request))
    except Unauthorized:
        return None


def _page(title: str, client: str, main: str, *, refresh: str, stream: str = "", status: int = 200) -> HTMLResponse:
    html = _template("page.html").substitute(
        title=escape(title), client=escape(client), main=main, refresh=escape(refresh), every=REFRESH_S,
        stream=escape(stream), events=escape(",".join(EVENT_TYPES)))
    return HTMLResponse(html, status_code=status, headers=HEADERS)


def _login(message: str = "", status: int = 200) -> HTMLResponse:
    note = f'<p class="error" role="alert">{escape(message)}</p>' if message else ""
    return HTMLResponse(_template("login.html").substitute(message=note), status_code=status, headers=HEADERS)


# --- formatting helpers (all output is escaped here) -------------------------------------------------------------

def _time(iso: str | None) -> str:
    if not iso:
        return "—"
    clock = iso.split("T", 1)[-1].rstrip("Z")[:12]
    return f'<time datetime="{escape(iso)}" title="{escape(iso)}">{escape(clock)}</time>'


def _badge(text: str, kind: str | None = None) -> str:
    return f'<span class="badge {escape(kind or text)}">{escape(text)}</span>'


def _short(identifier: str, keep: int = 8) -> str:
    return escape(identifier if len(identifier) <= keep + 1 else identifier[:keep] + "…")


def _json(raw: str | None) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _clock_ms(epoch_ms: int) -> str:
    return _time(datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))


def _ms(start: str | None, end: str | None) -> str:
    seconds = metrics.seconds_between(start, end)
    if seconds is None:
        return "—"
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


# --- reading what the page shows ---------------------------------------------------------------------------------

async def _participants(r: Any, cc: str) -> list[dict[str, Any]] | None:
    """The roster from the call's latest ParticipantsUpdated event (None: ACS has not reported one)."""
    for _, fields in await r.xrevrange(keys.call_events_key(cc), count=200):
        event = _json(fields.get("event")) or {}
        if str(event.get("type", "")).endswith("ParticipantsUpdated"):
            return list((event.get("data") or {}).get("participants") or [])
    return None


async def _recording(r: Any, call: dict[str, str]) -> str:
    """``none``, ``starting``, ``recording``, ``paused`` or ``stopped``.

    ACS reports only ``active`` / ``inactive`` (RecordingStateChanged, kept on the recording); whether inactive
    means paused or stopped is what the last successful recording command of callq's says.
    """
    rid = call.get("recording_id")
    if not rid:
        return "none"
    acs_state = await r.hget(keys.recording_key(rid), "state")
    if acs_state == "active":
        return "recording"
    if not acs_state:
        return "starting"
    pipe = r.pipeline(transaction=False)
    for cid in await r.lrange(keys.recording_commands_key(rid), 0, -1):
        pipe.hmget(keys.command_key(cid), "type", "status")
    done = [t for t, s in await pipe.execute() if s == "succeeded"]
    return "paused" if done and done[-1] == "pause_recording" and call.get("state") != "disconnected" else "stopped"


def _call_state(call: dict[str, str], connect_status: str | None) -> str:
    """The call's state for people: a call whose connect failed is over, though ACS never connected it."""
    if call.get("state") in (None, "", "connecting") and connect_status == "failed":
        return "connect failed"
    return call.get("state") or "connecting"


async def _calls(r: Any, client: str) -> list[dict[str, Any]]:
    ids = await r.zrevrange(metrics.CALLS_KEY, 0, CALLS_SHOWN - 1, withscores=True)
    pipe = r.pipeline(transaction=False)
    for cc, _ in ids:
        pipe.hgetall(keys.call_key(cc))
        pipe.lrange(keys.call_commands_key(cc), 0, -1)
    rows = await pipe.execute()
    calls = []
    for (cc, score), call, command_ids in zip(ids, rows[::2], rows[1::2], strict=True):
        if call.get("client") != client:
            continue  # another client's call (or one that expired): never shown
        calls.append({"id": cc, "call": call, "commands": command_ids, "active_ms": int(score)})
    return calls


async def _describe(r: Any, entry: dict[str, Any]) -> dict[str, Any]:
    cc, call = entry["id"], entry["call"]
    pipe = r.pipeline(transaction=False)
    for cid in entry["commands"]:
        pipe.hget(keys.command_key(cid), "status")
    pipe.hget(keys.command_key(call.get("connect_command") or "-"), "status")
    *statuses, connect_status = await pipe.execute()
    return {**entry, "participants": await _participants(r, cc), "recording": await _recording(r, call),
            "state": _call_state(call, connect_status),
            "pending": sum(1 for s in statuses if s and s not in Status.TERMINAL)}


async def _attention(r: Any, client: str) -> list[dict[str, Any]]:
    """Commands retrying, throttled or failed, newest first; one that recovered (succeeded) drops out."""
    ids = await r.zrevrange(metrics.ATTENTION_KEY, 0, 4 * ATTENTION_SHOWN - 1)
    pipe = r.pipeline(transaction=False)
    for cid in ids:
        pipe.hgetall(keys.command_key(cid))
    items = []
    for record in await pipe.execute():
        if record.get("client") != client:
            continue
        status = record.get("status", "")
        trouble = ("failed" if status == "failed" else "throttled" if status not in Status.TERMINAL and
                   record.get("throttled") else "retrying" if status not in Status.TERMINAL and
                   record.get("last_error") else None)
        if trouble:
            items.append({**record, "trouble": trouble})
    return items[:ATTENTION_SHOWN]


# --- rendering ---------------------------------------------------------------------------------------------------

def _health_cards(h: Health, live: int) -> str:
    paused = f"paused {h.acs_pause_s:.1f} s" if h.acs_pause_s > 0 else "no"
    cards = [
        ("Live calls", str(live), ""),
        ("Waiting for ACS", f"{h.waiting}" + (f" ({h.waiting_overdue} overdue)" if h.waiting_overdue else ""),
         "warn" if h.waiting_overdue else ""),
        ("Queue depth", str(h.queue_depth), "warn" if h.queue_depth > 100 else ""),
        ("Workers alive", str(h.workers_alive), "bad" if h.workers_alive == 0 else "good"),
        ("ACS throttling", paused, "warn" if h.acs_pause_s > 0 else "good"),
    ]
    return '<section class="cards" aria-label="health">' + "".join(
        f'<div class="card {kind}"><span class="label">{escape(label)}</span>'
        f'<span class="value">{escape(value)}</span></div>' for label, value, kind in cards) + "</section>"


def _roster(participants: list[dict[str, Any]] | None) -> str:
    if participants is None:
        return '<span class="muted">not reported yet</span>'
    if not participants:
        return '<span class="muted">nobody</span>'
    chips = []
    for p in participants:
        raw = str((p.get("identifier") or {}).get("rawId") or "?")
        muted = " (muted)" if p.get("isMuted") else ""
        chips.append(f'<span class="chip" title="{escape(raw)}">{escape(raw)}{escape(muted)}</span>')
    return "".join(chips)


def _calls_table(calls: list[dict[str, Any]], *, caption: str) -> str:
    if not calls:
        return f'<p class="empty">No {escape(caption.lower())}.</p>'
    rows = []
    for c in calls:
        call, state = c["call"], c["state"]
        rows.append(
            f'<tr data-call="{escape(c["id"])}"><td><a href="/ui/calls/{quote(c["id"])}">{_short(c["id"], 13)}</a>'
            f'<div class="muted">room {_short(call.get("room_id") or "—", 17)}</div></td>'
            f"<td>{_badge(state)}</td><td>{_roster(c['participants'])}</td><td>{_badge(c['recording'])}</td>"
            f"<td>{len(c['commands'])}" + (f' <span class="muted">({c["pending"]} pending)</span>' if c["pending"]
                                          else "") + f"</td><td>{_clock_ms(c['active_ms'])}</td></tr>")
    return ("<table><thead><tr><th>Call</th><th>State</th><th>Participants</th><th>Recording</th>"
            "<th>Commands</th><th>Last activity</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _reason(record: dict[str, str]) -> str:
    if record["trouble"] == "throttled":
        return escape(record.get("throttled") or "")
    error = _json(record.get("error") if record["trouble"] == "failed" else record.get("last_error")) or {}
    return f"<code>{escape(str(error.get('code', '')))}</code> {escape(str(error.get('message', '')))}"


def _attention_table(items: list[dict[str, str]]) -> str:
    if not items:
        return '<p class="empty">Nothing needs attention: no command is retrying, throttled or failed.</p>'
    rows = []
    for item in items:
        cc = item.get("call_connection_id") or ""
        call = f'<a href="/ui/calls/{quote(cc)}">{_short(cc, 13)}</a>' if cc else '<span class="muted">—</span>'
        rows.append(f'<tr data-command="{escape(item["id"])}"><td><code>{_short(item["id"], 12)}</code></td>'
                    f'<td>{escape(item.get("type", ""))}</td><td>{call}</td><td>{_badge(item["trouble"])}</td>'
                    f'<td>{_reason(item)}</td><td>{escape(item.get("attempts", "0"))}</td>'
                    f'<td>{_time(item.get("updated_at"))}</td></tr>')
    return ("<table><thead><tr><th>Command</th><th>Type</th><th>Call</th><th>Trouble</th><th>Why</th>"
            "<th>Attempts</th><th>Updated</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


async def _overview(request: Request, client: str) -> str:
    state = request.state
    r = state.redis
    described = [await _describe(r, c) for c in await _calls(r, client)]
    live = [c for c in described if c["state"] not in ENDED]
    ended = [c for c in described if c["state"] in ENDED][:ENDED_SHOWN]
    health = await read_health(r, queue=state.settings.queue, acs_endpoint=state.settings.acs_endpoint)
    return (_health_cards(health, len(live))
            + f'<section id="live-calls"><h2>Live calls</h2>{_calls_table(live, caption="Live calls")}</section>'
            + '<section id="attention"><h2>Commands needing attention</h2>'
            + f"{_attention_table(await _attention(r, client))}</section>"
            + '<section id="ended-calls"><h2>Recently ended calls</h2>'
            + f'{_calls_table(ended, caption="Recently ended calls")}</section>')


def _command_rows(records: list[dict[str, str]]) -> str:
    rows = []
    for n, rec in enumerate(records, 1):
        status = rec.get("status", "")
        trouble = "throttled" if status not in Status.TERMINAL and rec.get("throttled") else (
            "retrying" if status not in Status.TERMINAL and rec.get("last_error") else "")
        outcome = ""
        if status == "failed":
            error = _json(rec.get("error")) or {}
            outcome = f"<code>{escape(str(error.get('code', '')))}</code> {escape(str(error.get('message', '')))}"
        elif status == "succeeded":
            outcome = escape(str((_json(rec.get("resolved_by")) or {}).get("type") or "ACS response"))
        elif trouble:
            outcome = _reason({**rec, "trouble": trouble})
        rows.append(f'<tr data-command="{escape(rec.get("id", ""))}" data-status="{escape(status)}"><td>{n}</td>'
                    f'<td>{escape(rec.get("type", ""))}</td><td>{_badge(status)}'
                    + (f" {_badge(trouble)}" if trouble else "")
                    + f'</td><td>{escape(rec.get("attempts", "0"))}</td><td>{outcome}</td>'
                    f'<td>{_ms(rec.get("created_at"), rec.get("resolved_at"))}</td>'
                    f'<td><code title="{escape(rec.get("id", ""))}">{_short(rec.get("id", ""), 12)}</code></td></tr>')
    return "".join(rows)


def _event_item(seq: str, event: dict[str, Any], types: dict[str, str]) -> str:
    """One timeline entry; ``types`` maps the call's command ids to their types (operationContext → command)."""
    data = event.get("data") or {}
    kind = str(event.get("type", "")).rsplit(".", 1)[-1]
    info = data.get("resultInformation") or {}
    code = info.get("code")
    failed = "Failed" in kind or isinstance(code, int) and code >= 300
    details = []
    context = str(data.get("operationContext") or "")
    if context:
        details.append(f'→ {escape(types.get(context, "command"))} <code title="{escape(context)}">'
                       f"{_short(context, 12)}</code>")
    if kind == "ParticipantsUpdated":
        details.append(f"{len(data.get('participants') or [])} participants")
    if kind == "RecordingStateChanged":
        details.append(f"recording {escape(str(data.get('state') or ''))}")
    if failed or kind == "CallDisconnected":  # success codes are noise; a failure's or a hang-up's reason is not
        details.append(f"{escape(str(code))}/{escape(str(info.get('subCode', '')))} "
                       f"{escape(str(info.get('message') or ''))}")
    return (f'<li data-seq="{escape(seq)}" data-type="{escape(kind)}" class="{"bad" if failed else ""}">'
            f'{_time(event.get("time"))} <strong>{escape(kind)}</strong> '
            f'<span class="muted">{" · ".join(details)}</span></li>')


async def _call_main(request: Request, client: str, cc: str) -> str | None:
    r = request.state.redis
    call = await r.hgetall(keys.call_key(cc))
    if call.get("client") != client:
        return None
    pipe = r.pipeline(transaction=False)
    for cid in await r.lrange(keys.call_commands_key(cc), 0, -1):
        pipe.hgetall(keys.command_key(cid))
    # Acceptance order by time: the connect joins the call's list only when ACS answered it, maybe after others.
    commands = sorted((rec for rec in await pipe.execute() if rec), key=lambda rec: rec.get("created_at", ""))
    types = {rec["id"]: rec.get("type", "") for rec in commands}
    events = await r.xrevrange(keys.call_events_key(cc), count=EVENTS_SHOWN)
    items = "".join(_event_item(seq, _json(f.get("event")) or {}, types) for seq, f in events)  # newest first
    recording = await _recording(r, call)
    connect: dict[str, str] = next((rec for rec in commands if rec.get("type") == "connect"), {})
    state = _call_state(call, connect.get("status"))
    ended = "disconnected" if state in ENDED else state  # the script stops listening to an ended call
    return (f'<section class="call-head" data-state="{escape(ended)}"><h2>Call <code>{escape(cc)}</code></h2>'
            f'<p>{_badge(state)} room <code>{escape(call.get("room_id") or "—")}</code> · recording '
            f'{_badge(recording)}</p><p>Participants <span class="muted">(as ACS last reported)</span>: '
            f'{_roster(await _participants(r, cc))}</p></section>'
            '<div class="columns"><section id="commands"><h2>Commands</h2>'
            + ("<table><thead><tr><th>#</th><th>Type</th><th>Status</th><th>Attempts</th><th>Outcome</th>"
               "<th>Accepted → resolved</th><th>Id</th></tr></thead><tbody>" + _command_rows(commands)
               + "</tbody></table>" if commands else '<p class="empty">No commands yet.</p>')
            + '</section><section id="timeline"><h2>Event timeline <span class="muted">(newest first)</span></h2>'
            + (f'<ol class="events">{items}</ol>' if items else '<p class="empty">No events yet.</p>')
            + "</section></div>")


# --- endpoints ---------------------------------------------------------------------------------------------------

async def home(request: Request) -> Response:
    client = _client(request)
    if client is None:
        return _login()
    return _page("Overview", client, await _overview(request, client), refresh="/ui/fragments/overview")


async def overview_fragment(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    return HTMLResponse(await _overview(request, client), headers=HEADERS)


async def call_page(request: Request) -> Response:
    client = _client(request)
    if client is None:
        return RedirectResponse("/ui", status_code=303)
    cc = request.path_params["call_connection_id"]
    main = await _call_main(request, client, cc)
    if main is None:
        return _page("Unknown call", client, '<p class="empty">No such call is known to this client.</p>',
                     refresh="", status=404)
    return _page(f"Call {cc}", client, main, refresh=f"/ui/fragments/calls/{quote(cc)}",
                 stream=f"/v1/calls/{quote(cc)}/events/stream")


async def call_fragment(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    main = await _call_main(request, client, request.path_params["call_connection_id"])
    if main is None:
        return HTMLResponse('<p class="empty">No such call is known to this client.</p>', 404, headers=HEADERS)
    return HTMLResponse(main, headers=HEADERS)


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on a form POST: refuse another site's (login CSRF would log you in as someone else)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


async def login(request: Request) -> Response:
    if not _same_origin(request):
        return _login("Log in from this page.", status=403)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _login("That is not an API key.", status=413)
    key = (parse_qs(body.decode("utf-8", errors="replace")).get("api_key") or [""])[0]
    client = request.state.api_keys.name_for_key(key) if key else None
    if client is None:
        return _login("That API key is not valid.", status=401)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(SESSION_COOKIE, request.state.api_keys.session_for(client, SESSION_TTL_S),
                        max_age=SESSION_TTL_S, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    response = RedirectResponse("/ui", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        return Response(status_code=404)
    return Response((TEMPLATES / name).read_bytes(), media_type=ASSETS[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


ui_routes = [
    Route("/ui", home, methods=["GET"], include_in_schema=False),
    Route("/ui/login", login, methods=["POST"], include_in_schema=False),
    Route("/ui/logout", logout, methods=["POST"], include_in_schema=False),
    Route("/ui/fragments/overview", overview_fragment, methods=["GET"], include_in_schema=False),
    Route("/ui/calls/{call_connection_id}", call_page, methods=["GET"], include_in_schema=False),
    Route("/ui/fragments/calls/{call_connection_id}", call_fragment, methods=["GET"], include_in_schema=False),
    Route("/ui/assets/{name}", asset, methods=["GET"], include_in_schema=False),
]
