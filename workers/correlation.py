"""Resolve commands from ACS callback events, durably, whichever process receives them.

An event resolves the command named by its ``operationContext`` (every command sends its id there).
Events that carry none fall back to the call they belong to: ``CallConnected`` resolves the call's
connect command, ``CallDisconnected`` resolves pending hang-ups and fails every other pending command
of that call with ``call_ended``. Transitions go through lib.lua's ``transition`` (ingest.lua), so a command is
resolved at most once and never moves backwards; an event for a terminal command, a duplicate, or an
event for an unknown call is still kept in the call's timeline.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers import keys, logs, metrics, scripts
from workers.command import Status, flatten, now_iso
from workers.operations import OPERATIONS, Operation
from workers.scripts import AutoPipeline, ScriptCall

log = logging.getLogger("callq.commands")

PREFIX = "Microsoft.Communication."
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # one encoder for every event, not one per json.dumps call


@dataclass
class IngestReport:
    stored: int = 0
    duplicates: int = 0
    resolved: list[str] = field(default_factory=list)
    lanes: set[str] = field(default_factory=set)  # calls whose next command may now have its turn


_STRING_FIELDS = ("callConnectionId", "serverCallId", "correlationId", "operationContext", "recordingId",
                  "invitationId", "state")


def clean(event: dict[str, Any]) -> dict[str, Any]:
    """The event with every field callq reads in the shape callq expects; odd-typed ones are dropped.

    A signed event is still ACS's word, but its content is never trusted to be well-formed.
    """
    data = dict(event["data"]) if isinstance(event.get("data"), dict) else {}
    for name in _STRING_FIELDS:
        if name in data and not isinstance(data[name], str):
            del data[name]
    if not isinstance(data.get("resultInformation"), dict):
        data.pop("resultInformation", None)
    return {**event, "id": str(event.get("id") or ""), "type": str(event.get("type") or ""), "data": data}


def short_type(event: dict[str, Any]) -> str:
    return str(event.get("type", "")).removeprefix(PREFIX)


def _error_from(data: dict[str, Any], code: str) -> dict[str, Any]:
    info = data.get("resultInformation") or {}
    return {"code": code, "message": info.get("message") or code.replace("_", " "),
            "acs_code": info.get("code"), "acs_subcode": info.get("subCode")}


def _result_from(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    result = {"call_connection_id": data.get("callConnectionId"), "server_call_id": data.get("serverCallId"),
              "correlation_id": data.get("correlationId")}
    if kind == "CallDisconnected":
        result["result_information"] = data.get("resultInformation")
    if kind == "RecognizeCompleted":
        result.update(recognized(data))
    if kind.startswith("Transcription"):
        result["transcription"] = transcription(data)
    return result


def transcription(data: Mapping[str, Any]) -> dict[str, str | None]:
    """What a Transcription* event says of the call's transcription: ``status`` (``transcriptionStarted`` …) and
    ``status_details`` (``subscriptionStarted`` …) from its ``transcriptionUpdate``; odd-typed ones are null."""
    update = data.get("transcriptionUpdate")
    update = update if isinstance(update, dict) else {}
    return {"status": _text(update.get("transcriptionStatus")),
            "status_details": _text(update.get("transcriptionStatusDetails"))}


# ACS's DtmfTone names (``dtmfResult.tones``) → the keys pressed.
_KEYS = {**{n: str(d) for d, n in enumerate("zero one two three four five six seven eight nine".split())},
         "pound": "#", "asterisk": "*", "a": "A", "b": "B", "c": "C", "d": "D"}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def recognized(data: Mapping[str, Any]) -> dict[str, Any]:
    """What a RecognizeCompleted says was recognized, as the command's result carries it.

    ``recognition_type`` (dtmf, speech, choices); ``tones`` (ACS's names, e.g. ``["one", "pound"]``) and ``digits``
    (the same as keys, ``"1#"``) from ``dtmfResult`` (real ACS today) or ``collectTonesResult`` (older events);
    ``speech`` (``text``, ``confidence``) from ``speechResult``; ``choice`` (``label``, ``recognized_phrase``,
    ``confidence``) from ``choiceResult``. A field ACS did not send is absent; odd-typed ones are dropped.
    """
    out: dict[str, Any] = {"recognition_type": _text(data.get("recognitionType"))}
    for name in ("dtmfResult", "collectTonesResult"):
        found = data.get(name)
        tones = found.get("tones") if isinstance(found, dict) else None
        if isinstance(tones, list):
            names = [t for t in tones if isinstance(t, str)]
            out["tones"] = names
            out["digits"] = "".join(_KEYS.get(t.lower(), "?") for t in names)
            break
    speech = data.get("speechResult")
    if isinstance(speech, dict):
        out["speech"] = {"text": _text(speech.get("speech")), "confidence": _number(speech.get("confidence"))}
    choice = data.get("choiceResult")
    if isinstance(choice, dict):
        out["choice"] = {"label": _text(choice.get("label")),
                         "recognized_phrase": _text(choice.get("recognizedPhrase")),
                         "confidence": _number(choice.get("confidence"))}
    return out


def _tag(op: Operation, kind: str, data: dict[str, Any]) -> str | None:
    """What an event of this kind says of a pending command of this operation: the name of its step, if any."""
    if op.recording_state and kind == "RecordingStateChanged":
        return "recorded" if data.get("state") == op.recording_state else None
    if kind in op.succeeds_on:
        return "succeeded"
    if kind in op.fails_on:
        return "failed"
    return "ended" if kind == "CallDisconnected" else None


def _step(tag: str, kind: str, event: dict[str, Any]) -> tuple[Status, dict[str, Any]]:
    """The transition of a step; it depends on the event only, never on which command takes it."""
    data = event.get("data") or {}
    resolved_by = {"type": kind, "id": event.get("id"), "time": event.get("time")}
    if tag == "recorded":
        return Status.SUCCEEDED, {"result": {"recording_id": data.get("recordingId"), "state": data.get("state")},
                                  "resolved_by": resolved_by}
    if tag == "succeeded":
        fields = {"result": _result_from(kind, data), "resolved_by": resolved_by}
        if kind == "CallConnected" and data.get("callConnectionId"):
            # The event may beat connect's HTTP response: it names the call as well as the response does.
            fields["call_connection_id"] = data["callConnectionId"]
        return Status.SUCCEEDED, fields
    if tag == "failed":
        return Status.FAILED, {"error": _error_from(data, "acs_failed"), "resolved_by": resolved_by}
    ended = _error_from(data, "call_ended") | {"message": "The call ended before this command completed."}
    return Status.FAILED, {"error": ended, "resolved_by": resolved_by}


def outcome(command_type: str, event: dict[str, Any]) -> tuple[Status, dict[str, Any]] | None:
    """The transition an event implies for a command of this type, or None when it says nothing of it."""
    op = OPERATIONS.get(command_type)
    kind = short_type(event)
    tag = None if op is None else _tag(op, kind, event.get("data") or {})
    return None if tag is None else _step(tag, kind, event)


def _late(event: dict[str, Any]) -> str:
    return json.dumps({"type": short_type(event), "id": event.get("id"), "time": event.get("time"),
                       "result_information": (event.get("data") or {}).get("resultInformation")})


def _steps(event: dict[str, Any]) -> str:
    """What the event means for a pending command of each type, as INGEST_LUA reads it.

    ``{"types": {command type: step name}, "steps": {step name: [status, [field, value, ...]]}}``: the
    fields of a step depend on the event alone, so each is built (and sent) once however many types take it.
    """
    kind, data = short_type(event), event["data"]
    types = _tags(kind, data.get("state") if kind == "RecordingStateChanged" else None)
    steps: dict[str, list[Any]] = {}
    for tag in set(types.values()):
        status, fields = _step(tag, kind, event)
        steps[tag] = [status, flatten(fields)]
    return _COMPACT.encode({"types": types, "steps": steps}) if types else ""


@functools.lru_cache(maxsize=256)  # event kinds (and recording states) are few; the answer depends on nothing else
def _tags(kind: str, recording_state: str | None) -> dict[str, str]:
    data = {"state": recording_state} if recording_state is not None else {}
    return {type_: tag for type_, op in OPERATIONS.items() if (tag := _tag(op, kind, data)) is not None}


# Events that name a recording (by recordingId) → the state they leave it in ('' = the event's ``state``). A failed
# start leaves none: "failed" is callq's word, kept on the recording as its last state.
_RECORDING_EVENTS = {"RecordingStateChanged": "", "StartRecordingFailed": "failed"}
_CANCELED = {"code": "invitation_canceled", "message": "The invitation was canceled before it was answered."}


@dataclass(frozen=True)
class Resolved:
    """A command an event ended: its id, its call ('' for none) and its record as it ended."""

    command_id: str
    call_connection_id: str
    record: dict[str, str]


@dataclass(frozen=True)
class Ingested:
    """What one event did: nothing (a duplicate), or stored, naming no known call or command (orphan) or not,
    and the commands it resolved."""

    duplicate: bool
    orphan: bool = False
    resolved: tuple[Resolved, ...] = ()

    @classmethod
    def parse(cls, reply: list[Any]) -> Ingested:
        if reply[0] == "duplicate":
            return cls(duplicate=True)
        return cls(duplicate=False, orphan=reply[1] == "orphan", resolved=tuple(
            Resolved(str(cid), str(cc), dict(zip(flat[::2], flat[1::2], strict=True))) for cid, cc, flat in reply[2:]))


def ingest_call(event: dict[str, Any], *, dedup_ttl_s: int, ttl_s: int, retention_s: int) -> ScriptCall[Ingested]:
    """Store one cleaned event and apply it to the commands it resolves (ingest.lua), atomically."""
    data, kind = event["data"], short_type(event)
    cc, context, rec = data.get("callConnectionId") or "", data.get("operationContext") or "", ""
    if kind in _RECORDING_EVENTS:
        rec = data.get("recordingId") or ""
    invitation = data.get("invitationId") or "" if kind == "CancelAddParticipantSucceeded" and cc else ""
    canceled = {"error": _CANCELED, "resolved_by": {"type": kind, "id": event["id"]}}
    keys_ = [keys.event_seen_key(event["id"]), keys.call_events_key(cc or "unknown"),
             keys.call_key(cc) if cc else "", keys.call_commands_key(cc) if cc else "",
             keys.recording_key(rec) if rec else "", keys.recording_commands_key(rec) if rec else "",
             keys.recording_early_events_key(rec) if rec else ""]
    min_id = str(int((time.time() - retention_s) * 1000))
    state = _RECORDING_EVENTS.get(kind) or data.get("state") or ""
    args = [str(dedup_ttl_s), str(ttl_s), min_id, _COMPACT.encode(event), context,
            kind, "1" if kind == "CallDisconnected" else "", state, _steps(event),
            now_iso(), _late(event) if context else "", invitation,
            _COMPACT.encode(flatten(canceled)) if invitation else "",
            data.get("serverCallId") or "", cc]
    return scripts.call("ingest", keys_, args, Ingested.parse)


def finished(record: Mapping[str, str]) -> None:
    """A command reached its terminal state (called once, by whoever's transition applied): count it, say it."""
    command_id, type_, status = record.get("id", ""), record.get("type") or "unknown", record.get("status")
    metrics.finished(command_id, record)
    extra = {"command_id": command_id, "call_connection_id": record.get("call_connection_id") or None}
    if status == Status.SUCCEEDED:
        by = (_json_field(record.get("resolved_by")) or {}).get("type") or ""
        log.info("command %s (%s) succeeded%s", command_id, type_, f" on {by}" if by else "", extra=extra)
    elif status == Status.FAILED:
        log.warning("command %s (%s) failed: %s", command_id, type_, metrics.error_code(record.get("error")),
                    extra=extra)


def _json_field(raw: str | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or "{}")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _event_stored(event: dict[str, Any], *, orphan: bool) -> None:
    kind, data = short_type(event), event["data"]
    metrics.event(kind, data.get("callConnectionId"), orphan=orphan)
    # DEBUG: events are many and each is kept in its call's timeline anyway; the commands they resolve get
    # an INFO line of their own (``finished``).
    if not log.isEnabledFor(logging.DEBUG):
        return
    token = logs.bind(call_connection_id=data.get("callConnectionId"), operation_context=data.get("operationContext"))
    try:
        log.debug("event %s%s", kind or "unknown", " for no known call or command (orphan)" if orphan else "")
    finally:
        logs.unbind(token)


async def ingest(pipeline: AutoPipeline, events: list[dict[str, Any]], *, dedup_ttl_s: int, ttl_s: int,
                 retention_s: int) -> IngestReport:
    """Store and apply a batch of CloudEvents, in order, one script call each. Safe to call again with the same events.

    Each call joins the API's pipeline (``scripts.AutoPipeline``), so concurrent POSTs share round trips; the
    next event of this batch is sent only once the last one's answer is in. A duplicate (same CloudEvent id
    within ``dedup_ttl_s``) changes nothing.
    """
    report = IngestReport()
    for raw in events:
        event = clean(raw)
        if not event["id"]:
            report.duplicates += 1  # nothing to dedupe by: ACS always sends one, so this is not ACS
            continue
        done = await pipeline.run(ingest_call(event, dedup_ttl_s=dedup_ttl_s, ttl_s=ttl_s, retention_s=retention_s))
        if done.duplicate:
            report.duplicates += 1
            continue
        report.stored += 1
        _event_stored(event, orphan=done.orphan)
        for resolved in done.resolved:
            report.resolved.append(resolved.command_id)
            finished(resolved.record)
            if resolved.call_connection_id:
                report.lanes.add(resolved.call_connection_id)
    return report
