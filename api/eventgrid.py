"""``/v1/eventgrid/events``: Event Grid's deliveries of the ACS resource's events (room calls).

Every POST is authenticated (``api.eventgrid_auth``: an Entra ID bearer token for the configured tenant and
audience, or a secret query token) before anything is read into Redis; a refused delivery stores nothing.
Then ``api.eventgrid_parse`` reads it: a validation handshake is answered, events are recorded one by one
(``workers.room_events``), deduplicated by their id (Event Grid delivers at least once).

Handshakes. Whether Event Grid puts its Entra token on the subscription-validation POST is not documented; if it
does not, insisting would make the subscription impossible to create. So with Entra configured, a POST with no
credentials at all that holds nothing but the validation event is answered (it stores nothing and only says
"this endpoint agrees to receive"); every delivery of events must pass. The CloudEvents schema's OPTIONS
handshake is answered the same way, for the same reason.

Events of calls that are not room calls, and types callq has no use for, are acknowledged and dropped: Event
Grid would otherwise retry them for a day.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.callbacks import kick
from api.eventgrid_parse import Event, ValidationRequest, parse_delivery, read_body, webhook_grant
from api.recordings import attach_event
from tasks.automations import ADVANCE
from tasks.publish import task_message
from workers import correlation, keys, metrics, room_events
from workers.errors import Unauthorized
from workers.room_events import RoomEvent
from workers.settings import Settings

log = logging.getLogger("callq.api.eventgrid")
RUN_EVENTS = frozenset({"CallStarted", "CallEnded"})  # the types that may open or wake an automation run


def _time(event: Event) -> str:
    if event.time is None:
        return ""
    return event.time.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloudevent(event: Event) -> dict[str, Any]:
    """The event in CloudEvents form, as Event Grid maps its own schema (source = topic, type = eventType)."""
    return {"id": event.id, "source": event.source, "type": event.type, "specversion": "1.0",
            "time": _time(event) or None, "subject": event.subject, "data": event.data}


async def _room_of(request: Request, event: Event) -> str:
    if event.acs.room_id:
        return event.acs.room_id
    # RecordingFileStatusUpdated names its call, not its room: the room is whatever CallStarted said it was.
    if event.acs.server_call_id:
        return await request.state.redis.get(keys.server_call_room_key(event.acs.server_call_id)) or ""
    return ""


async def eventgrid_events(request: Request) -> Response:
    """Record a delivery of ACS events from Event Grid (or answer its validation handshake)."""
    state = request.state
    settings: Settings = state.settings
    try:
        await state.eventgrid.verify(request)  # before the body is read: a refused sender costs us nothing more
    except Unauthorized as exc:
        if exc.code != "missing_token" or not settings.eventgrid_entra:
            raise
        handshake = parse_delivery(await read_body(request), request.headers)
        if not isinstance(handshake, ValidationRequest):
            raise
        log.info("answered an Event Grid validation handshake that carried no credentials")
        return handshake.response()
    delivery = parse_delivery(await read_body(request), request.headers)
    if isinstance(delivery, ValidationRequest):
        return delivery.response()
    stored = duplicates = ignored = 0
    for event in delivery.events:
        if event.type == room_events.RECORDING_FILE:  # kept on callq's recording, whichever room (if any) it is in
            await attach_event(request, event)
        room = await _room_of(request, event)
        short = event.type.removeprefix(room_events.PREFIX)
        if not room or not event.type.startswith(room_events.PREFIX):
            ignored += 1
            metrics.RECORDER.inc("callq_eventgrid_events", short, "ignored")
            continue
        ev = RoomEvent(id=event.id, type=event.type, room_id=room, server_call_id=event.acs.server_call_id or "",
                       correlation_id=event.acs.correlation_id or "", time=_time(event), document=cloudevent(event))
        found = await _record(request, ev)
        if found.duplicate:
            duplicates += 1
            metrics.RECORDER.inc("callq_eventgrid_events", short, "duplicate")
            continue
        stored += 1
        metrics.RECORDER.inc("callq_eventgrid_events", short, "stored")
        if found.run == "created":
            metrics.RECORDER.inc("callq_automation_runs", "started")
        if found.end_call:
            await _end_call(request, ev, found.end_call)
    return JSONResponse({"stored": stored, "duplicates": duplicates, "ignored": ignored})


async def _record(request: Request, ev: RoomEvent) -> room_events.Recorded:
    state = request.state
    settings: Settings = state.settings
    room, scid, short = ev.room_id, ev.server_call_id, ev.short_type
    message = ""
    if short in RUN_EVENTS and scid:
        message = task_message(state.celery, ADVANCE, str(uuid.uuid4()), [room, scid],  # token: None
                               queue=settings.steps_queue)
    run_id = f"run_{time.time_ns() // 1_000_000:012x}{uuid.uuid4().hex[:12]}"
    found: room_events.Recorded = await state.scripts.run(room_events.record(
        ev, run_id=run_id, advance_message=message, steps_queue=settings.steps_queue,
        dedup_ttl_s=settings.event_dedup_ttl_s, ttl_s=settings.command_ttl_s, retention_s=settings.event_retention_s))
    if not found.duplicate:
        log.debug("Event Grid %s for room %s stored%s", short, room, f", run {found.run}" if found.run else "")
    return found


async def _end_call(request: Request, ev: RoomEvent, call_connection_id: str) -> None:
    """CallEnded: callq's connection to that call ends as a CallDisconnected would end it."""
    state = request.state
    settings: Settings = state.settings
    report = await correlation.ingest(state.scripts, [room_events.disconnected(ev, call_connection_id)],
                                      dedup_ttl_s=settings.event_dedup_ttl_s, ttl_s=settings.command_ttl_s,
                                      retention_s=settings.event_retention_s)
    for lane in report.lanes:
        await kick(request, lane)


async def eventgrid_options(request: Request) -> Response:
    """CloudEvents abuse protection: agree to receive events from the origin that asks."""
    return Response(status_code=200, headers=webhook_grant(request.headers))


eventgrid_routes = [
    Route("/v1/eventgrid/events", eventgrid_events, methods=["POST"]),
    Route("/v1/eventgrid/events", eventgrid_options, methods=["OPTIONS"]),
]
