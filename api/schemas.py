"""Request bodies, validated by pydantic (which also describes them in the OpenAPI schema).

Validators raise ``PydanticCustomError`` with a stable type (``invalid_phone_number``, ``invalid_tone``,
``too_many_tones``, ``timeout_out_of_range`` …) that becomes the error's machine code. Each body knows
the command parameters it stands for (``params()``): participants are stored as ACS raw ids.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from workers.identifiers import ACS_USER, E164, raw_id
from workers.operations import TONES

MAX_TONES = 18
# ACS documents no limit on play sources per request (older ACS refused more than one: 400/8523 "more than one play
# source detected"); callq takes up to this many, the simulator too.
MAX_PLAY_SOURCES = 10
MAX_CHOICES = 10
# The machine codes our validators raise (each becomes the error code when it is the only problem).
CODES = frozenset({
    "invalid_phone_number", "invalid_communication_user", "invalid_participant", "pstn_target_required",
    "source_caller_id_required", "timeout_out_of_range", "invalid_tone", "too_many_tones", "invalid_media_url",
    "invalid_media_source", "incompatible_recording_options", "invalid_recording_storage", "channel_out_of_range",
    "invalid_ssml", "too_many_play_sources", "barge_in_plays_to_all", "invalid_choices", "invalid_locale",
    "invalid_transport_url", "tts_options_need_text", "custom_voice_needs_voice_name",
    "invalid_custom_voice_endpoint_id", "invalid_voice_kind",
})


def _e164(value: str) -> str:
    if not E164.match(value):
        raise PydanticCustomError("invalid_phone_number", "must be an E.164 phone number such as +14255550123")
    return value


def _acs_user(value: str) -> str:
    if not ACS_USER.match(value):
        raise PydanticCustomError("invalid_communication_user", "must be an ACS user id such as 8:acs:…")
    return value


def _seconds(low: int, high: int) -> tuple[AfterValidator, WithJsonSchema]:
    """An integer number of seconds in [low, high]; the schema states the same range."""
    def check(value: int) -> int:
        if not low <= value <= high:
            raise PydanticCustomError("timeout_out_of_range", f"must be between {low} and {high} seconds")
        return value
    return AfterValidator(check), WithJsonSchema({"type": "integer", "minimum": low, "maximum": high})


def _tones(value: str | list[str]) -> list[str]:
    tones = list(value) if isinstance(value, str) else value
    bad = [t for t in tones if t not in TONES]
    if bad:
        raise PydanticCustomError("invalid_tone", f"unknown tone {bad[0]!r}: use 0-9, *, #, A-D")
    return tones


def _media_url(value: str) -> str:
    if not MEDIA_URL.match(value):
        raise PydanticCustomError("invalid_media_url", "file_url must be an http(s) URL")
    return value


def _one_tone(value: str) -> str:
    if value not in TONES:
        raise PydanticCustomError("invalid_tone", f"unknown tone {value!r}: use 0-9, *, #, A-D")
    return value


def _ssml(value: str) -> str:
    if len(value) > MAX_SSML or not SSML.match(value):
        raise PydanticCustomError("invalid_ssml", f"ssml must be one <speak> document of at most {MAX_SSML} "
                                                  "characters")
    return value


def _locale(value: str) -> str:
    if not LOCALE.match(value):
        raise PydanticCustomError("invalid_locale", "must be a locale with its region, such as en-US")
    return value


def _custom_voice_endpoint(value: str) -> str:
    if not CUSTOM_VOICE_ENDPOINT.match(value):
        raise PydanticCustomError("invalid_custom_voice_endpoint_id",
                                  "custom_voice_endpoint_id must be the GUID of your custom voice's deployment")
    return value


def _voice_kind(value: str) -> str:
    if value not in VOICE_KINDS:
        raise PydanticCustomError("invalid_voice_kind", f"voice_kind must be one of {', '.join(VOICE_KINDS)}")
    return value


def _transport_url(value: str) -> str:
    if not TRANSPORT_URL.match(value):
        raise PydanticCustomError("invalid_transport_url", "transport_url must be a ws:// or wss:// URL")
    return value


# The JSON Schema of each rule is built from the same constant the validator checks.
_TONE = {"type": "string", "enum": sorted(TONES)}
_TONE_CLASS = "[" + "".join(sorted(TONES)) + "]"  # digits, *, #, A-D: none needs escaping in a class
# ASCII classes only: the schema's readers (ECMA-262 regexes) and Python disagree on what \s covers.
MEDIA_URL = re.compile(r"^https?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+(?:[/?#][!-~]*)?$")
TRANSPORT_URL = re.compile(r"^wss?://[A-Za-z0-9._~%!$&'()*+,;=:@\[\]-]+(?:[/?#][!-~]*)?$")
# One SSML document (ACS hands it to Azure AI Speech, which wants a <speak> root); whether it is well-formed XML
# only the speech service says, as PlayFailed 8565. [\s\S]: any character, to Python and ECMA-262 alike.
SSML = re.compile(r"^<speak[ \t\r\n>][\s\S]*</speak>$")
MAX_SSML = 8000
# Language, optional script, region: ACS's speech and transcription locales (transcription refuses one without
# a region: 400/8523 "only locales that contain region information are supported").
LOCALE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z]{4})?-(?:[A-Za-z]{2}|[0-9]{3})$")
Phone = Annotated[str, AfterValidator(_e164), WithJsonSchema({"type": "string", "pattern": E164.pattern})]
AcsUser = Annotated[str, AfterValidator(_acs_user), WithJsonSchema({"type": "string", "pattern": ACS_USER.pattern})]
MediaUrl = Annotated[str, AfterValidator(_media_url), WithJsonSchema({"type": "string", "pattern": MEDIA_URL.pattern})]
Tones = Annotated[list[str], AfterValidator(_tones), WithJsonSchema({"type": "array", "items": _TONE})]
Tone = Annotated[str, AfterValidator(_one_tone), WithJsonSchema(_TONE)]
Ssml = Annotated[str, AfterValidator(_ssml), WithJsonSchema({"type": "string", "pattern": SSML.pattern,
                                                              "maxLength": MAX_SSML})]
Locale = Annotated[str, AfterValidator(_locale), WithJsonSchema({"type": "string", "pattern": LOCALE.pattern})]
# An Azure AI Speech custom voice deployment ("endpoint") is named by a GUID.
CUSTOM_VOICE_ENDPOINT = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}$")
CustomVoiceEndpoint = Annotated[str, AfterValidator(_custom_voice_endpoint),
                                WithJsonSchema({"type": "string", "pattern": CUSTOM_VOICE_ENDPOINT.pattern})]
VOICE_KINDS = ("male", "female")  # the SDK's VoiceKind
VoiceKind = Annotated[str, AfterValidator(_voice_kind), WithJsonSchema({"type": "string", "enum": list(VOICE_KINDS)})]
TransportUrl = Annotated[str, AfterValidator(_transport_url),
                         WithJsonSchema({"type": "string", "pattern": TRANSPORT_URL.pattern})]
# Not blank once surrounding whitespace is stripped (every body strips strings): holds a visible ASCII character.
NOT_BLANK = "[!-~]"


class Body(BaseModel):
    """A request body. ``exactly_one_of`` names fields of which exactly one is given (not null): validated by
    ``_choice`` and published as the schema's ``oneOf``, with a branch for each field in ``allowed`` (all by
    default) that also requires the fields ``needs`` names for it. ``schema_rules`` publish what a body's own
    model validators check across fields (each joins the schema's ``allOf``), so every body the schema allows is
    one the route accepts."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True,
                              json_schema_extra=lambda schema, cls: _choice_schema(schema, cls))

    exactly_one_of: ClassVar[tuple[str, ...]] = ()
    choice_error: ClassVar[tuple[str, str]] = ("", "")  # code, message
    allowed: ClassVar[tuple[str, ...] | None] = None
    not_allowed_error: ClassVar[tuple[str, str]] = ("", "")
    needs: ClassVar[dict[str, tuple[str, str, str]]] = {}  # field → (needed field, code, message)
    schema_rules: ClassVar[tuple[dict[str, Any], ...]] = ()

    @model_validator(mode="after")
    def _choice(self) -> Self:
        if not self.exactly_one_of:
            return self
        given = [name for name in self.exactly_one_of if getattr(self, name) is not None]
        if len(given) != 1:
            raise PydanticCustomError(*self.choice_error)
        if self.allowed is not None and given[0] not in self.allowed:
            raise PydanticCustomError(*self.not_allowed_error)
        needed = self.needs.get(given[0])
        if needed is not None and getattr(self, needed[0]) is None:
            raise PydanticCustomError(needed[1], needed[2])
        return self

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

    def command_type(self, route_type: str) -> str:
        """The type of the command this body makes on a route for ``route_type`` commands (the same, but for a
        barge-in, which callq orders as an interrupt: see ``workers.operations``)."""
        return route_type


def _given(prop: dict[str, Any]) -> dict[str, Any]:
    """A nullable property's schema without its null: what a field that must be given may hold."""
    options = [o for o in prop.get("anyOf", [prop]) if o.get("type") != "null"]
    return options[0] if len(options) == 1 else {"anyOf": options}


def _choice_schema(schema: dict[str, Any], cls: type[Body]) -> None:
    """``oneOf``: one branch per allowed choice, requiring it (and what it needs), with the other choices null; and
    the body's ``schema_rules``."""
    if cls.schema_rules:
        schema.setdefault("allOf", []).extend(cls.schema_rules)
    if not cls.exactly_one_of:
        return
    props = schema["properties"]
    branches = []
    for name in cls.allowed or cls.exactly_one_of:
        required = [name, *([cls.needs[name][0]] if name in cls.needs else [])]
        branches.append({"required": required, "properties": {
            **{n: _given(props[n]) for n in required},
            **{o: {"type": "null"} for o in cls.exactly_one_of if o != name}}})
    schema["oneOf"] = branches


class Empty(Body):
    """No body is needed."""


class Participant(Body):
    """One participant: a PSTN phone number or an ACS user."""

    exactly_one_of = ("phone_number", "communication_user")
    choice_error = ("invalid_participant", "give exactly one of phone_number or communication_user")

    phone_number: Phone | None = Field(None, examples=["+14255550123"])
    communication_user: AcsUser | None = Field(None, examples=["8:acs:resource_user"])

    @property
    def raw_id(self) -> str:
        return raw_id(phone_number=self.phone_number, communication_user=self.communication_user)

    def params(self) -> dict[str, Any]:
        return {"participant": self.raw_id}


class PstnParticipant(Participant):
    allowed = ("phone_number",)
    not_allowed_error = ("pstn_target_required", "this action only targets PSTN (phone) participants")


class TranscriptionOptions(Body):
    """Live transcription for the call (ACS sends the transcript to ``transport_url``, a WebSocket server of
    yours; callq never sees it). ACS needs these at connect for a later transcription start to work."""

    transport_url: TransportUrl = Field(examples=["wss://transcripts.example.com/acs"])
    locale: Locale = Field(examples=["en-US"])
    start: bool = Field(False, description="start transcribing as soon as callq joins (else: transcription/start)")
    intermediate_results: bool = False


class ConnectBody(Body):
    """``POST /v1/rooms/{room_id}/connect``: nothing is required; callq supplies callback and context."""

    transcription: TranscriptionOptions | None = None


class HangUpBody(Body):
    """End the call for everyone (terminate), or only leave it (``false``)."""

    for_everyone: bool = True


class AddParticipantBody(Participant):
    """Dial a phone number (with the ACS number to call from) or invite an ACS user."""

    needs = {"phone_number": ("source_caller_id", "source_caller_id_required",
                              "dialing a phone number needs source_caller_id")}

    source_caller_id: Phone | None = Field(None, examples=["+18005550199"])
    invitation_timeout: Annotated[int, *_seconds(1, 180)] | None = Field(None, description="seconds, 1-180")

    def params(self) -> dict[str, Any]:
        return {**super().params(), **self.model_dump(include={"source_caller_id", "invitation_timeout"},
                                                      exclude_none=True)}


class CancelAddBody(Body):
    invitation_id: str = Field(min_length=1, max_length=128, pattern=NOT_BLANK)


class DtmfBody(PstnParticipant):
    """Send 1-18 tones (``"123#"`` or ``["1", "2", "3", "#"]``) to a PSTN participant."""

    tones: Annotated[str | list[str], WithJsonSchema({"anyOf": [
        {"type": "string", "pattern": f"^{_TONE_CLASS}{{1,{MAX_TONES}}}$"},
        {"type": "array", "items": _TONE, "minItems": 1, "maxItems": MAX_TONES}]})]

    @field_validator("tones")
    @classmethod
    def _check(cls, value: str | list[str]) -> list[str]:
        tones = _tones(value)
        if not 1 <= len(tones) <= MAX_TONES:
            raise PydanticCustomError("too_many_tones", f"send between 1 and {MAX_TONES} tones at a time")
        return tones

    def params(self) -> dict[str, Any]:
        return {**super().params(), "tones": self.tones}


# Text to speech: the options ACS's TextSource takes besides voice_name. They choose how text is spoken, so they
# need a text source (a voice_name elsewhere is ignored, as it always was: a body of that form stays accepted).
TTS_OPTIONS = ("source_locale", "voice_kind", "custom_voice_endpoint_id")
_TTS_ERROR = ("tts_options_need_text", "source_locale, voice_kind and custom_voice_endpoint_id apply to text to "
                                       "speak: give them with text (with sources, on each text source)")
_CUSTOM_VOICE_ERROR = ("custom_voice_needs_voice_name", "custom_voice_endpoint_id needs voice_name: the name of "
                                                        "the custom voice deployed there")
# The same two rules for a schema reader: options only with text, a custom voice endpoint only with its voice's name.
_TTS_RULES = (
    {"anyOf": [{"properties": {o: {"type": "null"} for o in TTS_OPTIONS}},
               {"required": ["text"], "properties": {"text": {"type": "string"}}}]},
    {"anyOf": [{"properties": {"custom_voice_endpoint_id": {"type": "null"}}},
               {"required": ["voice_name"], "properties": {"voice_name": {"type": "string"}}}]},
)
_VOICE_NAME = "for text: the voice (default en-US-NancyNeural, unless source_locale or voice_kind is given)"


# How text is spoken (ACS's TextSource): a voice by name, or by language and kind; a custom neural voice by its name
# and the deployment it runs on. The same fields on a source and on a play's one-source form.
SourceLocale = Annotated[Locale | None, Field(examples=["fr-FR"],
                                              description="for text: its language (ACS picks a voice of it)")]
TextVoiceKind = Annotated[VoiceKind | None, Field(description="for text: the kind of voice ACS picks")]
CustomVoice = Annotated[CustomVoiceEndpoint | None, Field(
    description="for text: the Azure AI Speech deployment of the custom voice named in voice_name")]


def _check_tts(body: MediaSource | PlayBody) -> None:
    """The two rules of ``_TTS_RULES``."""
    if body.text is None and any(getattr(body, o) is not None for o in TTS_OPTIONS):
        raise PydanticCustomError(*_TTS_ERROR)
    if body.custom_voice_endpoint_id is not None and body.voice_name is None:
        raise PydanticCustomError(*_CUSTOM_VOICE_ERROR)


class MediaSource(Body):
    """What to play: an audio file URL, text to speak (``voice_name`` and the other text-to-speech options), or an
    SSML document."""

    exactly_one_of = ("file_url", "text", "ssml")
    choice_error = ("invalid_media_source", "give exactly one of file_url, text or ssml")
    schema_rules = _TTS_RULES

    file_url: MediaUrl | None = None
    text: str | None = Field(None, max_length=4000)
    ssml: Ssml | None = Field(None, examples=['<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" '
                                               'xml:lang="en-US"><voice name="en-US-JennyNeural">Hello</voice>'
                                               '</speak>'])
    voice_name: str | None = Field(None, max_length=100, description=_VOICE_NAME)
    source_locale: SourceLocale = None
    voice_kind: TextVoiceKind = None
    custom_voice_endpoint_id: CustomVoice = None

    @model_validator(mode="after")
    def _tts(self) -> Self:
        _check_tts(self)
        return self

    def chooses_voice(self) -> bool:
        """True when the source says which voice speaks (else the play's voice_name, or callq's default, does)."""
        return any(v is not None for v in (self.voice_name, self.source_locale, self.voice_kind))


class PlayBody(Body):
    """Play one source (``file_url``, ``text`` or ``ssml``) or several in a row (``sources``), to the listed
    participants or to everyone when ``targets`` is omitted. Text is spoken as the text-to-speech options say
    (``voice_name``; or ``source_locale`` and ``voice_kind``; a custom voice by ``voice_name`` and
    ``custom_voice_endpoint_id``). ``interrupt_call_media_operation`` (to everyone only) barges in: what plays now is
    cut short, callq does not wait for it, and the media operations callq has not sent yet end ``interrupted`` (the
    command is a ``play_barge_in``)."""

    exactly_one_of = ("file_url", "text", "ssml", "sources")
    choice_error = ("invalid_media_source", "give exactly one of file_url, text, ssml or sources")
    schema_rules = ({"anyOf": [{"properties": {"interrupt_call_media_operation": {"const": False}}},
                               {"properties": {"targets": {"anyOf": [{"type": "null"},
                                                                     {"type": "array", "maxItems": 0}]}}}]},
                    *_TTS_RULES)

    file_url: MediaUrl | None = None
    text: str | None = Field(None, max_length=4000)
    ssml: Ssml | None = None
    voice_name: str | None = Field(None, max_length=100, description=(
        "for text, and for each text source that chooses no voice (no voice_name, source_locale or voice_kind)"))
    source_locale: SourceLocale = None
    voice_kind: TextVoiceKind = None
    custom_voice_endpoint_id: CustomVoice = None
    sources: list[MediaSource] | None = Field(None, min_length=1, max_length=MAX_PLAY_SOURCES,
                                              description=f"1-{MAX_PLAY_SOURCES}, played one after another")
    targets: list[Participant] | None = Field(None, max_length=50)
    loop: bool = False
    interrupt_call_media_operation: bool = Field(False, description="barge in (play to everyone only)")

    @field_validator("sources", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return _at_most_max_sources(value)

    @model_validator(mode="after")
    def _barge_in(self) -> Self:
        if self.interrupt_call_media_operation and self.targets:
            raise PydanticCustomError("barge_in_plays_to_all", "interrupt_call_media_operation plays to everyone: "
                                                               "leave targets out")
        return self

    @model_validator(mode="after")
    def _tts(self) -> Self:
        _check_tts(self)  # as a MediaSource's, for the one-source form (voice_name alone may go with sources)
        return self

    def params(self) -> dict[str, Any]:
        # A body in today's form keeps today's parameters (``source``), so a request retried across an upgrade is
        # still "the same request" for its Idempotency-Key; ``sources`` is the new form.
        out: dict[str, Any] = {"loop": self.loop, "targets": [t.raw_id for t in self.targets or []]}
        if self.sources is None:
            out["source"] = self.model_dump(include={"file_url", "text", "ssml", "voice_name", *TTS_OPTIONS},
                                            exclude_none=True)
        else:
            out["sources"] = [{**s.model_dump(exclude_none=True),
                               **({"voice_name": self.voice_name}
                                  if s.text and self.voice_name and not s.chooses_voice() else {})}
                              for s in self.sources]
        if self.interrupt_call_media_operation:
            out["interrupt_call_media_operation"] = True
        return out

    def command_type(self, route_type: str) -> str:
        return f"{route_type}_barge_in" if self.interrupt_call_media_operation else route_type


def _at_most_max_sources(value: Any) -> Any:
    """Checked before each source is (mode="before"): too many is its own code, whatever the sources hold."""
    if isinstance(value, list) and len(value) > MAX_PLAY_SOURCES:
        raise PydanticCustomError("too_many_play_sources", f"play at most {MAX_PLAY_SOURCES} sources at a time")
    return value


class Choice(Body):
    """One answer a ``choices`` recognize listens for: said (one of ``phrases``) or pressed (``tone``)."""

    label: str = Field(min_length=1, max_length=100, pattern=NOT_BLANK)
    phrases: list[Annotated[str, Field(min_length=1, max_length=100, pattern=NOT_BLANK)]] = Field(
        min_length=1, max_length=20)
    tone: Tone | None = None


_NOT_CHOICES = ["dtmf", "speech", "speech_or_dtmf"]


class RecognizeBody(Participant):
    """Recognize what one participant presses or says, optionally after a prompt (``prompt``, one source, or
    ``prompts``, several played in a row): ``dtmf`` tones, ``speech``, either (``speech_or_dtmf``), or one of
    ``choices``. ``interrupt_call_media_operation`` barges in on what plays now, as a play can (the command is a
    ``recognize_barge_in``)."""

    schema_rules = ({"oneOf": [
        {"required": ["input_type", "choices"],
         "properties": {"input_type": {"const": "choices"}, "choices": {"type": "array"}}},
        {"properties": {"input_type": {"enum": _NOT_CHOICES}, "choices": {"type": "null"}}}]},
        {"anyOf": [{"properties": {"prompt": {"type": "null"}}}, {"properties": {"prompts": {"type": "null"}}}]})

    input_type: Literal["dtmf", "speech", "speech_or_dtmf", "choices"] = "dtmf"
    max_tones: int = Field(1, ge=1, le=100)
    initial_silence_timeout: Annotated[int, *_seconds(0, 300)] | None = None
    inter_tone_timeout: Annotated[int, *_seconds(1, 60)] | None = None
    stop_tones: Tones | None = None
    prompt: MediaSource | None = None
    prompts: list[MediaSource] | None = Field(None, min_length=1, max_length=MAX_PLAY_SOURCES,
                                              description=f"1-{MAX_PLAY_SOURCES} prompt sources, played one after "
                                                          "another (instead of prompt)")
    interrupt_prompt: bool = False
    speech_language: Locale | None = Field(None, examples=["en-US"])
    end_silence_timeout: Annotated[int, *_seconds(1, 60)] | None = Field(
        None, description="speech: seconds of silence that end what was said")
    choices: list[Choice] | None = Field(None, min_length=1, max_length=MAX_CHOICES)
    interrupt_call_media_operation: bool = False

    @field_validator("prompts", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        return _at_most_max_sources(value)

    @model_validator(mode="after")
    def _choices_go_with_their_type(self) -> Self:
        if (self.input_type == "choices") != (self.choices is not None):
            raise PydanticCustomError("invalid_choices", "input_type choices takes choices (and only it does)")
        return self

    @model_validator(mode="after")
    def _one_prompt_form(self) -> Self:
        if self.prompt is not None and self.prompts is not None:
            raise PydanticCustomError("invalid_media_source", "give prompt (one source) or prompts (several), "
                                                              "not both")
        return self

    def params(self) -> dict[str, Any]:
        # Unset new fields stay out, so today's bodies keep today's parameters (see PlayBody.params).
        return {**super().params(), **self.model_dump(
            exclude={"phone_number", "communication_user", *(() if self.interrupt_call_media_operation
                                                             else ("interrupt_call_media_operation",))},
            exclude_none=True)}

    def command_type(self, route_type: str) -> str:
        return f"{route_type}_barge_in" if self.interrupt_call_media_operation else route_type


class TranscriptionStartBody(Body):
    """Start live transcription (the call must have been connected with ``transcription`` options)."""

    locale: Locale | None = Field(None, description="default: the locale given at connect")


class TranscriptionUpdateBody(Body):
    """Change the live transcription's locale."""

    locale: Locale = Field(examples=["fr-FR"])


# What ACS records: each content with the channels and formats it may be recorded in.
RECORDING_KINDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "audio": (("mixed", "unmixed"), ("wav", "mp3")),
    "audioVideo": (("mixed",), ("mp4",)),
}


def _recording_schema(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """``oneOf``: a branch per content, naming its channels and formats (a field is required where its
    default would not fit)."""
    _choice_schema(schema, cls)  # type: ignore[arg-type]  # subclasses may add a choice of their own
    schema.setdefault("allOf", []).append(_affinity_schema())
    branches = []
    for content, (channels, formats) in RECORDING_KINDS.items():
        values = {"content": (content,), "channel": channels, "format": formats}
        required = [f for f, allowed in values.items() if cls.model_fields[f].default not in allowed]
        branches.append({"properties": {f: {"enum": list(allowed)} for f, allowed in values.items()},
                         **({"required": required} if required else {})})
    schema.setdefault("allOf", []).append({"oneOf": branches})


# An Azure Blob container URL: https, a host, one path segment naming the container (3-63 of a-z 0-9 -).
BLOB_CONTAINER_URL = re.compile(r"^https://[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?/[a-z0-9][a-z0-9-]{1,61}[a-z0-9]/?$")
MAX_CHANNEL = 4  # ACS's unmixed audio has channels 0-4 (ChannelAffinity.channel)


def _container_url(value: str) -> str:
    if not BLOB_CONTAINER_URL.match(value):
        raise PydanticCustomError("invalid_recording_storage", "container_url must be an https Azure Blob container "
                                  "URL such as https://account.blob.core.windows.net/recordings")
    return value


def _channel(value: int) -> int:
    if not 0 <= value <= MAX_CHANNEL:
        raise PydanticCustomError("channel_out_of_range", f"channel must be between 0 and {MAX_CHANNEL}")
    return value


ContainerUrl = Annotated[str, AfterValidator(_container_url),
                         WithJsonSchema({"type": "string", "pattern": BLOB_CONTAINER_URL.pattern})]
Channel = Annotated[int, AfterValidator(_channel), WithJsonSchema({"type": "integer", "minimum": 0,
                                                                   "maximum": MAX_CHANNEL})]


class RecordingStorage(Body):
    """Bring your own storage: ACS also writes the files to this Azure Blob container (its managed identity needs
    Storage Blob Data Contributor on the account)."""

    container_url: ContainerUrl = Field(examples=["https://account.blob.core.windows.net/recordings"])


class ChannelAffinity(Participant):
    """Put one participant's audio on one channel of an unmixed recording."""

    channel: Channel

    def params(self) -> dict[str, Any]:
        return {"participant": self.raw_id, "channel": self.channel}


def _affinity_schema() -> dict[str, Any]:
    """``channel_affinity`` (when it names anyone) needs ``channel: unmixed``, said where a schema reader sees it."""
    return {"anyOf": [{"not": {"required": ["channel_affinity"]}},
                      {"properties": {"channel_affinity": {"maxItems": 0}}},  # also null: maxItems is for arrays
                      {"required": ["channel"], "properties": {"channel": {"const": "unmixed"}}}]}


class RecordingBody(Body):
    """Recording options; ACS records audio as wav/mp3 and audio+video as mp4.

    The options ACS added later are omitted from the stored command unless given (a request made before they
    existed keeps its fingerprint, so its replay is still recognised).
    """

    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _recording_schema(schema, cls))
    LATER_OPTIONS: ClassVar[tuple[str, ...]] = ("pause_on_start", "recording_storage", "channel_affinity", "locator")

    content: Literal["audio", "audioVideo"] = "audio"
    channel: Literal["mixed", "unmixed"] = "mixed"
    format: Literal["wav", "mp3", "mp4"] = "wav"
    pause_on_start: bool | None = Field(None, description="start paused (inactive) until resumed, e.g. once "
                                                          "everyone has consented")
    recording_storage: RecordingStorage | None = Field(None, description="bring your own storage")
    channel_affinity: list[ChannelAffinity] | None = Field(None, max_length=MAX_CHANNEL + 1,
                                                           description="unmixed audio: who goes on which channel")
    locator: Literal["server_call", "call_connection"] | None = Field(
        None, description="how ACS is told which call to record: by its serverCallId (default) or by callq's call "
                          "connection")

    @model_validator(mode="after")
    def _compatible(self) -> Self:
        channels, formats = RECORDING_KINDS[self.content]
        if self.channel not in channels or self.format not in formats:
            raise PydanticCustomError("incompatible_recording_options",
                                      "audio records as wav or mp3; audioVideo records mixed, as mp4")
        if self.channel_affinity and self.channel != "unmixed":
            raise PydanticCustomError("incompatible_recording_options",
                                      "channel_affinity places participants on the channels of unmixed audio: "
                                      "give channel: unmixed")
        return self

    def params(self) -> dict[str, Any]:
        params = self.model_dump(include={"content", "channel", "format", "pause_on_start", "locator"},
                                 exclude_none=True)
        if self.recording_storage is not None:
            params["recording_storage"] = self.recording_storage.params()
        if self.channel_affinity:
            params["channel_affinity"] = [a.params() for a in self.channel_affinity]
        return params
