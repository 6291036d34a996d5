"""Media operations: send DTMF, play, recognize, continuous DTMF, cancel all."""

from __future__ import annotations

from typing import Any

from . import events
from .errors import invalid_request, media_operation_active, participant_not_present
from .failures import PROMPT_FAILED, unplayable
from .identifiers import is_phone, phone_number, raw_id_of
from .model import Connection, MediaOp, ServerCall
from .operation import Reply, Req, callback_url, connected, optional_str
from .recognition import recognition_outcome, tones_of
from .world import Sim

TONES = frozenset(
    "zero one two three four five six seven eight nine a b c d pound asterisk".split()
)
MAX_DTMF_TONES = 18
PLAY_S = 0.02  # how long a non-looping play "lasts"
CONTINUOUS_DTMF_STOPPED = (200, 0, "Continuous DTMF recognition stopped.")


def _pstn_target(call: ServerCall, value: object, field: str) -> str:
    target = raw_id_of(value, field)
    if not is_phone(target):
        raise invalid_request("DTMF is only supported with PSTN participants")
    if target not in call.participants:
        raise participant_not_present()
    return target


def send_dtmf_tones(sim: Sim, req: Req) -> Reply:
    """202; at most 18 tones, only to a PSTN participant in the call; then SendDtmfTonesCompleted."""
    conn, call = connected(sim, req.call_connection_id)
    tones = req.body.get("tones")
    if not isinstance(tones, list) or not 0 < len(tones) <= MAX_DTMF_TONES:
        raise invalid_request(f"tones must list 1 to {MAX_DTMF_TONES} tones")
    if not all(isinstance(t, str) and t.lower() in TONES for t in tones):
        raise invalid_request(f"tones must be among {sorted(TONES)}")
    target = _pstn_target(call, req.body.get("targetParticipant"), "targetParticipant")
    context = optional_str(req.body, "operationContext")
    url = callback_url(req.body, "operationCallbackUri") or conn.callback_uri
    failure = sim.scripted_failure("sendDtmfTones", targets=[target], connections=[conn.call_connection_id])
    name, result = ("SendDtmfTonesFailed", failure.result) if failure else ("SendDtmfTonesCompleted", events.COMPLETED)
    sim.emit(conn, events.call_event(conn, name, result=result, operation_context=context), url)
    return Reply(202, {"operationContext": context} if context is not None else {}, conn.call_connection_id)


def _check_play_sources(sources: object, field: str) -> None:
    if not isinstance(sources, list) or not sources:
        raise invalid_request(f"{field} must list at least one play source")
    for source in sources:
        kind = source.get("kind") if isinstance(source, dict) else None
        needed = {"file": "uri", "text": "text", "ssml": "ssmlText"}.get(kind or "")
        nested = source.get(kind) if needed else None
        if not needed or not isinstance(nested, dict) or not nested.get(needed):
            raise invalid_request(f"{field}: each source needs kind file/text/ssml with its uri/text/ssmlText")


def _start_media(sim: Sim, conn: Connection, kind: str, body: dict[str, Any]) -> MediaOp:
    context = optional_str(body, "operationContext")
    url = callback_url(body, "operationCallbackUri") or conn.callback_uri
    if conn.media is not None:
        if not body.get("interruptCallMediaOperation"):
            raise media_operation_active()
        sim.stop_media(conn, notify=True)
    conn.media = MediaOp(kind, context, url)
    return conn.media


def _failure(sim: Sim, conn: Connection, operation: str, targets: list[str], sources: list[Any]
             ) -> tuple[events.Result, dict[str, Any]] | None:
    """How an accepted play or recognize fails: by a ``/_sim/failures`` rule, or because a file source cannot be
    played (PlayFailed 8535/8536; a recognize's prompt: RecognizeFailed 8511); None when it does not."""
    rule = sim.scripted_failure(operation, targets=targets, connections=[conn.call_connection_id])
    if rule is not None:
        return rule.result, rule.extra()
    found = unplayable(sources)
    if found is None:
        return None
    index, result = found
    return (result if operation == "play" else PROMPT_FAILED), {"failedPlaySourceIndex": index}


def play(sim: Sim, req: Req) -> Reply:
    """202; PlayStarted, then PlayCompleted (never, for a loop, until cancelled); or PlayFailed alone."""
    conn, call = connected(sim, req.call_connection_id)
    body = req.body
    _check_play_sources(body.get("playSources"), "playSources")
    play_to = body.get("playTo") or []
    if not isinstance(play_to, list):
        raise invalid_request("playTo must be a list ([] plays to everyone)")
    targets = [raw_id_of(target, f"playTo[{index}]") for index, target in enumerate(play_to)]
    if any(target not in call.participants for target in targets):
        raise participant_not_present()
    options = body.get("playOptions")
    loop = bool(options.get("loop")) if isinstance(options, dict) else False
    media = _start_media(sim, conn, "play", body)
    failed = _failure(sim, conn, "play", targets or list(call.participants), body["playSources"])
    if failed is not None:  # nothing plays: no PlayStarted
        media.timer = sim.later(PLAY_S, _media_done, sim, conn, media, "PlayFailed", *failed)
        return Reply(202, None, conn.call_connection_id)
    started = events.call_event(conn, "PlayStarted", result=events.COMPLETED, operation_context=media.operation_context)
    sim.emit(conn, started, media.callback_uri)
    if not loop:
        media.timer = sim.later(PLAY_S, _media_done, sim, conn, media, "PlayCompleted", events.COMPLETED, {})
    return Reply(202, None, conn.call_connection_id)


def recognize(sim: Sim, req: Req) -> Reply:
    """202; RecognizeCompleted/Failed from the target phone's scripted ``dtmf``/``speech``."""
    conn, call = connected(sim, req.call_connection_id)
    body = req.body
    input_type = body.get("recognizeInputType")
    if input_type not in ("dtmf", "speech", "choices", "speechOrDtmf"):
        raise invalid_request("recognizeInputType must be dtmf, speech, choices or speechOrDtmf")
    options = body.get("recognizeOptions")
    if not isinstance(options, dict):
        raise invalid_request("recognizeOptions is required")
    target = raw_id_of(options.get("targetParticipant"), "recognizeOptions.targetParticipant")
    if target not in call.participants:
        raise participant_not_present()
    if input_type == "dtmf" and not is_phone(target):
        raise invalid_request("DTMF is only supported with PSTN participants")
    if input_type == "choices" and not options.get("choices"):
        raise invalid_request("recognizeOptions.choices is required for choices recognition")
    if body.get("playPrompt") is not None:
        _check_play_sources([body["playPrompt"]], "playPrompt")
    script = sim.store.phones.get(phone_number(target)) if is_phone(target) else None
    delay_s, name, result, extra = recognition_outcome(input_type, options, script)
    media = _start_media(sim, conn, "recognize", body)
    prompt = [body["playPrompt"]] if body.get("playPrompt") is not None else []
    failed = _failure(sim, conn, "recognize", [target], prompt)
    if failed is not None:
        delay_s, name, (result, extra) = PLAY_S, "RecognizeFailed", failed
    media.timer = sim.later(delay_s, _media_done, sim, conn, media, name, result, extra)
    return Reply(202, None, conn.call_connection_id)


def _media_done(
    sim: Sim, conn: Connection, media: MediaOp, name: str, result: events.Result, extra: dict[str, Any]
) -> None:
    if conn.media is not media:  # cancelled or interrupted meanwhile
        return
    conn.media = None
    event = events.call_event(conn, name, result=result, operation_context=media.operation_context, **extra)
    sim.emit(conn, event, media.callback_uri)


def start_continuous_dtmf(sim: Sim, req: Req) -> Reply:
    """200; each key of the phone's scripted ``dtmf`` arrives as ContinuousDtmfRecognitionToneReceived."""
    conn, call = connected(sim, req.call_connection_id)
    target = _pstn_target(call, req.body.get("targetParticipant"), "targetParticipant")
    context = optional_str(req.body, "operationContext")
    url = callback_url(req.body, "operationCallbackUri") or conn.callback_uri
    if target not in conn.continuous_dtmf:
        script = sim.store.phones.get(phone_number(target))
        tones = tones_of(script.dtmf) if script else []
        delay_s = script.input_delay_ms / 1000.0 if script else PLAY_S
        failure = sim.scripted_failure("startContinuousDtmfRecognition", targets=[target],
                                       connections=[conn.call_connection_id])
        handles = []
        if failure is not None:  # started (200), then recognition fails instead of reporting the tones
            handles.append(sim.later(delay_s, _tone_failed, sim, conn, failure.result, context, url))
        elif tones:
            handles.append(sim.later(delay_s, _tones, sim, conn, tones, context, url))
        conn.continuous_dtmf[target] = handles
    return Reply(200, None, conn.call_connection_id)


def _tones(sim: Sim, conn: Connection, tones: list[str], context: str | None, url: str) -> None:
    for sequence_id, tone in enumerate(tones, start=1):
        event = events.call_event(
            conn, "ContinuousDtmfRecognitionToneReceived", operation_context=context, sequenceId=sequence_id, tone=tone
        )
        sim.emit(conn, event, url)


def _tone_failed(sim: Sim, conn: Connection, result: events.Result, context: str | None, url: str) -> None:
    event = events.call_event(conn, "ContinuousDtmfRecognitionToneFailed", result=result, operation_context=context)
    sim.emit(conn, event, url)


def stop_continuous_dtmf(sim: Sim, req: Req) -> Reply:
    """200; ContinuousDtmfRecognitionStopped."""
    conn, call = connected(sim, req.call_connection_id)
    target = _pstn_target(call, req.body.get("targetParticipant"), "targetParticipant")
    context = optional_str(req.body, "operationContext")
    url = callback_url(req.body, "operationCallbackUri") or conn.callback_uri
    for handle in conn.continuous_dtmf.pop(target, []):
        sim.cancel(handle)
    event = events.call_event(
        conn, "ContinuousDtmfRecognitionStopped", result=CONTINUOUS_DTMF_STOPPED, operation_context=context
    )
    sim.emit(conn, event, url)
    return Reply(200, None, conn.call_connection_id)


def cancel_all_media(sim: Sim, req: Req) -> Reply:
    """202; the running play/recognize ends with PlayCanceled/RecognizeCanceled."""
    conn, _ = connected(sim, req.call_connection_id)
    sim.stop_media(conn, notify=True)
    return Reply(202, None, conn.call_connection_id)
