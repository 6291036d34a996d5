"""CloudEvents 1.0 envelopes and ``data`` payloads in ACS's shapes (acs-wire.md §5)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from .identifiers import from_raw_id, participant_json
from .model import Connection, Recording, ServerCall

EVENT_VERSION = "2025-05-15"
OK = (200, 0, "")
COMPLETED = (200, 0, "Action completed successfully.")
CANCELED = (400, 8508, "Action failed, the operation was canceled.")
ENDED_BY_API = (
    200,
    7000,
    "Call was ended by Azure Communication Service Call Automation API or a server bot. DiagCode: 0#7000.@",
)

Result = tuple[int, int, str]


def now_iso() -> str:
    """ACS-style timestamp with offset."""
    return datetime.now(UTC).isoformat()


def result_information(result: Result) -> dict[str, Any]:
    """``resultInformation`` as ACS sends it."""
    code, sub_code, message = result
    return {"code": code, "subCode": sub_code, "message": message}


def envelope(event_name: str, source: str, data: dict[str, Any]) -> dict[str, Any]:
    """Wrap ``data`` as one CloudEvent of type ``Microsoft.Communication.<event_name>``."""
    event_type = f"Microsoft.Communication.{event_name}"
    data["version"] = EVENT_VERSION
    data["publicEventType"] = event_type
    return {
        "id": str(uuid.uuid4()),
        "source": source,
        "type": event_type,
        "data": data,
        "time": now_iso(),
        "specversion": "1.0",
        "datacontenttype": "application/json",
        "subject": source,
    }


def call_event(
    conn: Connection,
    event_name: str,
    *,
    result: Result | None = OK,
    operation_context: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An event about one call connection (CallConnected, PlayCompleted, AddParticipantSucceeded, ...)."""
    data: dict[str, Any] = {"callConnectionId": conn.call_connection_id}
    if conn.call is not None:
        data["serverCallId"] = conn.call.server_call_id
    data["correlationId"] = conn.correlation_id
    if operation_context is not None:
        data["operationContext"] = operation_context
    if result is not None:
        data["resultInformation"] = result_information(result)
    data.update(extra)
    return envelope(event_name, f"calling/callConnections/{conn.call_connection_id}", data)


def participants_updated(conn: Connection, call: ServerCall) -> dict[str, Any]:
    """The roster as one connection sees it; ``sequenceNumber`` grows with every roster change."""
    roster = [participant_json(raw, is_muted=muted) for raw, muted in call.participants.items()]
    return call_event(conn, "ParticipantsUpdated", participants=roster, sequenceNumber=call.sequence)


def participant_event(
    conn: Connection, event_name: str, raw_id: str, operation_context: str | None, result: Result
) -> dict[str, Any]:
    """Add/RemoveParticipantSucceeded/Failed."""
    return call_event(
        conn, event_name, result=result, operation_context=operation_context, participant=from_raw_id(raw_id)
    )


def recording_state_changed(rec: Recording) -> dict[str, Any]:
    """RecordingStateChanged; its source names the server call and recording."""
    data: dict[str, Any] = {
        "recordingId": rec.recording_id,
        "state": rec.state,
        "startDateTime": rec.start_date_time,
        "recordingKind": rec.kind,
        "resultInformation": result_information(OK),
    }
    return _recording_event("RecordingStateChanged", rec, data)


def start_recording_failed(rec: Recording, result: Result) -> dict[str, Any]:
    """StartRecordingFailed: ``recordingId``, the call's ids and ``resultInformation`` (SDK 1.6's model; the start
    request has no operationContext). No real sample was found: its source is named like RecordingStateChanged's."""
    data: dict[str, Any] = {"recordingId": rec.recording_id, "resultInformation": result_information(result)}
    return _recording_event("StartRecordingFailed", rec, data)


def _recording_event(event_name: str, rec: Recording, data: dict[str, Any]) -> dict[str, Any]:
    """The recorder's endpoint, not the connection that started it, is the ``callConnectionId`` (as real ACS's):
    a receiver correlates recording events by ``recordingId``."""
    call = rec.call
    data["callConnectionId"] = rec.endpoint_id
    data["serverCallId"] = call.server_call_id
    data["correlationId"] = call.correlation_id
    source = f"calling/recordings/{call.server_call_id}/{rec.recording_id}/{event_name}"
    return envelope(event_name, source, data)
