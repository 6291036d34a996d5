"""Media operations: send DTMF, play, recognize, continuous DTMF, cancel all."""

from __future__ import annotations

from typing import Any

from . import events
from .errors import invalid_request, media_operation_active, participant_not_present
from .failures import PROMPT_FAILED, SPEECH_SERVICE, unplayable
from .identifiers import is_phone, phone_number, raw_id_of
from .model import Connection, MediaOp, ServerCall
from .operation import Reply, Req, callback_url, connected, optional_str
from .recognition import LOCALE, TONES, recognition_delay_s, recognition_outcome, tones_of
from .world import Sim

MAX_DTMF_TONES = 18
PLAY_S = 0.02  # how long one play source "lasts" (text and SSML: per started 100 characters)
TEXT_CHARS_PER_PLAY_S = 100
# ACS documents no limit on sources per play (older ACS took one: 400/8523 "more than one play source detected");
# the simulator takes callq's.
MAX_PLAY_SOURCES = 10
MAX_CHOICES = 10
VOICE_KINDS = ("male", "female")  # the SDK's VoiceKind
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


def _check_play_sources(sources: object, field: str) -> list[dict[str, Any]]:
    if not isinstance(sources, list) or not sources:
        raise invalid_request(f"{field} must list at least one play source")
    if len(sources) > MAX_PLAY_SOURCES:
        raise invalid_request(f"{field} may list at most {MAX_PLAY_SOURCES} play sources")
    for index, source in enumerate(sources):
        kind = source.get("kind") if isinstance(source, dict) else None
        needed = {"file": "uri", "text": "text", "ssml": "ssmlText"}.get(kind or "")
        nested = source.get(kind) if needed else None
        if not needed or not isinstance(nested, dict) or not isinstance(nested.get(needed), str) \
                or not nested[needed]:
            raise invalid_request(f"{field}: each source needs kind file/text/ssml with its uri/text/ssmlText")
        if kind == "text":
            _check_text_to_speech(nested, f"{field}[{index}].text")
    return sources


def _check_text_to_speech(text: dict[str, Any], field: str) -> None:
    """A TextSource's voice options as the SDK sends them (``sourceLocale``, ``voiceKind`` male/female,
    ``voiceName``, ``customVoiceEndpointId``): each optional, each of its type. Which voices exist only the speech
    service knows; the simulator speaks none, and its log keeps what was asked."""
    locale = text.get("sourceLocale")
    if locale is not None and not (isinstance(locale, str) and LOCALE.fullmatch(locale)):
        raise invalid_request(f"{field}.sourceLocale must be a locale such as en-US")
    if text.get("voiceKind") is not None and text["voiceKind"] not in VOICE_KINDS:
        raise invalid_request(f"{field}.voiceKind must be one of {list(VOICE_KINDS)}")
    for key in ("voiceName", "customVoiceEndpointId"):
        if text.get(key) is not None and not (isinstance(text[key], str) and text[key].strip()):
            raise invalid_request(f"{field}.{key} must be a non-empty string")


def play_duration_s(sources: list[dict[str, Any]]) -> float:
    """How long the sources take to play once, one after another: the sum of each one's duration (a file lasts
    PLAY_S; text and SSML PLAY_S per started TEXT_CHARS_PER_PLAY_S characters)."""
    total = 0.0
    for source in sources:
        kind = source["kind"]
        text = source[kind].get("text" if kind == "text" else "ssmlText") if kind != "file" else None
        total += PLAY_S * (1 if text is None else max(1, -(-len(text) // TEXT_CHARS_PER_PLAY_S)))
    return total


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
    """How an accepted play or recognize fails: by a ``/_sim/failures`` rule, or because a source cannot be
    played (PlayFailed 8535/8536 for a file, 8565 for SSML; a recognize's prompt file: RecognizeFailed 8511);
    None when it does not."""
    rule = sim.scripted_failure(operation, targets=targets, connections=[conn.call_connection_id])
    if rule is not None:
        return rule.result, rule.extra()
    found = unplayable(sources)
    if found is None:
        return None
    index, result = found
    keep = operation == "play" or result == SPEECH_SERVICE  # the speech service's refusal, whoever asked it
    return (result if keep else PROMPT_FAILED), {"failedPlaySourceIndex": index}


def play(sim: Sim, req: Req) -> Reply:
    """202; PlayStarted, then PlayCompleted once every source played (never, for a loop, until cancelled); or
    PlayFailed alone. ``interruptCallMediaOperation`` (to everyone only, as the SDK sends it) barges in."""
    conn, call = connected(sim, req.call_connection_id)
    body = req.body
    sources = _check_play_sources(body.get("playSources"), "playSources")
    play_to = body.get("playTo") or []
    if not isinstance(play_to, list):
        raise invalid_request("playTo must be a list ([] plays to everyone)")
    if play_to and body.get("interruptCallMediaOperation"):
        raise invalid_request("interruptCallMediaOperation applies to a play to everyone (playTo: [])")
    targets = [raw_id_of(target, f"playTo[{index}]") for index, target in enumerate(play_to)]
    if any(target not in call.participants for target in targets):
        raise participant_not_present()
    options = body.get("playOptions")
    loop = bool(options.get("loop")) if isinstance(options, dict) else False
    media = _start_media(sim, conn, "play", body)
    failed = _failure(sim, conn, "play", targets or list(call.participants), sources)
    if failed is not None:  # nothing plays: no PlayStarted
        media.timer = sim.later(PLAY_S, _media_done, sim, conn, media, "PlayFailed", *failed)
        return Reply(202, None, conn.call_connection_id)
    started = events.call_event(conn, "PlayStarted", result=events.COMPLETED, operation_context=media.operation_context)
    sim.emit(conn, started, media.callback_uri)
    if not loop:
        media.timer = sim.later(play_duration_s(sources), _media_done, sim, conn, media, "PlayCompleted",
                                events.COMPLETED, {})
    return Reply(202, None, conn.call_connection_id)


def _prompts(body: dict[str, Any]) -> list[dict[str, Any]]:
    """A recognize's prompt: ``playPrompt`` (one source) or ``playPrompts`` (several, as the SDK sends a list)."""
    if body.get("playPrompt") is not None and body.get("playPrompts") is not None:
        raise invalid_request("give playPrompt or playPrompts, not both")
    if body.get("playPrompts") is not None:
        return _check_play_sources(body["playPrompts"], "playPrompts")
    if body.get("playPrompt") is not None:
        return _check_play_sources([body["playPrompt"]], "playPrompt")
    return []


def _check_recognize_options(input_type: str, options: dict[str, Any]) -> None:
    language = options.get("speechLanguage")
    if language is not None and not (isinstance(language, str) and LOCALE.fullmatch(language)):
        raise invalid_request("recognizeOptions.speechLanguage must be a locale such as en-US")
    speech = options.get("speechOptions")
    if speech is not None:
        silence = speech.get("endSilenceTimeoutInMs") if isinstance(speech, dict) else -1
        if silence is not None and not (isinstance(silence, int) and not isinstance(silence, bool) and silence >= 0):
            raise invalid_request("recognizeOptions.speechOptions.endSilenceTimeoutInMs must be a whole number >= 0")
    if input_type != "choices":
        return
    choices = options.get("choices")
    if not isinstance(choices, list) or not 0 < len(choices) <= MAX_CHOICES:
        raise invalid_request(f"recognizeOptions.choices must list 1 to {MAX_CHOICES} choices")
    for choice in choices:
        phrases = choice.get("phrases") if isinstance(choice, dict) else None
        if not isinstance(choice, dict) or not isinstance(choice.get("label"), str) or not choice["label"] \
                or not isinstance(phrases, list) or not phrases or not all(isinstance(p, str) for p in phrases):
            raise invalid_request("each choice needs a label and at least one phrase")
        if choice.get("tone") is not None and str(choice["tone"]).lower() not in TONES:
            raise invalid_request(f"a choice's tone must be among {sorted(TONES)}")


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
    _check_recognize_options(input_type, options)
    prompt = _prompts(body)
    script = sim.store.phones.get(phone_number(target)) if is_phone(target) else None
    outcome = recognition_outcome(input_type, options, script)
    delay_s = recognition_delay_s(outcome, options, prompt_s=play_duration_s(prompt) if prompt else 0.0)
    _, name, result, extra = outcome
    media = _start_media(sim, conn, "recognize", body)
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
