"""Recording operations: start (server call or connection locator; rooms rejected), pause, resume, stop, get."""

from __future__ import annotations

from typing import Any

from .errors import call_not_found, call_terminated, duplicate_recording, invalid_request, recording_not_found
from .events import now_iso, start_recording_failed
from .model import Recording, ServerCall
from .operation import Reply, Req, callback_url, connected
from .world import Sim

_CHOICES = {
    "recordingContentType": ("audio", "audioVideo"),
    "recordingChannelType": ("mixed", "unmixed"),
    "recordingFormatType": ("wav", "mp3", "mp4"),
}


def start_recording(sim: Sim, req: Req) -> Reply:
    """200 ``inactive``; RecordingStateChanged ``active`` follows (unless ``pauseOnStart``)."""
    body = req.body
    call, cc = _recorded_call(sim, body)
    for key, allowed in _CHOICES.items():
        if body.get(key) is not None and body[key] not in allowed:
            raise invalid_request(f"{key} must be one of {list(allowed)}")
    url = callback_url(body, "recordingStateCallbackUri")
    if call.recording is not None:
        raise duplicate_recording()
    if cc is None:  # a serverCallId locator: events name (and default to) a connection on that call
        conn = next((c for c in call.connections.values() if c.state == "connected"), None)
        cc = conn.call_connection_id if conn else None
    fallback = sim.store.connections[cc].callback_uri if cc else None
    rec = Recording(sim.store.ids.recording_id(), call, url or fallback, cc)
    rec.content_type = body.get("recordingContentType") or rec.content_type
    rec.channel_type = body.get("recordingChannelType") or rec.channel_type
    rec.format_type = body.get("recordingFormatType") or rec.format_type
    failure = sim.scripted_failure("startRecording", targets=call.participants, connections=call.connections)
    if failure is not None:  # accepted, then StartRecordingFailed; the recording never exists (GET: 404/8522)
        sim.send(rec.callback_uri, start_recording_failed(rec, failure.result))
        return Reply(200, _state(rec), cc)
    sim.store.recordings[rec.recording_id] = rec
    call.recording = rec
    response = _state(rec)  # ACS answers "inactive"; the recording becomes active just after
    if not body.get("pauseOnStart"):
        rec.state, rec.start_date_time = "active", now_iso()
        sim.emit_recording(rec)
    return Reply(200, response, cc)


def _recorded_call(sim: Sim, body: dict[str, Any]) -> tuple[ServerCall, str | None]:
    locator = body.get("callLocator")
    if isinstance(locator, dict):
        if locator.get("roomId") or locator.get("kind") == "roomCallLocator":
            raise invalid_request("a room call locator is not supported for start recording; use the serverCallId")
        if locator.get("groupCallId"):
            raise invalid_request("group call locators are not supported by the simulator")
        call = sim.store.calls.get(str(locator.get("serverCallId") or ""))
        if call is None or call.ended:
            raise call_not_found()
        return call, None
    if body.get("callConnectionId"):
        conn, call = connected(sim, str(body["callConnectionId"]))
        return call, conn.call_connection_id
    raise invalid_request("callLocator or callConnectionId is required")


def _recording(sim: Sim, req: Req) -> Recording:
    rec = sim.store.recordings.get(req.recording_id or "")
    if rec is not None and rec.call.ended:  # checked first: ending the call also stopped the recording
        raise call_terminated()
    if rec is None or rec.stopped:
        raise recording_not_found()
    return rec


def _state(rec: Recording) -> dict[str, Any]:
    return {"recordingId": rec.recording_id, "recordingState": rec.state, "recordingKind": rec.kind}


def _set_state(sim: Sim, rec: Recording, state: str) -> None:
    if rec.state != state:  # repeating a pause or resume changes nothing and sends nothing
        rec.state = state
        rec.start_date_time = rec.start_date_time or now_iso()
        sim.emit_recording(rec)


def pause_recording(sim: Sim, req: Req) -> Reply:
    """202; RecordingStateChanged ``inactive`` (ACS has no ``paused`` state)."""
    rec = _recording(sim, req)
    _set_state(sim, rec, "inactive")
    return Reply(202, None, rec.call_connection_id)


def resume_recording(sim: Sim, req: Req) -> Reply:
    """202; RecordingStateChanged ``active``."""
    rec = _recording(sim, req)
    _set_state(sim, rec, "active")
    return Reply(202, None, rec.call_connection_id)


def stop_recording(sim: Sim, req: Req) -> Reply:
    """204; RecordingStateChanged ``inactive`` if it was active; the id is then unknown."""
    rec = _recording(sim, req)
    _set_state(sim, rec, "inactive")
    rec.stopped = True
    rec.call.recording = None
    sim.recording_stopped(rec, "RecordingStopped")
    return Reply(204, None, rec.call_connection_id)


def get_recording(sim: Sim, req: Req) -> Reply:
    """200 with the recording's state."""
    rec = _recording(sim, req)
    return Reply(200, _state(rec), rec.call_connection_id)
