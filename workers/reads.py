"""Reads from ACS (call, participants, recording), answered with data directly rather than as commands."""

from __future__ import annotations

from typing import Any

from azure.communication.callautomation import CallAutomationClient, CallParticipant

from workers.acs import to_acs_error
from workers.identifiers import to_identifier


def _participant(p: CallParticipant) -> dict[str, Any]:
    return {"raw_id": p.identifier.raw_id if p.identifier else None, "is_muted": p.is_muted, "is_on_hold": p.is_on_hold}


def call(client: CallAutomationClient, call_connection_id: str) -> dict[str, Any]:
    try:
        props = client.get_call_connection(call_connection_id).get_call_properties()
    except Exception as exc:
        raise to_acs_error(exc) from None
    return {"call_connection_id": props.call_connection_id, "server_call_id": props.server_call_id,
            "state": props.call_connection_state, "correlation_id": props.correlation_id,
            "targets": [t.raw_id for t in props.targets or []]}


def participants(client: CallAutomationClient, call_connection_id: str) -> list[dict[str, Any]]:
    try:
        return [_participant(p) for p in client.get_call_connection(call_connection_id).list_participants()]
    except Exception as exc:
        raise to_acs_error(exc) from None


def participant(client: CallAutomationClient, call_connection_id: str, raw: str) -> dict[str, Any]:
    try:
        return _participant(client.get_call_connection(call_connection_id).get_participant(to_identifier(raw)))
    except Exception as exc:
        raise to_acs_error(exc) from None


def recording(client: CallAutomationClient, recording_id: str) -> dict[str, Any]:
    try:
        props = client.get_recording_properties(recording_id)
    except Exception as exc:
        raise to_acs_error(exc) from None
    return {"recording_id": props.recording_id, "state": props.recording_state, "kind": props.recording_kind}
