"""The operator page at ``/ui``: live calls, each call's commands and event timeline, commands in trouble, the
client's rooms with their automation runs and Event Grid timeline, its webhook endpoints with their health and
deliveries.

Server-rendered Jinja2 templates (``api/templates/``, autoescaped) and one small static script, no build step.
Each page's ``<main>`` is a template of its own, re-fetched as a fragment: every couple of seconds, and on a
call's page at once whenever its SSE stream (``/v1/calls/{id}/events/stream``) delivers an event, so events show
up as ACS sends them (a room's or webhook endpoint's page has no stream: it refreshes on the timer).
``api.ui_data``, ``api.ui_rooms`` and ``api.ui_webhooks`` read what the pages show.

Authentication is the API's: an ``Authorization`` header, or a session cookie from the login form (the API key
is posted once, and the cookie holds only the client name, an expiry and a MAC keyed by that key's digest).
EventSource cannot send headers, so the cookie is what lets the browser open the stream; cookies are accepted
for reads only (see ``api.auth``), are HttpOnly and SameSite=Strict, and the pages send a strict CSP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import jinja2
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from api import ui_data, ui_rooms, ui_webhooks
from api.auth import SESSION_COOKIE
from workers.errors import Unauthorized
from workers.operations import OPERATIONS

STATIC = Path(__file__).parent / "static"
SESSION_TTL_S = 12 * 3600
REFRESH_S = 2
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
ASSETS = {"ui.css": "text/css; charset=utf-8", "ui.js": "text/javascript; charset=utf-8"}


def _short(identifier: str, keep: int = 8) -> str:
    return identifier if len(identifier) <= keep + 1 else identifier[:keep] + "…"


def _clock(iso: str) -> str:
    """``2026-01-01T09:30:00.250Z`` → ``09:30:00.250`` (the full time is in the element's title)."""
    return iso.split("T", 1)[-1].rstrip("Z")[:12]


def _tail(identifier: str, keep: int = 10) -> str:
    """The end of an id whose start is shared: serverCallIds are base64 of a URL, all beginning ``aHR0cHM6Ly9``."""
    return identifier if len(identifier) <= keep + 1 else "…" + identifier[-keep:]


def _stamp(iso: str) -> str:
    """``2026-01-01T09:30:00.250Z`` → ``2026-01-01 09:30``: for times that may not be today (a room's window)."""
    return iso[:16].replace("T", " ")


def _templates() -> Jinja2Templates:
    # Autoescape always (not by file extension) and fail on an undefined name rather than render it empty.
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(short=_short, clock=_clock, tail=_tail, stamp=_stamp)
    env.globals.update(every=REFRESH_S, event_types=",".join(EVENT_TYPES))
    return Jinja2Templates(env=env)


TEMPLATES = _templates()


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    return TEMPLATES.TemplateResponse(request, name, context, status_code=status, headers=HEADERS)


def _page(request: Request, client: str, fragment: str, context: dict[str, Any], *, title: str, refresh: str,
          stream: str = "", status: int = 200) -> Response:
    return _render(request, "page.html", {**context, "title": title, "client": client, "fragment": fragment,
                                          "refresh": refresh, "stream": stream}, status)


def _login(request: Request, message: str = "", status: int = 200) -> Response:
    return _render(request, "login.html", {"message": message}, status)


def _client(request: Request) -> str | None:
    try:
        return str(request.state.api_keys.client_for(request))
    except Unauthorized:
        return None


async def _overview(request: Request, client: str) -> dict[str, Any]:
    settings = request.state.settings
    calls = await ui_data.overview(request.state.redis, client, queue=settings.queue,
                                   acs_endpoint=settings.acs_endpoint, pending_limit=settings.client_max_pending)
    return {**calls, **await ui_rooms.overview(request.state.redis, client, now=datetime.now(UTC)),
            **await ui_webhooks.overview(request.state.redis, client)}


async def home(request: Request) -> Response:
    client = _client(request)
    if client is None:
        return _login(request)
    return _page(request, client, "overview.html", await _overview(request, client), title="Overview",
                 refresh="/ui/fragments/overview")


async def overview_fragment(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    return _render(request, "overview.html", await _overview(request, client))


async def call_page(request: Request) -> Response:
    client = _client(request)
    if client is None:
        return RedirectResponse("/ui", status_code=303)
    cc = request.path_params["call_connection_id"]
    context = await ui_data.call(request.state.redis, client, cc)
    if context is None:
        return _page(request, client, "unknown_call.html", {}, title="Unknown call", refresh="", status=404)
    return _page(request, client, "call.html", context, title=f"Call {cc}", refresh=f"/ui/fragments/calls/{quote(cc)}",
                 stream=f"/v1/calls/{quote(cc)}/events/stream")


async def call_fragment(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    context = await ui_data.call(request.state.redis, client, request.path_params["call_connection_id"])
    if context is None:
        return _render(request, "unknown_call.html", {}, 404)
    return _render(request, "call.html", context)


async def _room(request: Request, client: str) -> dict[str, Any] | None:
    return await ui_rooms.room(request.state.redis, client, request.path_params["room_id"], now=datetime.now(UTC))


async def _detail(request: Request, load: Callable[[Request, str], Awaitable[dict[str, Any] | None]], template: str,
                  unknown: str, title: str, fragment: str) -> Response:
    """A room's or a webhook endpoint's page (or, for an unknown or another client's one, its 404 page)."""
    client = _client(request)
    if client is None:
        return RedirectResponse("/ui", status_code=303)
    context = await load(request, client)
    if context is None:
        return _page(request, client, unknown, {}, title=f"Unknown {title.split()[0].lower()}", refresh="",
                     status=404)
    return _page(request, client, template, context, title=title, refresh=fragment)


async def _detail_fragment(request: Request, load: Callable[[Request, str], Awaitable[dict[str, Any] | None]],
                           template: str, unknown: str) -> Response:
    context = await load(request, request.state.api_keys.client_for(request))
    if context is None:
        return _render(request, unknown, {}, 404)
    return _render(request, template, context)


async def room_page(request: Request) -> Response:
    room_id = request.path_params["room_id"]
    return await _detail(request, _room, "room.html", "unknown_room.html", f"Room {room_id}",
                         f"/ui/fragments/rooms/{quote(room_id)}")


async def room_fragment(request: Request) -> Response:
    return await _detail_fragment(request, _room, "room.html", "unknown_room.html")


async def _webhook(request: Request, client: str) -> dict[str, Any] | None:
    return await ui_webhooks.endpoint(request.state.redis, client, request.path_params["webhook_id"])


async def webhook_page(request: Request) -> Response:
    webhook_id = request.path_params["webhook_id"]
    return await _detail(request, _webhook, "webhook.html", "unknown_webhook.html", f"Webhook {webhook_id}",
                         f"/ui/fragments/webhooks/{quote(webhook_id)}")


async def webhook_fragment(request: Request) -> Response:
    return await _detail_fragment(request, _webhook, "webhook.html", "unknown_webhook.html")


def _same_origin(request: Request) -> bool:
    """Browsers send Origin on a form POST: refuse another site's (login CSRF would log you in as someone else)."""
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.url.netloc}"


async def login(request: Request) -> Response:
    if not _same_origin(request):
        return _login(request, "Log in from this page.", status=403)
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        return _login(request, "That is not an API key.", status=413)
    key = (parse_qs(body.decode("utf-8", errors="replace")).get("api_key") or [""])[0]
    client = request.state.api_keys.name_for_key(key) if key else None
    if client is None:
        return _login(request, "That API key is not valid.", status=401)
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
    return Response((STATIC / name).read_bytes(), media_type=ASSETS[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


ui_routes = [
    Route("/ui", home, methods=["GET"], include_in_schema=False),
    Route("/ui/login", login, methods=["POST"], include_in_schema=False),
    Route("/ui/logout", logout, methods=["POST"], include_in_schema=False),
    Route("/ui/fragments/overview", overview_fragment, methods=["GET"], include_in_schema=False),
    Route("/ui/calls/{call_connection_id}", call_page, methods=["GET"], include_in_schema=False),
    Route("/ui/fragments/calls/{call_connection_id}", call_fragment, methods=["GET"], include_in_schema=False),
    Route("/ui/rooms/{room_id}", room_page, methods=["GET"], include_in_schema=False),
    Route("/ui/fragments/rooms/{room_id}", room_fragment, methods=["GET"], include_in_schema=False),
    Route("/ui/webhooks/{webhook_id}", webhook_page, methods=["GET"], include_in_schema=False),
    Route("/ui/fragments/webhooks/{webhook_id}", webhook_fragment, methods=["GET"], include_in_schema=False),
    Route("/ui/assets/{name}", asset, methods=["GET"], include_in_schema=False),
]
