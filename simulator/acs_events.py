"""The ACS events Event Grid delivers for room calls and recordings (rooms-and-eventgrid.md §3), as
``(eventType, subject, data)``; ``eventgrid.EventGrid.publish`` wraps them in the schema each subscription wants.

Where the reference found no value, the simulator's choice (callq must not depend on these):

- ``group.id`` is the zero UUID (the reference example); ``isTwoParty`` is false; ``userAgent`` is a fixed string;
  ``displayName`` is the part of the raw id after its last ``:``.
- ``CallEnded.endedBy``: participants ending the call (``DELETE /_sim/rooms/{id}/call``) → the first participant
  still in the call, ``type: Participant``; Call Automation's terminate → ``type: MicrosoftInternal`` with the
  resource's Call Automation identity ``28:acs:{resource id}``. ``reason`` is ``{0, 0, …}`` for participants and
  ``{0, 7000, …}`` for terminate (real code values: not found).
- ``RecordingFileStatusUpdated.sessionEndReason`` is ``CallEnded`` when the call's end stopped the recording and
  ``RecordingStopped`` for an explicit stop (the explicit-stop value: not found); ``endReason`` is
  ``SessionEnded``; the chunk's URLs are ``{public_url}/recordings/{documentId}/content|metadata|delete``
  (see ``recording_files`` for the file itself); with bring-your-own storage the event adds ``storageType``
  ``blobstorage`` and ``recordingId``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from .identifiers import from_raw_id
from .model import Member, RecordingFile, ServerCall

CALL_STARTED = "Microsoft.Communication.CallStarted"
CALL_ENDED = "Microsoft.Communication.CallEnded"
PARTICIPANT_ADDED = "Microsoft.Communication.CallParticipantAdded"
PARTICIPANT_REMOVED = "Microsoft.Communication.CallParticipantRemoved"
RECORDING_FILE = "Microsoft.Communication.RecordingFileStatusUpdated"
ZERO_GROUP = "00000000-0000-0000-0000-000000000000"
USER_AGENT = "callq-simulator/1.0 (ACS Calling SDK)"
ENDED_BY_PARTICIPANTS = (0, 0, "Call ended by its participants.")
ENDED_BY_AUTOMATION = (0, 7000, "Call was ended by Azure Communication Service Call Automation API.")

Event = tuple[str, str, dict[str, Any]]  # eventType, subject, data


def timestamp(epoch_s: float | None = None) -> str:
    """Event Grid's ``eventTime`` style: UTC, 7 fractional digits, ``Z``."""
    moment = datetime.fromtimestamp(time.time() if epoch_s is None else epoch_s, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0Z"


def is_acs_user(raw_id: str) -> bool:
    """Call* events cover ACS VoIP users only: no phone numbers, bots or Call Automation connections."""
    return bool(from_raw_id(raw_id)["kind"] == "communicationUser")


def display_name(raw_id: str) -> str:
    """A stand-in display name (the simulator knows none)."""
    return raw_id.rsplit(":", 1)[-1]


def _participant(raw_id: str, role: str) -> dict[str, Any]:
    return {"communicationIdentifier": from_raw_id(raw_id), "role": role}


def _common(call: ServerCall) -> dict[str, Any]:
    return {
        "startedBy": _participant(call.started_by, call.started_by_role),
        "serverCallId": call.server_call_id,
        "group": {"id": ZERO_GROUP},
        "room": {"id": call.room_id},
        "isTwoParty": False,
        "correlationId": call.correlation_id,
        "isRoomsCall": call.room_id is not None,
    }


def call_started(call: ServerCall) -> Event:
    """Participants started the room's call."""
    return CALL_STARTED, f"call/{call.server_call_id}/startedBy/{call.started_by}", _common(call)


def participant_event(call: ServerCall, event_type: str, raw_id: str, member: Member) -> Event:
    """CallParticipantAdded / CallParticipantRemoved for one ACS user."""
    data = {
        "user": _participant(raw_id, member.role),
        "displayName": display_name(raw_id),
        "participantId": member.participant_id,
        "userAgent": USER_AGENT,
        **_common(call),
    }
    return event_type, f"call/{call.server_call_id}/participant/{raw_id}", data


def call_ended(call: ServerCall, ended_by: dict[str, Any], reason: tuple[int, int, str]) -> Event:
    """The call ended for everyone; ``ended_by`` is ``{"communicationIdentifier", "type", "name"}``."""
    code, sub_code, phrase = reason
    data = {
        **_common(call),
        "endedBy": ended_by,
        "reason": {"code": code, "subCode": sub_code, "phrase": phrase},
        "callDurationInSeconds": round(max(0.0, time.time() - call.started_at), 2),
    }
    return CALL_ENDED, f"call/{call.server_call_id}", data


def ended_by_participant(raw_id: str) -> dict[str, Any]:
    """``endedBy`` for a participant who ended the call."""
    return {"communicationIdentifier": from_raw_id(raw_id), "type": "Participant", "name": display_name(raw_id)}


def ended_by_automation(resource_id: str) -> dict[str, Any]:
    """``endedBy`` for Call Automation's terminate."""
    identity = {"rawId": f"28:acs:{resource_id}", "kind": "unknown"}
    return {"communicationIdentifier": identity, "type": "MicrosoftInternal", "name": "Call Automation"}


def recording_file(file: RecordingFile, locations: dict[str, str], *, session_end_reason: str) -> Event:
    """One chunk, ready: where its content, metadata and delete endpoints are."""
    rec = file.recording
    chunk = {"documentId": file.document_id, "index": file.index, "endReason": "SessionEnded", **locations}
    data: dict[str, Any] = {
        "recordingStorageInfo": {"recordingChunks": [chunk]},
        "recordingStartTime": timestamp(rec.started_at),
        "recordingDurationMs": file.duration_ms,
        "sessionEndReason": session_end_reason,
        "recordingContentType": _capitalised(rec.content_type),
        "recordingChannelType": _capitalised(rec.channel_type),
        "recordingFormatType": _capitalised(rec.format_type),
    }
    if rec.external_storage:  # bring your own storage (the BYOS quickstart's fields)
        data |= {"storageType": "blobstorage", "recordingId": rec.recording_id}
    call = rec.call
    subject = (f"/recording/call/{call.correlation_id}/serverCallId/{call.server_call_id}"
               f"/recordingId/{rec.recording_id}")
    return RECORDING_FILE, subject, data


def _capitalised(value: str) -> str:
    # The request says audio/audioVideo, mixed, mp3; the event says Audio/AudioVideo, Mixed, Mp3.
    return value[:1].upper() + value[1:]
