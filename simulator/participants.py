"""Participant operations: add (with scripted phones), remove, cancel add, get, list (paged)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import quote

from . import events
from .errors import conflict, invalid_request, participant_not_present
from .identifiers import is_phone, participant_json, phone_number, raw_id_of
from .model import Connection, Invitation, PhoneScript, ServerCall
from .operation import Reply, Req, callback_url, connected, optional_str
from .world import Sim

DEFAULT_INVITATION_TIMEOUT_S = 60
MAX_INVITATION_TIMEOUT_S = 180
ANSWERED = events.OK
BUSY = (486, 8539, "Call failed, callee busy.")
DECLINED = (603, 8538, "Call failed, callee declined.")
NO_ANSWER = (408, 8541, "Call failed, callee unavailable: no answer before the invitation timed out.")
CANCEL_TOO_LATE = (400, 8523, "The invitation is no longer pending.")


def add_participant(sim: Sim, req: Req) -> Reply:
    """202 with the invitation; the callee's script decides AddParticipantSucceeded or ...Failed."""
    conn, call = connected(sim, req.call_connection_id)
    body = req.body
    target = raw_id_of(body.get("participantToAdd"), "participantToAdd")
    timeout_s = _invitation_timeout_s(body.get("invitationTimeoutInSeconds"))
    context = optional_str(body, "operationContext")
    url = callback_url(body, "operationCallbackUri") or conn.callback_uri
    if is_phone(target):
        _check_dial_out(sim, call, body.get("sourceCallerIdNumber"))
    if target in call.participants:
        raise conflict(f"{target} is already in the call")
    ringing = (i for c in call.connections.values() for i in c.invitations.values() if i.state == "pending")
    if any(i.target == target for i in ringing):
        raise conflict(f"an invitation to {target} is already ringing")
    invitation = Invitation(sim.store.ids.uuid(), target, context, url)
    conn.invitations[invitation.invitation_id] = invitation
    script = sim.store.phones.get(phone_number(target)) if is_phone(target) else None
    script = script or PhoneScript()
    failure = sim.scripted_failure("addParticipant", targets=[target], connections=[conn.call_connection_id])
    if failure is not None:  # rings as scripted, then fails with the rule's result
        invitation.timer = sim.later(script.delay_ms / 1000.0, _refused, sim, conn, invitation, failure.result)
    elif script.behaviour == "no-answer":
        invitation.timer = sim.later(timeout_s, _refused, sim, conn, invitation, NO_ANSWER)
    elif script.behaviour == "answer":
        invitation.timer = sim.later(script.delay_ms / 1000.0, _answered, sim, conn, invitation)
    else:
        result = BUSY if script.behaviour == "busy" else DECLINED
        invitation.timer = sim.later(script.delay_ms / 1000.0, _refused, sim, conn, invitation, result)
    response = {"participant": participant_json(target), "operationContext": context}
    response["invitationId"] = invitation.invitation_id
    return Reply(202, _without_none(response), conn.call_connection_id)


def _invitation_timeout_s(value: object) -> float:
    if value is None or value == 0:
        return DEFAULT_INVITATION_TIMEOUT_S
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_INVITATION_TIMEOUT_S:
        raise invalid_request(f"invitationTimeoutInSeconds must be an integer from 0 to {MAX_INVITATION_TIMEOUT_S}")
    return float(value)


def _check_dial_out(sim: Sim, call: ServerCall, caller_id: object) -> None:
    room = sim.store.rooms.get(call.room_id or "")
    if room is not None and not room.pstn_dial_out_enabled:
        raise invalid_request("PSTN dial-out is not enabled for this room (pstnDialOutEnabled is false)")
    if not isinstance(caller_id, dict) or not caller_id.get("value"):
        raise invalid_request("sourceCallerIdNumber is required to dial out to a phone number")


def _answered(sim: Sim, conn: Connection, invitation: Invitation) -> None:
    call = conn.call
    if invitation.state != "pending" or call is None or call.ended:
        return
    invitation.state = "answered"
    call.participants[invitation.target] = False
    sim.user_joined(call, invitation.target)
    event = events.participant_event(
        conn, "AddParticipantSucceeded", invitation.target, invitation.operation_context, ANSWERED
    )
    sim.emit(conn, event, invitation.callback_uri)
    sim.roster_changed(call)


def _refused(sim: Sim, conn: Connection, invitation: Invitation, result: events.Result) -> None:
    if invitation.state != "pending":
        return
    invitation.state = "failed"
    event = events.participant_event(
        conn, "AddParticipantFailed", invitation.target, invitation.operation_context, result
    )
    sim.emit(conn, event, invitation.callback_uri)


def remove_participant(sim: Sim, req: Req) -> Reply:
    """202; RemoveParticipantSucceeded then ParticipantsUpdated."""
    conn, call = connected(sim, req.call_connection_id)
    target = raw_id_of(req.body.get("participantToRemove"), "participantToRemove")
    context = optional_str(req.body, "operationContext")
    url = callback_url(req.body, "operationCallbackUri") or conn.callback_uri
    if target not in call.participants:
        raise participant_not_present()
    failure = sim.scripted_failure("removeParticipant", targets=[target], connections=[conn.call_connection_id])
    if failure is not None:  # the participant stays in the call
        sim.emit(conn, events.participant_event(conn, "RemoveParticipantFailed", target, context, failure.result), url)
        return Reply(202, _without_none({"operationContext": context}), conn.call_connection_id)
    del call.participants[target]
    sim.user_left(call, target)
    for other in call.connections.values():
        for handle in other.continuous_dtmf.pop(target, []):
            sim.cancel(handle)
    sim.emit(conn, events.participant_event(conn, "RemoveParticipantSucceeded", target, context, events.OK), url)
    sim.roster_changed(call)
    return Reply(202, _without_none({"operationContext": context}), conn.call_connection_id)


def cancel_add_participant(sim: Sim, req: Req) -> Reply:
    """202; CancelAddParticipantSucceeded if the invitation still rang, else ...Failed."""
    conn, _ = connected(sim, req.call_connection_id)
    invitation_id = optional_str(req.body, "invitationId")
    context = optional_str(req.body, "operationContext")
    url = callback_url(req.body, "operationCallbackUri") or conn.callback_uri
    invitation = conn.invitations.get(invitation_id or "")
    if invitation is None:
        raise invalid_request("invitationId does not name an invitation of this call connection")
    failure = None
    if invitation.state == "pending":
        failure = sim.scripted_failure("cancelAddParticipant", targets=[invitation.target],
                                       connections=[conn.call_connection_id])
    if failure is not None:  # the invitation rings on
        name, result = "CancelAddParticipantFailed", failure.result
    elif invitation.state == "pending":
        invitation.state = "canceled"
        sim.cancel(invitation.timer)
        name, result = "CancelAddParticipantSucceeded", events.OK
    else:
        name, result = "CancelAddParticipantFailed", CANCEL_TOO_LATE
    event = events.call_event(conn, name, result=result, operation_context=context, invitationId=invitation_id)
    sim.emit(conn, event, url)
    response = _without_none({"invitationId": invitation_id, "operationContext": context})
    return Reply(202, response, conn.call_connection_id)


def get_participant(sim: Sim, req: Req) -> Reply:
    """200 with the participant, 404/8558 when not in the call."""
    conn, call = connected(sim, req.call_connection_id)
    raw_id = req.participant_raw_id or ""
    if raw_id not in call.participants:
        raise participant_not_present()
    return Reply(200, participant_json(raw_id, is_muted=call.participants[raw_id]), conn.call_connection_id)


def list_participants(sim: Sim, req: Req) -> Reply:
    """One page of ``{"value": [...], "nextLink": ...}``; the page size is the ``participants_page_size`` knob."""
    conn, call = connected(sim, req.call_connection_id)
    offset = _offset(req.query.get("skipToken"))
    size = sim.faults.knobs.participants_page_size
    roster = list(call.participants.items())
    page = [participant_json(raw, is_muted=muted) for raw, muted in roster[offset : offset + size]]
    body: dict[str, object] = {"value": page}
    if offset + size < len(roster):
        token = base64.urlsafe_b64encode(str(offset + size).encode()).decode().rstrip("=")
        path = f"/calling/callConnections/{quote(conn.call_connection_id, safe='')}/participants"
        body["nextLink"] = f"{path}?skipToken={token}"  # relative: right whatever host the client used
    return Reply(200, body, conn.call_connection_id)


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        return max(0, int(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise invalid_request("skipToken is not one this service issued") from None


def _without_none(body: Mapping[str, object]) -> dict[str, object]:
    return {k: v for k, v in body.items() if v is not None}

