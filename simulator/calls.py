"""Call connection operations: connect (room calls), get properties, hang up, terminate."""

from __future__ import annotations

from typing import Any

from . import events, transcription
from .errors import invalid_request
from .model import Connection, ServerCall, utc_now
from .operation import Reply, Req, callback_url, find_connection, optional_str
from .world import Sim

ROOM_NOT_FOUND = (404, 8522, "Room not found.")
ROOM_CALL_NOT_STARTED = (404, 8522, "The room has no active call; participants must start it before connect.")
# Not found what ACS answers for a room outside its validity window; the simulator fails the connect the way it
# fails the other room cases (200, then ConnectFailed), even while a call started earlier is still running:
# the room "can no longer be joined" after validUntil, and connecting is joining.
ROOM_NOT_OPEN = (403, 8522, "The room is outside its validity window (validFrom..validUntil) and cannot be joined.")
CALL_NOT_FOUND = (404, 8522, "Call not found.")
GROUP_CALLS = (400, 8520, "Group call locators are not supported by the simulator.")


def connect(sim: Sim, req: Req) -> Reply:
    """200 at once, as ACS does; the outcome (CallConnected or ConnectFailed) arrives as events."""
    body = req.body
    callback = callback_url(body, "callbackUri", required=True)
    assert callback is not None
    context = optional_str(body, "operationContext")
    setup, cognitive = transcription.setup(body), transcription.cognitive_endpoint(body)
    call, failure, delay_ms = _locate(sim, body.get("callLocator"))
    ids = sim.store.ids
    conn = Connection(
        call_connection_id=ids.uuid(),
        callback_uri=callback,
        correlation_id=call.correlation_id if call else ids.uuid(),
        operation_context=context,
        call=call,
        transcription=setup,
        cognitive_services_endpoint=cognitive,
    )
    sim.store.connections[conn.call_connection_id] = conn
    if call is None:
        assert failure is not None
        sim.emit(conn, events.call_event(conn, "ConnectFailed", result=failure, operation_context=context))
        conn.state, conn.closed = "disconnected", True
    else:
        call.connections[conn.call_connection_id] = conn
        if delay_ms > 0:
            conn.timers.append(sim.later(delay_ms / 1000.0, _establish, sim, conn))
        else:
            _establish(sim, conn)
    response = properties(conn, state="connecting")  # ACS answers before the call is joined
    response.pop("serverCallId", None)  # and real connect responses carry no serverCallId
    return Reply(200, response, conn.call_connection_id)


def _establish(sim: Sim, conn: Connection) -> None:
    """CallConnected; then, when the connect asked for it, transcription starts (no operationContext: no request
    started it)."""
    sim.establish(conn)
    if conn.state == "connected" and conn.transcription is not None and conn.transcription.start_on_connect:
        transcription.begin(sim, conn, None, None, None)


def _locate(sim: Sim, locator: Any) -> tuple[ServerCall | None, events.Result | None, float]:
    if not isinstance(locator, dict):
        raise invalid_request("callLocator is required")
    if locator.get("roomId"):
        room = sim.store.rooms.get(str(locator["roomId"]))
        if room is None:
            return None, ROOM_NOT_FOUND, 0.0
        if not room.is_open(utc_now()):
            return None, ROOM_NOT_OPEN, 0.0
        if room.call is None or room.call.ended:
            return None, ROOM_CALL_NOT_STARTED, 0.0
        return room.call, None, room.connect_delay_ms
    if locator.get("serverCallId"):
        call = sim.store.calls.get(str(locator["serverCallId"]))
        if call is None or call.ended:
            return None, CALL_NOT_FOUND, 0.0
        room = sim.store.rooms.get(call.room_id or "")
        return call, None, room.connect_delay_ms if room else 0.0
    if locator.get("groupCallId"):
        return None, GROUP_CALLS, 0.0
    raise invalid_request("callLocator needs roomId, serverCallId or groupCallId")


def properties(conn: Connection, *, state: str | None = None) -> dict[str, Any]:
    """CallConnectionProperties as ACS returns them."""
    body: dict[str, Any] = {"callConnectionId": conn.call_connection_id}
    if conn.call is not None:
        body["serverCallId"] = conn.call.server_call_id
    body.update(
        targets=[],
        callConnectionState=state or conn.state,
        callbackUri=conn.callback_uri,
        correlationId=conn.correlation_id,
    )
    found = transcription.subscription(conn)
    if found is not None:
        body["transcriptionSubscription"] = found
    return body


def get_call(sim: Sim, req: Req) -> Reply:
    """200 with properties (state ``connected`` once CallConnected was sent)."""
    conn = find_connection(sim, req.call_connection_id)
    return Reply(200, properties(conn), conn.call_connection_id)


def hang_up(sim: Sim, req: Req) -> Reply:
    """``hang_up(False)``: only this connection leaves; the call goes on for everyone else."""
    conn = find_connection(sim, req.call_connection_id)
    sim.disconnect(conn, events.ENDED_BY_API)
    return Reply(204, None, conn.call_connection_id)


def terminate(sim: Sim, req: Req) -> Reply:
    """``hang_up(True)``: the call ends for everyone; every connection gets CallDisconnected."""
    conn = find_connection(sim, req.call_connection_id)
    if conn.call is None:
        sim.disconnect(conn, events.ENDED_BY_API)
    else:
        sim.end_call(conn.call, events.ENDED_BY_API)
    return Reply(204, None, conn.call_connection_id)
