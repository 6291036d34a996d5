"""Map an ACS request (method + raw, still-encoded path) to an operation name and its path ids."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from . import calls, media, participants, recordings, transcription
from .operation import Reply, Req
from .world import Sim

Handler = Callable[[Sim, Req], Reply]


@dataclass(frozen=True)
class Operation:
    """An ACS operation: its handler, whether it changes state, whether ACS answers ``Repeatability-Result``."""

    name: str
    handler: Handler
    mutating: bool = True
    repeatability_result: bool = False


def _op(name: str, handler: Handler, *, mutating: bool = True, repeatable: bool = False) -> Operation:
    return Operation(name, handler, mutating, repeatable)


OPERATIONS = {
    op.name: op
    for op in (
        _op("connect", calls.connect),
        _op("getCall", calls.get_call, mutating=False),
        _op("hangUp", calls.hang_up),
        _op("terminate", calls.terminate, repeatable=True),
        _op("addParticipant", participants.add_participant, repeatable=True),
        _op("removeParticipant", participants.remove_participant, repeatable=True),
        _op("cancelAddParticipant", participants.cancel_add_participant, repeatable=True),
        _op("getParticipant", participants.get_participant, mutating=False),
        _op("listParticipants", participants.list_participants, mutating=False),
        _op("sendDtmfTones", media.send_dtmf_tones, repeatable=True),
        _op("play", media.play),
        _op("recognize", media.recognize),
        _op("startContinuousDtmfRecognition", media.start_continuous_dtmf),
        _op("stopContinuousDtmfRecognition", media.stop_continuous_dtmf),
        _op("cancelAllMediaOperations", media.cancel_all_media),
        _op("startTranscription", transcription.start),
        _op("stopTranscription", transcription.stop),
        _op("updateTranscription", transcription.update),
        _op("startRecording", recordings.start_recording, repeatable=True),
        _op("pauseRecording", recordings.pause_recording),
        _op("resumeRecording", recordings.resume_recording),
        _op("stopRecording", recordings.stop_recording),
        _op("getRecording", recordings.get_recording, mutating=False),
    )
}

_CONNECTION_ACTIONS = {
    "terminate",
    "sendDtmfTones",
    "play",
    "recognize",
    "startContinuousDtmfRecognition",
    "stopContinuousDtmfRecognition",
    "cancelAllMediaOperations",
    "startTranscription",
    "stopTranscription",
    "updateTranscription",
}
_PARTICIPANT_ACTIONS = {"add": "addParticipant", "remove": "removeParticipant"}
_PARTICIPANT_ACTIONS["cancelAddParticipant"] = "cancelAddParticipant"


@dataclass(frozen=True)
class Match:
    """A resolved path: the operation name ('' = known ACS path the simulator does not implement)."""

    operation: str
    call_connection_id: str | None = None
    recording_id: str | None = None
    participant_raw_id: str | None = None


def resolve(method: str, raw_path: str) -> Match | None:
    """The operation for ``method raw_path`` (e.g. ``POST /calling/recordings/abc:pause``), None if unknown."""
    parts = raw_path.rstrip("/").split("/")[2:] if raw_path.startswith("/calling/") else []
    if parts and parts[0].startswith("callConnections"):
        return _connections(method, parts)
    if parts and parts[0] == "recordings":
        return _recordings(method, parts)
    return None


def _split_action(segment: str) -> tuple[str, str]:
    # Ids are percent-encoded by the SDK, so a literal ':' can only start the action suffix.
    ident, sep, action = segment.partition(":")
    return unquote(ident), action if sep else ""


def _connections(method: str, parts: list[str]) -> Match | None:
    if len(parts) == 1:
        if parts[0] == "callConnections:connect" and method == "POST":
            return Match("connect")
        return Match("") if method == "POST" else None  # create/answer/redirect/reject
    cc, action = _split_action(parts[1])
    if len(parts) == 2:
        if action == "" and method == "GET":
            return Match("getCall", cc)
        if action == "" and method == "DELETE":
            return Match("hangUp", cc)
        if method == "POST" and action:
            return Match(action if action in _CONNECTION_ACTIONS else "", cc)
        return None
    sub, sub_action = parts[2].partition(":")[0], parts[2].partition(":")[2]
    if sub != "participants":
        return None
    if len(parts) == 3 and method == "GET" and not sub_action:
        return Match("listParticipants", cc)
    if len(parts) == 3 and method == "POST" and sub_action:
        return Match(_PARTICIPANT_ACTIONS.get(sub_action, ""), cc)
    if len(parts) == 4 and method == "GET":
        return Match("getParticipant", cc, participant_raw_id=unquote(parts[3]))
    return None


def _recordings(method: str, parts: list[str]) -> Match | None:
    if len(parts) == 1:
        return Match("startRecording") if method == "POST" else None
    if len(parts) != 2:
        return None
    rid, action = _split_action(parts[1])
    if method == "POST" and action in ("pause", "resume"):
        return Match(f"{action}Recording", recording_id=rid)
    if not action and method in ("GET", "DELETE"):
        return Match("getRecording" if method == "GET" else "stopRecording", recording_id=rid)
    return None
