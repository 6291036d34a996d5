"""Every command type callq can run: how to send it with the SDK and which ACS events resolve it.

An :class:`Operation` is data plus one ``send`` function, so the runtime, the API and the event
correlator all read the same table. ``repeatable`` says the request carries ACS repeatability headers,
so sending it again after an unclear failure cannot make ACS execute it twice. Commands whose HTTP
answer is their whole outcome (stop recording, cancel media, start continuous DTMF) resolve on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from azure.communication.callautomation import (
    AzureBlobContainerRecordingStorage,
    CallAutomationClient,
    CallConnectionClient,
    ChannelAffinity,
    FileSource,
    PhoneNumberIdentifier,
    RecognitionChoice,
    RecognizeInputType,
    SsmlSource,
    TextSource,
    TranscriptionOptions,
)
from azure.core.exceptions import ResourceNotFoundError

from workers.command import Command, Status
from workers.identifiers import to_identifier
from workers.settings import Settings

# API tone characters → the SDK's DtmfTone values.
TONES = {**{str(d): name for d, name in enumerate(
    ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"))},
    "*": "asterisk", "#": "pound", "A": "a", "B": "b", "C": "c", "D": "d"}


@dataclass(frozen=True)
class Sent:
    """What the synchronous ACS response told us: fields to store on the command and the call."""

    call_connection_id: str | None = None
    recording_id: str | None = None
    result: dict[str, Any] | None = None
    resolved: bool = False  # True when the HTTP response itself is the outcome (no event expected)


@dataclass(frozen=True)
class Operation:
    """One command type: how it is sent, which events end it, and every rule the runtime applies to it."""

    type: str
    send: Callable[[CallAutomationClient, Command, Settings], Sent]
    succeeds_on: frozenset[str] = frozenset()
    fails_on: frozenset[str] = frozenset()
    # The request carries ACS repeatability headers, so a resend after an unclear failure cannot act twice;
    # ``repeatable_if`` decides per command when that depends on its parameters.
    repeatable: bool = False
    repeatable_if: Callable[[Command], bool] | None = None
    recording_state: str | None = None  # resolves on RecordingStateChanged to this state
    # For operations ACS cannot deduplicate: after an unclear failure, did the request take effect?
    # True / False from a read of ACS's state; None when no read can tell (play, recognize, ...).
    verify: Callable[[CallAutomationClient, Command], bool | None] | None = None
    # Per-call order (lib.lua's ``blocks``). By default later commands of the call wait for this one's outcome
    # (not just its sending), so "DTMF" never overtakes the "add" that brings its target in and ACS sees no
    # parallel actions (409/8519). ``background`` (play, recognize) only has to be sent: a hang-up or cancel may
    # follow at once; ``media`` operations still hold back the next media operation (ACS runs one at a time,
    # 400/8500); ``interrupts`` (hang up, cancel an invitation, cancel media) wait for earlier commands to be
    # sent, never for their outcomes: they exist to cut those short. ``cuts_media``: its accept fails the call's
    # earlier media operations callq has not sent (``interrupted``) instead of waiting behind them: "all" (cancel
    # media: ACS cancels those queued there) or "held" (hang up: only while a looping play, which never ends by
    # itself, holds them back; so "play, then hang up" still plays); see accept.lua. ``overtakes_parked`` (the
    # cancels): it does not wait for an earlier command parked behind another, which may be the very one it cuts
    # short.
    background: bool = False
    media: bool = False
    interrupts: bool = False
    cuts_media: Literal["", "all", "held"] = ""
    overtakes_parked: bool = False
    # pause/resume/stop: the recording may be named by the call, known only at send time; ``verb`` names the
    # action in the error when the call has none.
    recording_by_call: bool = False
    verb: str = ""
    # The outcome may take longer than callq's default wait (an invitation rings for its own timeout).
    extra_wait_s: Callable[[Command], float] | None = None
    # When the event never came: read ACS and say how the command ended (None: ACS cannot tell).
    reconcile: Callable[[CallAutomationClient, Command], Verdict | None] | None = None
    # The part of the call's state this operation changes at ACS ("participants", "recording"), and the part
    # its ``reconcile`` reads. A reading taken once a later command changing that part may have reached ACS
    # cannot tell what this command did (a later remove empties the list an add is looked for in).
    changes: str = ""
    reconcile_reads: str = ""
    # A command that is about the call itself is not failed ``call_ended`` when the call is gone (connect,
    # hang up); and what its success tells the call record when a read stood in for the event.
    ends_with_call: bool = True
    call_state_on_success: str | None = None

    def is_repeatable(self, cmd: Command) -> bool:
        return self.repeatable_if(cmd) if self.repeatable_if else self.repeatable

    def outcome_timeout_s(self, cmd: Command, default_s: float) -> float:
        """How long a command may wait for its event before callq reads ACS instead."""
        return default_s + (self.extra_wait_s(cmd) if self.extra_wait_s else 0.0)


Verdict = tuple[Status, dict[str, Any]]  # (terminal status, fields to record)


def _reconciled(status: Status, how: str, **fields: Any) -> Verdict:
    return status, {**fields, "resolved_by": {"type": "reconciled", "how": how}}


def _lost(code: str, message: str, how: str) -> Verdict:
    return _reconciled(Status.FAILED, how, error={"code": code, "message": message})


def timed_out(message: str = "ACS sent no outcome in time and its state cannot tell whether this command took "
                             "effect.", **resolved: str) -> Verdict:
    """``callback_timeout``: the deadline passed and no read of ACS could say how the command ended."""
    return Status.FAILED, {"error": {"code": "callback_timeout", "message": message},
                           "resolved_by": {"type": "timeout", **resolved}}


def _ring_time_s(cmd: Command) -> float:
    return float(cmd.params.get("invitation_timeout") or 60)


def _for_everyone(cmd: Command) -> bool:
    # Terminate (for everyone) carries repeatability headers; hang up for self (DELETE) does not.
    return bool(cmd.params.get("for_everyone", True))


DEFAULT_VOICE = "en-US-NancyNeural"
# The API's recognize input types → the SDK's.
INPUT_TYPES = {"dtmf": RecognizeInputType.DTMF, "speech": RecognizeInputType.SPEECH,
               "speech_or_dtmf": RecognizeInputType.SPEECH_OR_DTMF, "choices": RecognizeInputType.CHOICES}


def _media_source(spec: dict[str, Any]) -> FileSource | TextSource | SsmlSource:
    if spec.get("file_url"):
        return FileSource(url=spec["file_url"])
    if spec.get("ssml"):
        return SsmlSource(ssml_text=spec["ssml"])
    # callq's default voice only where the body chose none: a language or kind alone lets ACS pick a voice of it.
    chosen = any(spec.get(k) for k in ("voice_name", "source_locale", "voice_kind"))
    return TextSource(text=spec["text"], voice_name=spec.get("voice_name") or (None if chosen else DEFAULT_VOICE),
                      source_locale=spec.get("source_locale"), voice_kind=spec.get("voice_kind"),
                      custom_voice_endpoint_id=spec.get("custom_voice_endpoint_id"))


def _play_sources(params: dict[str, Any]) -> list[FileSource | TextSource | SsmlSource]:
    # ``source``: one, as accepted before several were possible (and still, for a body in that form).
    return [_media_source(s) for s in params.get("sources") or [params["source"]]]


def _connection(client: CallAutomationClient, cmd: Command) -> CallConnectionClient:
    return client.get_call_connection(cmd.call_connection_id)


def _transcription(params: dict[str, Any]) -> TranscriptionOptions | None:
    found = params.get("transcription")
    if not found:
        return None
    return TranscriptionOptions(transport_url=found["transport_url"], transport_type="websocket",
                                locale=found["locale"], start_transcription=bool(found.get("start")),
                                enable_intermediate_results=bool(found.get("intermediate_results")))


def _connect(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    # room_id= sends the same roomCallLocator body as RoomCallLocator(...), which SDK 1.6 deprecates. ACS runs text
    # to speech, speech recognition and transcription with the Azure AI services resource named at connect only.
    options: dict[str, Any] = {}
    if settings.acs_cognitive_services_endpoint:
        options["cognitive_services_endpoint"] = settings.acs_cognitive_services_endpoint
    if (transcription := _transcription(cmd.params)) is not None:
        options["transcription"] = transcription
    props = client.connect_call(callback_url=settings.callback_url, room_id=cmd.room_id,
                                operation_context=cmd.id, **options)
    return Sent(call_connection_id=props.call_connection_id)


def _hang_up(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).hang_up(is_for_everyone=bool(cmd.params.get("for_everyone", True)))
    return Sent()


def _add_participant(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    p = cmd.params
    caller = PhoneNumberIdentifier(p["source_caller_id"]) if p.get("source_caller_id") else None
    result = _connection(client, cmd).add_participant(
        to_identifier(p["participant"]), invitation_timeout=p.get("invitation_timeout"),
        source_caller_id_number=caller, operation_context=cmd.id, operation_callback_url=settings.callback_url)
    return Sent(result={"invitation_id": result.invitation_id, "participant": p["participant"]})


def _remove_participant(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).remove_participant(to_identifier(cmd.params["participant"]),
                                                operation_context=cmd.id,
                                                operation_callback_url=settings.callback_url)
    return Sent()


def _cancel_add(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).cancel_add_participant_operation(cmd.params["invitation_id"],
                                                              operation_context=cmd.id,
                                                              operation_callback_url=settings.callback_url)
    return Sent()


def _send_dtmf(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    p = cmd.params
    _connection(client, cmd).send_dtmf_tones([TONES[t] for t in p["tones"]], to_identifier(p["participant"]),
                                             operation_context=cmd.id,
                                             operation_callback_url=settings.callback_url)
    return Sent()


def _play(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    p = cmd.params
    sources, loop = _play_sources(p), bool(p.get("loop"))
    targets = [to_identifier(t) for t in p.get("targets") or []]
    connection = _connection(client, cmd)
    if targets:
        connection.play_media(sources, play_to=targets, loop=loop, operation_context=cmd.id,
                              operation_callback_url=settings.callback_url)
    else:  # to everyone (playTo: [] on the wire); only such a play may barge in (the SDK sends false otherwise)
        connection.play_media(sources, play_to="all", loop=loop, operation_context=cmd.id,
                              operation_callback_url=settings.callback_url,
                              interrupt_call_media_operation=bool(p.get("interrupt_call_media_operation")))
    return Sent()


def _recognize(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    p = cmd.params
    input_type = p["input_type"]
    kwargs: dict[str, Any] = {"operation_context": cmd.id, "operation_callback_url": settings.callback_url,
                              "initial_silence_timeout": p.get("initial_silence_timeout"),
                              "interrupt_prompt": bool(p.get("interrupt_prompt")),
                              "interrupt_call_media_operation": bool(p.get("interrupt_call_media_operation")),
                              "speech_language": p.get("speech_language")}
    if p.get("prompts"):  # a list: the SDK sends playPrompts (even of one), a single source playPrompt
        kwargs["play_prompt"] = [_media_source(s) for s in p["prompts"]]
    elif p.get("prompt"):
        kwargs["play_prompt"] = _media_source(p["prompt"])
    if input_type in ("dtmf", "speech_or_dtmf"):
        kwargs |= {"dtmf_max_tones_to_collect": p.get("max_tones"),
                   "dtmf_inter_tone_timeout": p.get("inter_tone_timeout"),
                   "dtmf_stop_tones": [TONES[t] for t in p.get("stop_tones") or []] or None}
    if input_type in ("speech", "speech_or_dtmf"):
        kwargs["end_silence_timeout"] = p.get("end_silence_timeout")
    if input_type == "choices":
        kwargs["choices"] = [RecognitionChoice(label=c["label"], phrases=c["phrases"],
                                               tone=TONES[c["tone"]] if c.get("tone") else None)
                             for c in p["choices"]]
    _connection(client, cmd).start_recognizing_media(INPUT_TYPES[input_type], to_identifier(p["participant"]),
                                                     **kwargs)
    return Sent()


def _transcription_start(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).start_transcription(locale=cmd.params.get("locale"), operation_context=cmd.id,
                                                 operation_callback_url=settings.callback_url)
    return Sent()


def _transcription_stop(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).stop_transcription(operation_context=cmd.id,
                                                operation_callback_url=settings.callback_url)
    return Sent()


def _transcription_update(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).update_transcription(locale=cmd.params["locale"], operation_context=cmd.id,
                                                  operation_callback_url=settings.callback_url)
    return Sent()


def _continuous_dtmf_start(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    """200 is the outcome: ACS sends no event for a start that worked. Tones then arrive as ToneReceived events, and
    a ContinuousDtmfRecognitionToneFailed (it echoes this command's id) reports recognition failing later, not this
    request: it joins the call's timeline and fails no command (were it to fail this one when it beats the recorded
    200, the same events would end the command differently by timing alone)."""
    _connection(client, cmd).start_continuous_dtmf_recognition(to_identifier(cmd.params["participant"]),
                                                                operation_context=cmd.id)
    return Sent(resolved=True)


def _continuous_dtmf_stop(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).stop_continuous_dtmf_recognition(to_identifier(cmd.params["participant"]),
                                                               operation_context=cmd.id,
                                                               operation_callback_url=settings.callback_url)
    return Sent()


def _cancel_media(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    _connection(client, cmd).cancel_all_media_operations()
    return Sent(resolved=True)  # the canceled operations report PlayCanceled/RecognizeCanceled themselves


def _start_recording(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    p = cmd.params
    storage = p.get("recording_storage")
    options: dict[str, Any] = {
        "recording_state_callback_url": settings.callback_url, "recording_content_type": p["content"],
        "recording_channel_type": p["channel"], "recording_format_type": p["format"],
        "pause_on_start": p.get("pause_on_start"),
        "recording_storage": AzureBlobContainerRecordingStorage(storage["container_url"]) if storage else None,
        "channel_affinity": [ChannelAffinity(to_identifier(a["participant"]), a["channel"])
                             for a in p.get("channel_affinity") or []] or None}
    if p.get("locator") == "call_connection":
        props = client.start_recording(call_connection_id=cmd.call_connection_id, **options)
    else:
        props = client.start_recording(server_call_id=p["server_call_id"], **options)
    result = {"recording_id": props.recording_id}
    if p.get("pause_on_start"):
        # Started paused: ACS answers "inactive" and whether a RecordingStateChanged follows is not documented, so
        # the answer is the outcome (waiting for an "active" that comes only with a resume would hold that resume
        # back until the outcome deadline). A StartRecordingFailed after it is kept as the command's late_event.
        return Sent(recording_id=props.recording_id, result={**result, "state": props.recording_state},
                    resolved=True)
    return Sent(recording_id=props.recording_id, result=result)


def _pause_recording(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    client.pause_recording(cmd.recording_id)
    return Sent()


def _resume_recording(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    client.resume_recording(cmd.recording_id)
    return Sent()


def _stop_recording(client: CallAutomationClient, cmd: Command, settings: Settings) -> Sent:
    client.stop_recording(cmd.recording_id)
    return Sent(resolved=True)  # 204 is the outcome; a final RecordingStateChanged may follow


def _recording_is(state: str) -> Callable[[CallAutomationClient, Command], bool | None]:
    def verify(client: CallAutomationClient, cmd: Command) -> bool | None:
        try:
            return bool(client.get_recording_properties(cmd.recording_id).recording_state == state)
        except ResourceNotFoundError:
            return None  # the recording is gone: neither state can be read
    return verify


def _recording_gone(client: CallAutomationClient, cmd: Command) -> bool | None:
    try:
        client.get_recording_properties(cmd.recording_id)
    except ResourceNotFoundError:
        return True
    return False


def _left_call(client: CallAutomationClient, cmd: Command) -> bool | None:
    try:
        state = _connection(client, cmd).get_call_properties().call_connection_state
    except ResourceNotFoundError:
        return True
    return state in ("disconnected", "disconnecting")


def _reconcile_connect(client: CallAutomationClient, cmd: Command) -> Verdict | None:
    try:
        props = _connection(client, cmd).get_call_properties()
    except ResourceNotFoundError:
        return _lost("connect_failed", "ACS does not know the call connection: the connect did not hold.",
                     "read call")
    if props.call_connection_state == "connected":
        return _reconciled(Status.SUCCEEDED, "read call", result={
            "call_connection_id": props.call_connection_id, "server_call_id": props.server_call_id,
            "correlation_id": props.correlation_id})
    return None


def _participant_present(client: CallAutomationClient, cmd: Command) -> bool:
    raw = cmd.params["participant"]
    return any(p.identifier is not None and p.identifier.raw_id == raw
               for p in _connection(client, cmd).list_participants())


def _reconcile_add(client: CallAutomationClient, cmd: Command) -> Verdict | None:
    if _participant_present(client, cmd):
        return _reconciled(Status.SUCCEEDED, "read participants", result={"participant": cmd.params["participant"]})
    return _lost("participant_not_added", "The participant is not in the call.", "read participants")


def _reconcile_remove(client: CallAutomationClient, cmd: Command) -> Verdict | None:
    if _participant_present(client, cmd):
        return _lost("participant_still_present", "The participant is still in the call.", "read participants")
    return _reconciled(Status.SUCCEEDED, "read participants")


def _reconcile_hang_up(client: CallAutomationClient, cmd: Command) -> Verdict | None:
    return _reconciled(Status.SUCCEEDED, "read call") if _left_call(client, cmd) else None


def _reconcile_recording(state: str) -> Callable[[CallAutomationClient, Command], Verdict | None]:
    def reconcile(client: CallAutomationClient, cmd: Command) -> Verdict | None:
        now = _recording_is(state)(client, cmd)
        if now is None:
            return None
        if now:
            return _reconciled(Status.SUCCEEDED, "read recording", result={"recording_id": cmd.recording_id,
                                                                      "state": state})
        return _lost("recording_state_unchanged", f"The recording is not {state}.", "read recording")
    return reconcile


def _reconcile_transcription(client: CallAutomationClient, cmd: Command) -> Verdict | None:
    """What the call's transcription subscription shows: ``active`` after a start, not after a stop, the locale
    asked for after an update. No subscription at all: the call was connected without transcription, so a start
    cannot have worked (and a stop has nothing to stop)."""
    found = _connection(client, cmd).get_call_properties().transcription_subscription
    state, locale = (found.state, found.locale) if found is not None else (None, None)
    result = {"transcription": {"state": state, "locale": locale}}
    if cmd.type == "transcription_update":
        if locale is not None and locale.lower() == str(cmd.params["locale"]).lower():
            return _reconciled(Status.SUCCEEDED, "read call", result=result)
        return _lost("transcription_not_updated", "The transcription's locale is not the one asked for.",
                     "read call")
    if (state == "active") == (cmd.type == "transcription_start"):
        return _reconciled(Status.SUCCEEDED, "read call", result=result)
    verb = "started" if cmd.type == "transcription_start" else "stopped"
    return _lost(f"transcription_not_{verb}", f"The call's transcription is not {verb}.", "read call")


def _reconcile_start(client: CallAutomationClient, cmd: Command) -> Verdict | None:
    """A recording ACS knows was started, whatever its state now: a later pause (sent once this start's deadline
    passed) may already have made it inactive, and that is no evidence against the start."""
    try:
        props = client.get_recording_properties(cmd.recording_id)
    except ResourceNotFoundError:
        return None  # stopped since, or never made: the read cannot tell which
    return _reconciled(Status.SUCCEEDED, "read recording", result={"recording_id": cmd.recording_id,
                                                                   "state": props.recording_state})


_OPS = (
    Operation("connect", _connect, frozenset({"CallConnected"}), frozenset({"ConnectFailed"}), repeatable=True,
              reconcile=_reconcile_connect, ends_with_call=False, call_state_on_success="connected"),
    Operation("hang_up", _hang_up, frozenset({"CallDisconnected"}), repeatable_if=_for_everyone, verify=_left_call,
              reconcile=_reconcile_hang_up, interrupts=True, cuts_media="held", ends_with_call=False,
              call_state_on_success="disconnected"),
    Operation("add_participant", _add_participant, frozenset({"AddParticipantSucceeded"}),
              frozenset({"AddParticipantFailed"}), repeatable=True, reconcile=_reconcile_add,
              extra_wait_s=_ring_time_s, changes="participants", reconcile_reads="participants"),
    Operation("remove_participant", _remove_participant, frozenset({"RemoveParticipantSucceeded"}),
              frozenset({"RemoveParticipantFailed"}), repeatable=True, reconcile=_reconcile_remove,
              changes="participants", reconcile_reads="participants"),
    Operation("cancel_add_participant", _cancel_add, frozenset({"CancelAddParticipantSucceeded"}),
              frozenset({"CancelAddParticipantFailed"}), repeatable=True, interrupts=True, overtakes_parked=True,
              changes="participants"),
    Operation("send_dtmf", _send_dtmf, frozenset({"SendDtmfTonesCompleted"}), frozenset({"SendDtmfTonesFailed"}),
              repeatable=True),
    Operation("play", _play, frozenset({"PlayCompleted"}), frozenset({"PlayFailed", "PlayCanceled"}),
              background=True, media=True),
    Operation("recognize", _recognize, frozenset({"RecognizeCompleted"}),
              frozenset({"RecognizeFailed", "RecognizeCanceled"}), background=True, media=True),
    # Barge-in (interruptCallMediaOperation): ACS cuts the media operation that runs when it arrives (which ends
    # PlayCanceled / RecognizeCanceled) and plays this one. So callq does not hold it behind that operation's
    # outcome: it is ordered as cancel media is (an interrupt that overtakes commands parked behind another), and
    # like cancel media it ends the call's media operations callq has not sent (``interrupted``): left waiting their
    # turn, each would be sent while this one plays, and ACS would refuse it (400/8500) or cut this one short.
    # It still holds back the media operations accepted after it, as any play does.
    Operation("play_barge_in", _play, frozenset({"PlayCompleted"}), frozenset({"PlayFailed", "PlayCanceled"}),
              background=True, media=True, interrupts=True, cuts_media="all", overtakes_parked=True),
    Operation("recognize_barge_in", _recognize, frozenset({"RecognizeCompleted"}),
              frozenset({"RecognizeFailed", "RecognizeCanceled"}), background=True, media=True, interrupts=True,
              cuts_media="all", overtakes_parked=True),
    # Live transcription runs beside media operations (ACS streams it to the WebSocket named at connect); each
    # request resolves on its own event, TranscriptionFailed carrying ACS's codes.
    Operation("transcription_start", _transcription_start, frozenset({"TranscriptionStarted"}),
              frozenset({"TranscriptionFailed"}), reconcile=_reconcile_transcription, changes="transcription",
              reconcile_reads="transcription"),
    Operation("transcription_stop", _transcription_stop, frozenset({"TranscriptionStopped"}),
              frozenset({"TranscriptionFailed"}), reconcile=_reconcile_transcription, changes="transcription",
              reconcile_reads="transcription"),
    Operation("transcription_update", _transcription_update, frozenset({"TranscriptionUpdated"}),
              frozenset({"TranscriptionFailed"}), reconcile=_reconcile_transcription, changes="transcription",
              reconcile_reads="transcription"),
    Operation("continuous_dtmf_start", _continuous_dtmf_start),
    Operation("continuous_dtmf_stop", _continuous_dtmf_stop, frozenset({"ContinuousDtmfRecognitionStopped"})),
    Operation("cancel_media", _cancel_media, interrupts=True, cuts_media="all", overtakes_parked=True),
    # StartRecordingFailed carries the recordingId (the start request has no operationContext): it finds the start
    # under its recording, like RecordingStateChanged, also when it beats the start's answer (runtime catches up).
    Operation("start_recording", _start_recording, fails_on=frozenset({"StartRecordingFailed"}), repeatable=True,
              recording_state="active", reconcile=_reconcile_start, changes="recording"),
    Operation("pause_recording", _pause_recording, recording_state="inactive", verify=_recording_is("inactive"),
              recording_by_call=True, verb="pause", reconcile=_reconcile_recording("inactive"), changes="recording",
              reconcile_reads="recording"),
    Operation("resume_recording", _resume_recording, recording_state="active", verify=_recording_is("active"),
              recording_by_call=True, verb="resume", reconcile=_reconcile_recording("active"), changes="recording",
              reconcile_reads="recording"),
    Operation("stop_recording", _stop_recording, verify=_recording_gone, recording_by_call=True, verb="stop",
              changes="recording"),
)
OPERATIONS: dict[str, Operation] = {op.type: op for op in _OPS}


def reconcile(client: CallAutomationClient, cmd: Command,
              changed_since: Callable[[str], str | None] = lambda part: None) -> Verdict | None:
    """How a command whose event never came ended, read from ACS; None when ACS cannot tell.

    The operation's own reading first. ``changed_since(part)`` names a command accepted after this one on its
    call that changes that part of the call's state and may have reached ACS (asked after the reading, so one
    sent during it counts). The reading then describes that command as much as this one: the command ends
    ``callback_timeout``, naming it. When the reading cannot tell (or there is none) and the call is gone, the
    command ends ``call_ended``, as it would have had CallDisconnected reached callq before its own event did.
    """
    op = OPERATIONS[cmd.type]
    try:
        verdict = op.reconcile(client, cmd) if op.reconcile else None
    except ResourceNotFoundError:
        verdict = None  # the call (or recording) is gone: said below
    later = changed_since(op.reconcile_reads) if op.reconcile_reads else None
    if later:
        verdict = None  # also when the read could not tell: a later stop is why a resume finds no recording
    if verdict is not None or not op.ends_with_call or not cmd.call_connection_id:
        return verdict
    if _left_call(client, cmd):
        return _lost("call_ended", "The call ended before ACS reported this command's outcome.", "read call")
    if later:
        return timed_out(f"ACS sent no outcome in time, and {later}, sent after this command, changed the "
                         f"{op.reconcile_reads} a read of ACS would show.", after=later)
    return None
