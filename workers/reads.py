"""Reads from ACS (call, participants, recording), answered with data directly rather than as commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from azure.communication.callautomation import CallAutomationClient, CallParticipant

from workers.acs import to_acs_error
from workers.errors import CallqError
from workers.identifiers import to_identifier
from workers.ratelimit import RateLimited

# An ACS 429 without Retry-After: wait about as long as a typical ACS throttle window before trying again.
DEFAULT_RETRY_AFTER_S = 1.0


@contextlib.contextmanager
def acs_errors() -> Iterator[None]:
    """SDK failures as callq errors; a spent budget (ours or ACS's) is RateLimited, so the API answers 429."""
    try:
        yield
    except CallqError:
        # RateLimited raised by the budget's pipeline policy: the SDK lets it through unchanged, and
        # to_acs_error would turn it into a 502 "ACS request failed: RateLimited".
        raise
    except Exception as exc:
        error = to_acs_error(exc)
        if error.status == 429:
            raise RateLimited(error.retry_after_s or DEFAULT_RETRY_AFTER_S) from None
        raise error from None


def _participant(p: CallParticipant) -> dict[str, Any]:
    raw = p.identifier.raw_id if p.identifier is not None else None
    return {"raw_id": raw, "is_muted": p.is_muted, "is_on_hold": p.is_on_hold}


def call(client: CallAutomationClient, call_connection_id: str) -> dict[str, Any]:
    with acs_errors():
        props = client.get_call_connection(call_connection_id).get_call_properties()
    found = props.transcription_subscription
    return {"call_connection_id": props.call_connection_id, "server_call_id": props.server_call_id,
            "state": props.call_connection_state, "correlation_id": props.correlation_id,
            "targets": [t.raw_id for t in props.targets or []],
            # null when the call was connected without transcription options
            "transcription": None if found is None else {"state": found.state, "locale": found.locale}}


def participants(client: CallAutomationClient, call_connection_id: str) -> list[dict[str, Any]]:
    with acs_errors():
        return [_participant(p) for p in client.get_call_connection(call_connection_id).list_participants()]


def participant(client: CallAutomationClient, call_connection_id: str, raw: str) -> dict[str, Any]:
    with acs_errors():
        return _participant(client.get_call_connection(call_connection_id).get_participant(to_identifier(raw)))


def recording(client: CallAutomationClient, recording_id: str) -> dict[str, Any]:
    with acs_errors():
        props = client.get_recording_properties(recording_id)
    return {"recording_id": props.recording_id, "state": props.recording_state, "kind": props.recording_kind}
