"""Recording operations: start (server call or connection locator; rooms rejected), pause, resume, stop, get.

Start honours ``pauseOnStart`` (the recording starts ``inactive``: no RecordingStateChanged until a resume),
``externalStorage`` (an https Azure Blob container; the file event then says ``storageType: blobstorage``) and
``channelAffinity`` (unmixed audio only; channels 0-4, each channel and participant once: the worst case of what
ACS accepts, which is not documented).

The recording's events (RecordingStateChanged, StartRecordingFailed) name the recorder's own endpoint as their
``callConnectionId``, not the connection that started it, as real ACS's do (``events._recording_event``).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from . import encoder
from .errors import call_not_found, call_terminated, duplicate_recording, invalid_request, recording_not_found
from .events import Result, now_iso, start_recording_failed
from .identifiers import raw_id_of
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
    if cc is None:  # a serverCallId locator: events default to the callback of a connection on that call
        conn = next((c for c in call.connections.values() if c.state == "connected"), None)
        cc = conn.call_connection_id if conn else None
    fallback = sim.store.connections[cc].callback_uri if cc else None
    endpoint = sim.store.ids.uuid()  # the recorder's own connection: its events name it, not ``cc``
    rec = Recording(sim.store.ids.recording_id(endpoint), call, url or fallback, cc, endpoint)
    rec.content_type = body.get("recordingContentType") or rec.content_type
    rec.channel_type = body.get("recordingChannelType") or rec.channel_type
    rec.format_type = body.get("recordingFormatType") or rec.format_type
    rec.external_storage = _external_storage(body.get("externalStorage"))
    rec.channel_affinity = _channel_affinity(body.get("channelAffinity"), rec.channel_type)
    failure = sim.scripted_failure("startRecording", targets=call.participants, connections=call.connections)
    result = failure.result if failure is not None else _unrecordable(sim, rec)
    if result is not None:  # accepted, then StartRecordingFailed; the recording never exists (GET: 404/8522)
        sim.send(rec.callback_uri, start_recording_failed(rec, result), lane=rec.lane)
        return Reply(200, _state(rec), cc)
    sim.store.recordings[rec.recording_id] = rec
    call.recording = rec
    response = _state(rec)  # ACS answers "inactive"; the recording becomes active just after
    if body.get("pauseOnStart"):
        rec.paused_at = rec.started_at  # paused from its first moment: left out of the file until resumed
    else:
        rec.set_state("active", rec.started_at)
        rec.start_date_time = now_iso()
        sim.emit_recording(rec)
    return Reply(200, response, cc)


def _unrecordable(sim: Sim, rec: Recording) -> Result | None:
    """StartRecordingFailed's result when the file could not be made here: an mp3 / mp4 without ffmpeg. The
    simulator's own failure (500/9999, ACS's generic code), told when it starts rather than minutes later."""
    reason = encoder.missing(sim.ffmpeg, rec.format_type)
    return None if reason is None else (500, 9999, reason)


def _external_storage(value: object) -> str | None:
    """The BYOS container URL of ``externalStorage``; None for ACS's own storage."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_request("externalStorage must be an object")
    kind = value.get("recordingStorageKind")
    if kind in (None, "azureCommunicationServices", "AzureCommunicationServices"):
        return None
    if kind not in ("azureBlobStorage", "AzureBlobStorage"):
        raise invalid_request("externalStorage.recordingStorageKind must be azureBlobStorage")
    url = value.get("recordingDestinationContainerUrl")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.path.strip("/") == "":
        raise invalid_request("externalStorage.recordingDestinationContainerUrl must be an https container URL")
    return str(url)


def _channel_affinity(value: object, channel_type: str) -> dict[int, str]:
    """``channelAffinity`` as channel → participant raw id."""
    if value in (None, []):
        return {}
    if not isinstance(value, list):
        raise invalid_request("channelAffinity must be an array")
    if channel_type != "unmixed":
        raise invalid_request("channelAffinity is only valid with recordingChannelType unmixed")
    found: dict[int, str] = {}
    for n, item in enumerate(value):
        channel = item.get("channel") if isinstance(item, dict) else None
        if not isinstance(channel, int) or isinstance(channel, bool) or not 0 <= channel <= 4:
            raise invalid_request(f"channelAffinity[{n}].channel must be an integer 0-4")
        raw = raw_id_of(item.get("participant"), f"channelAffinity[{n}].participant")
        if channel in found or raw in found.values():
            raise invalid_request("channelAffinity names each channel and each participant at most once")
        found[channel] = raw
    return found


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
    if rec.set_state(state, time.time()):  # repeating a pause or resume changes nothing and sends nothing
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
    was_active = rec.state == "active"
    rec.stop(time.time())
    if was_active:
        sim.emit_recording(rec)
    rec.call.recording = None
    sim.recording_stopped(rec, "RecordingStopped")
    return Reply(204, None, rec.call_connection_id)


def get_recording(sim: Sim, req: Req) -> Reply:
    """200 with the recording's state."""
    rec = _recording(sim, req)
    return Reply(200, _state(rec), rec.call_connection_id)
