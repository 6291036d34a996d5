"""Command routes: one table (``COMMANDS``) drives every mutating endpoint and its OpenAPI entry.

Each POST authenticates, validates, checks the call or recording it targets, then records the
idempotency key, creates the command and enqueues its task in one Lua script: all or nothing.
"""

from __future__ import annotations

import builtins
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api import render, schemas
from api.auth import idempotency_key
from tasks.app import task_name
from tasks.publish import task_message
from workers import commands, correlation, keys, metrics
from workers.command import Command
from workers.errors import CallEnded, CommandNotFound, IdempotencyKeyReused, InvalidCommand, Refused, RoomNotFound
from workers.ledger import Accepted
from workers.settings import Settings

MAX_BODY_BYTES = 16_384
Scope = Literal["room", "call", "recording"]


@dataclass(frozen=True)
class CommandSpec:
    path: str
    type: str
    body: builtins.type[schemas.Body]  # builtins.: the field above shadows ``type`` in this class body
    scope: Scope
    summary: str


COMMANDS = (
    CommandSpec("/v1/rooms/{room_id}/connect", "connect", schemas.ConnectBody, "room",
                "Connect to a room call (resolves on CallConnected / ConnectFailed)"),
    CommandSpec("/v1/calls/{call_connection_id}/participants", "add_participant", schemas.AddParticipantBody, "call",
                "Add a PSTN or ACS participant (resolves on AddParticipantSucceeded / Failed)"),
    CommandSpec("/v1/calls/{call_connection_id}/participants/remove", "remove_participant", schemas.Participant,
                "call", "Remove a participant"),
    CommandSpec("/v1/calls/{call_connection_id}/participants/cancel-add", "cancel_add_participant",
                schemas.CancelAddBody, "call", "Cancel a pending add-participant invitation"),
    CommandSpec("/v1/calls/{call_connection_id}/dtmf", "send_dtmf", schemas.DtmfBody, "call",
                "Send 1-18 DTMF tones to a PSTN participant"),
    CommandSpec("/v1/calls/{call_connection_id}/play", "play", schemas.PlayBody, "call",
                "Play audio files, text or SSML to participants or to everyone; with interrupt_call_media_operation, "
                "barge in (a play_barge_in command)"),
    CommandSpec("/v1/calls/{call_connection_id}/recognize", "recognize", schemas.RecognizeBody, "call",
                "Recognize DTMF, speech, either, or choices from a participant; with interrupt_call_media_operation, "
                "barge in (a recognize_barge_in command)"),
    CommandSpec("/v1/calls/{call_connection_id}/continuous-dtmf/start", "continuous_dtmf_start",
                schemas.PstnParticipant, "call", "Start continuous DTMF recognition"),
    CommandSpec("/v1/calls/{call_connection_id}/continuous-dtmf/stop", "continuous_dtmf_stop",
                schemas.PstnParticipant, "call", "Stop continuous DTMF recognition"),
    CommandSpec("/v1/calls/{call_connection_id}/media/cancel", "cancel_media", schemas.Empty, "call",
                "Cancel all media operations (play, recognize)"),
    CommandSpec("/v1/calls/{call_connection_id}/transcription/start", "transcription_start",
                schemas.TranscriptionStartBody, "call",
                "Start live transcription (resolves on TranscriptionStarted / TranscriptionFailed)"),
    CommandSpec("/v1/calls/{call_connection_id}/transcription/stop", "transcription_stop", schemas.Empty, "call",
                "Stop live transcription (resolves on TranscriptionStopped / TranscriptionFailed)"),
    CommandSpec("/v1/calls/{call_connection_id}/transcription/update", "transcription_update",
                schemas.TranscriptionUpdateBody, "call",
                "Change the live transcription's locale (resolves on TranscriptionUpdated / TranscriptionFailed)"),
    CommandSpec("/v1/calls/{call_connection_id}/recordings", "start_recording", schemas.RecordingBody, "call",
                "Start recording the call (result carries recording_id)"),
    CommandSpec("/v1/recordings/{recording_id}/pause", "pause_recording", schemas.Empty, "recording",
                "Pause a recording"),
    CommandSpec("/v1/recordings/{recording_id}/resume", "resume_recording", schemas.Empty, "recording",
                "Resume a paused recording"),
    CommandSpec("/v1/recordings/{recording_id}/stop", "stop_recording", schemas.Empty, "recording",
                "Stop a recording"),
    CommandSpec("/v1/calls/{call_connection_id}/recording/pause", "pause_recording", schemas.Empty, "call",
                "Pause the call's current recording (resolved when the command's turn comes)"),
    CommandSpec("/v1/calls/{call_connection_id}/recording/resume", "resume_recording", schemas.Empty, "call",
                "Resume the call's current recording"),
    CommandSpec("/v1/calls/{call_connection_id}/recording/stop", "stop_recording", schemas.Empty, "call",
                "Stop the call's current recording"),
    CommandSpec("/v1/calls/{call_connection_id}/hang-up", "hang_up", schemas.HangUpBody, "call",
                "Hang up: terminate for everyone, or leave the call"),
)


def validation_error(exc: ValidationError) -> InvalidCommand:
    errors = exc.errors(include_url=False, include_input=False)
    details = [{"field": ".".join(str(p) for p in e["loc"]) or None, "code": e["type"], "message": e["msg"]}
               for e in errors]
    codes = {e["type"] for e in errors}
    # One problem of our own kind gets its own stable code; pydantic's generic ones are validation_error.
    code = codes.pop() if len(codes) == 1 and codes <= schemas.CODES else "validation_error"
    first = details[0]
    where = f"{first['field']}: " if first["field"] else ""
    return InvalidCommand(f"The request body is not valid ({where}{first['message']}).", code=code, details=details)


def is_digits(raw: str) -> bool:
    """Plain ASCII digits: ``str.isdigit()`` alone takes "²", which ``int()`` refuses (a 500 instead of a 422)."""
    return raw.isascii() and raw.isdigit()


async def read_json(request: Request, *, empty_ok: bool, max_bytes: int = MAX_BODY_BYTES) -> Any:
    """The request's JSON body, size-limited; an empty body is ``{}`` when ``empty_ok``."""
    raw = await request.body()
    if len(raw) > max_bytes:
        raise InvalidCommand(f"Request body is larger than {max_bytes} bytes.", code="body_too_large")
    if empty_ok and not raw.strip():
        return {}
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise InvalidCommand("Send the body as JSON with 'Content-Type: application/json'.",
                             code="unsupported_media_type")
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidCommand("The request body is not valid JSON.", code="invalid_json") from None


async def _body(request: Request, model: type[schemas.Body]) -> schemas.Body:
    data = await read_json(request, empty_ok=True)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def check_media(request: Request, params: dict[str, Any]) -> None:
    """Real ACS fetches media itself and accepts only https (and sends transcripts only to wss); the simulator takes
    http (and ws) too."""
    if not request.state.settings.uses_real_acs:
        return
    for source in (params.get("source"), params.get("prompt"), *(params.get("sources") or ()),
                   *(params.get("prompts") or ())):
        if source and str(source.get("file_url", "https:")).split(":")[0] != "https":
            raise InvalidCommand("ACS only plays media from https URLs.", code="insecure_media_url")
    transcription = params.get("transcription") or {}
    if str(transcription.get("transport_url", "wss:")).split(":")[0] != "wss":
        raise InvalidCommand("ACS only sends transcripts to wss URLs.", code="insecure_transport_url")


async def _call_state(request: Request, client: str, cc: str) -> dict[str, str]:
    call: dict[str, str] = await request.state.redis.hgetall(keys.call_key(cc))
    if call.get("client") != client:
        raise CommandNotFound(f"No call {cc!r} is known to this client.", code="call_not_found")
    if call.get("state") == "disconnected":
        raise CallEnded(f"Call {cc!r} has ended; no more commands can be sent to it.")
    return call


async def _target(request: Request, spec: CommandSpec, client: str) -> dict[str, str]:
    """Check what the command addresses; returns the ids to store on the command."""
    path = request.path_params
    if spec.scope == "room":
        room_id = path["room_id"]
        if not room_id.strip() or len(room_id) > 128:
            raise InvalidCommand("room_id must be 1-128 characters.", code="invalid_room_id")
        owner = await request.state.redis.hget(keys.room_key(room_id), "client")
        if owner is not None and owner != client:  # rooms no client manages (made elsewhere) stay open to all
            raise RoomNotFound(f"No room {room_id!r} is known to this client.")
        return {"room_id": room_id}
    if spec.scope == "recording":
        rid = path["recording_id"]
        rec = await request.state.redis.hgetall(keys.recording_key(rid))
        if rec.get("client") != client:
            raise CommandNotFound(f"No recording {rid!r} is known to this client.", code="recording_not_found")
        await _call_state(request, client, rec["call_connection_id"])
        return {"recording_id": rid, "call_connection_id": rec["call_connection_id"]}
    cc = path["call_connection_id"]
    call = await _call_state(request, client, cc)
    target = {"call_connection_id": cc}
    if spec.type == "start_recording":
        if not call.get("server_call_id"):
            raise CallEnded(f"Call {cc!r} is not connected yet; record it once connect has succeeded.",
                            code="call_not_connected")
        target["server_call_id"] = call["server_call_id"]
    return target


def message_for(request: Request) -> commands.MessageFor:
    """Builds a command's Celery message (task id = command id) with this app's Celery settings."""
    state = request.state
    return lambda type_, command_id: task_message(state.celery, task_name(type_), command_id, [command_id],
                                                  queue=state.settings.queue)


async def _accept(request: Request, spec: CommandSpec) -> Response:
    """Record the key, create the command and enqueue its task: atomically, exactly once per key."""
    state = request.state
    client = state.api_keys.client_for(request)
    idem = idempotency_key(request)
    body = await _body(request, spec.body)
    target = await _target(request, spec, client)
    params = {**body.params(), **{k: v for k, v in target.items() if k in ("room_id", "server_call_id")}}
    check_media(request, params)
    type_ = body.command_type(spec.type)
    new = commands.new(
        client=client, type_=type_, params=params, idempotency_key=idem,
        route=f"{request.method} {request.scope['path']}", call_connection_id=target.get("call_connection_id", ""),
        room_id=target.get("room_id", ""), recording_id=target.get("recording_id", ""))
    found = await state.scripts.run(commands.accept_call(state.settings, message_for(request), new,
                                                         response_json=render.command_json(new.command),
                                                         limits=commands.door_limits(state.settings, type_)))
    if found.refused:
        metrics.RECORDER.inc("callq_client_refused", client, found.refused)
        raise _refusal(state.settings, found, target.get("call_connection_id", ""))
    for record in found.cut:  # media operations a hang up or cancel ended before callq sent them
        correlation.finished(record)
    headers = {"Location": f"/v1/commands/{found.command_id}"}
    if found.replayed:
        if found.fingerprint != new.fingerprint:
            raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request; "
                                       "use a new key for a new request.")
        headers["Idempotent-Replayed"] = "true"
    body_json = found.response_json or await _current(request, found.command_id)
    return Response(body_json, status_code=202, headers=headers, media_type="application/json")


def _refusal(settings: Settings, found: Accepted, call: str) -> Refused:
    """The 429 for a command the door turned away (nothing was recorded: the same key may be sent again)."""
    wait_s = found.retry_after_ms / 1000
    if found.refused == "client_rate_limited":
        return Refused(f"You are sending commands faster than your budget of {settings.client_accept_rate_per_s} a "
                       "second (CALLQ_CLIENT_ACCEPT_RATE_PER_SECOND); retry after Retry-After seconds.",
                       code=found.refused, retry_after_s=wait_s)
    if found.refused_by == "call":
        return Refused(f"Call {call!r} already has {settings.max_pending_per_call} commands that have not ended "
                       "(CALLQ_MAX_PENDING_PER_CALL); retry once some have.", code=found.refused, retry_after_s=wait_s)
    return Refused(f"You already have {settings.client_max_pending} commands that have not ended "
                   "(CALLQ_CLIENT_MAX_PENDING); retry once some have.", code=found.refused, retry_after_s=wait_s)


async def _current(request: Request, command_id: str) -> str:
    """A replay of a command accepted without a stored response (the scheduler keeps none): as it is now."""
    record = await request.state.redis.hgetall(keys.command_key(command_id))
    return render.command_json(Command.from_hash(record))


def _endpoint(spec: CommandSpec):  # type: ignore[no-untyped-def]  # a Starlette endpoint; its name is set per spec
    async def endpoint(request: Request) -> Response:
        return await _accept(request, spec)
    endpoint.__name__ = spec.type
    endpoint.__doc__ = spec.summary
    return endpoint


command_routes = [Route(spec.path, _endpoint(spec), methods=["POST"], name=spec.type) for spec in COMMANDS]
