"""The fields callq reads from ACS's call events (CallStarted, CallEnded, CallParticipantAdded/Removed,
RecordingFileStatusUpdated), whichever of the shapes in circulation an event has.

Microsoft's docs and models disagree (reference §3): the model nests ``communicationIdentifier.rawId`` under
``startedBy``/``user``/``endedBy``, a 2021 doc copy puts ``rawId`` directly there, the specs' examples spell
``communicationidentifier``; 2022 docs give CallEnded ``durationOfCall`` instead of ``callDurationInSeconds`` and
participant events ``endpointType`` instead of ``userAgent``; recording events carry the server call id only in
their subject. So keys are matched without case, each field has its fallbacks, and what is missing is None.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from workers.recording_files import Chunk, FileStatus

PARTICIPANT_EVENTS = frozenset({"Microsoft.Communication.CallParticipantAdded",
                                "Microsoft.Communication.CallParticipantRemoved"})
_CALL_SUBJECT = re.compile(r"/?call/(?P<call>.+?)(?:/(?:startedBy|participant)/(?P<raw>.+))?")
_RECORDING_SUBJECT = re.compile(r"/?recording/call/.+/serverCallId/(?P<call>.+)/recordingId/(?P<recording>[^/]+)")


@dataclass(frozen=True)
class AcsFields:
    """What an ACS call event says about its call; None where the event does not say."""

    server_call_id: str | None = None
    room_id: str | None = None
    correlation_id: str | None = None
    participant_raw_id: str | None = None  # participant events: who joined or left
    started_by_raw_id: str | None = None
    ended_by_raw_id: str | None = None  # CallEnded
    call_duration_s: float | None = None  # CallEnded
    user_agent: str | None = None  # participant events
    recording_id: str | None = None  # RecordingFileStatusUpdated


def acs_fields(event_type: str, subject: str, data: dict[str, Any]) -> AcsFields:
    """Read an event's ACS fields from its data, falling back on its subject."""
    call = _CALL_SUBJECT.fullmatch(subject)
    recording = _RECORDING_SUBJECT.fullmatch(subject)
    subject_call = recording["call"] if recording else call["call"] if call else None
    participant = event_type in PARTICIPANT_EVENTS
    return AcsFields(
        server_call_id=_text(_get(data, "serverCallId")) or subject_call,
        room_id=_text(_get(_get(data, "room"), "id")),
        correlation_id=_text(_get(data, "correlationId")),
        participant_raw_id=(raw_id(_get(data, "user")) or (call["raw"] if call else None)) if participant else None,
        started_by_raw_id=raw_id(_get(data, "startedBy")),
        ended_by_raw_id=raw_id(_get(data, "endedBy")),
        call_duration_s=_seconds(_get(data, "callDurationInSeconds"), _get(data, "durationOfCall")),
        user_agent=(_text(_get(data, "userAgent")) or _text(_get(data, "endpointType"))) if participant else None,
        recording_id=_text(_get(data, "recordingId")) or (recording["recording"] if recording else None),
    )


def raw_id(participant: object) -> str | None:
    """The raw id of an AcsCallParticipant (or of a bare identifier), in any of the shapes seen."""
    identifier = _get(participant, "communicationIdentifier")
    for holder in (identifier, participant):
        found = _text(_get(holder, "rawId"))
        if found:
            return found
    holder = identifier if isinstance(identifier, dict) else participant
    user = _text(_get(_get(holder, "communicationUser"), "id"))
    phone = _text(_get(_get(holder, "phoneNumber"), "value"))
    return user or (f"4:{phone}" if phone else None)  # 4: is the raw id prefix of a phone number


def _get(obj: object, key: str) -> object:
    """``obj[key]``, matching the key without case; None when obj is not an object or has no such key."""
    if not isinstance(obj, dict):
        return None
    if key in obj:
        return obj[key]
    lowered = key.lower()
    return next((v for k, v in obj.items() if isinstance(k, str) and k.lower() == lowered), None)


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # an id sent as a number (room ids are long digit strings)
    return None


def _seconds(*values: object) -> float | None:
    return next((float(v) for v in values if isinstance(v, int | float) and not isinstance(v, bool)), None)


def recording_file_status(recording_id: str, data: dict[str, Any]) -> FileStatus:
    """What a RecordingFileStatusUpdated says of the recording's files; a chunk without a content location (nothing
    to fetch) or an index is left out."""
    storage = _get(data, "recordingStorageInfo")
    listed = _get(storage, "recordingChunks")
    chunks = tuple(chunk for item in (listed if isinstance(listed, list) else []) if (chunk := _chunk(item)))
    duration = _seconds(_get(data, "recordingDurationMs"))
    return FileStatus(
        recording_id=recording_id, chunks=chunks, start_time=_text(_get(data, "recordingStartTime")),
        duration_ms=int(duration) if duration is not None else None,
        session_end_reason=_text(_get(data, "sessionEndReason")),
        content_type=_text(_get(data, "recordingContentType")), channel_type=_text(_get(data, "recordingChannelType")),
        format_type=_text(_get(data, "recordingFormatType")), storage_type=_text(_get(data, "storageType")))


def _chunk(item: object) -> Chunk | None:
    index, content = _get(item, "index"), _text(_get(item, "contentLocation"))
    if not isinstance(index, int) or isinstance(index, bool) or index < 0 or not content:
        return None
    return Chunk(index=index, document_id=_text(_get(item, "documentId")), content_location=content,
                 metadata_location=_text(_get(item, "metadataLocation")),
                 delete_location=_text(_get(item, "deleteLocation")), end_reason=_text(_get(item, "endReason")))
