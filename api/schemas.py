"""Request bodies, validated by pydantic (which also describes them in the OpenAPI schema).

Validators raise ``PydanticCustomError`` with a stable type (``invalid_phone_number``, ``invalid_tone``,
``too_many_tones``, ``timeout_out_of_range`` …) that becomes the error's machine code. Each body knows
the command parameters it stands for (``params()``): participants are stored as ACS raw ids.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from workers.identifiers import ACS_USER, E164, raw_id
from workers.operations import TONES

MAX_TONES = 18
# The machine codes our validators raise (each becomes the error code when it is the only problem).
CODES = frozenset({
    "invalid_phone_number", "invalid_communication_user", "invalid_participant", "pstn_target_required",
    "source_caller_id_required", "timeout_out_of_range", "invalid_tone", "too_many_tones", "invalid_media_url",
    "invalid_media_source", "incompatible_recording_options",
})


def _e164(value: str) -> str:
    if not E164.match(value):
        raise PydanticCustomError("invalid_phone_number", "must be an E.164 phone number such as +14255550123")
    return value


def _seconds(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise PydanticCustomError("timeout_out_of_range", f"must be between {low} and {high} seconds")
        return value
    return AfterValidator(check)


def _tones(value: str | list[str]) -> list[str]:
    tones = list(value) if isinstance(value, str) else value
    bad = [t for t in tones if t not in TONES]
    if bad:
        raise PydanticCustomError("invalid_tone", f"unknown tone {bad[0]!r}: use 0-9, *, #, A-D")
    return tones


Phone = Annotated[str, AfterValidator(_e164)]
Tones = Annotated[list[str], AfterValidator(_tones)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    def params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class Empty(Body):
    """No body is needed."""


class Participant(Body):
    """One participant: a PSTN phone number or an ACS user."""

    phone_number: Phone | None = Field(None, examples=["+14255550123"])
    communication_user: str | None = Field(None, examples=["8:acs:resource_user"])

    @field_validator("communication_user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not ACS_USER.match(value):
            raise PydanticCustomError("invalid_communication_user", "must be an ACS user id such as 8:acs:…")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.phone_number is None) == (self.communication_user is None):
            raise PydanticCustomError("invalid_participant", "give exactly one of phone_number or communication_user")
        return self

    @property
    def raw_id(self) -> str:
        return raw_id(phone_number=self.phone_number, communication_user=self.communication_user)

    def params(self) -> dict[str, Any]:
        return {"participant": self.raw_id}


class PstnParticipant(Participant):
    @model_validator(mode="after")
    def _phone_only(self) -> Self:
        if self.phone_number is None:
            raise PydanticCustomError("pstn_target_required", "this action only targets PSTN (phone) participants")
        return self


class ConnectBody(Empty):
    """``POST /v1/rooms/{room_id}/connect``: nothing is required; callq supplies callback and context."""


class HangUpBody(Body):
    """End the call for everyone (terminate), or only leave it (``false``)."""

    for_everyone: bool = True


class AddParticipantBody(Participant):
    """Dial a phone number (with the ACS number to call from) or invite an ACS user."""

    source_caller_id: Phone | None = Field(None, examples=["+18005550199"])
    invitation_timeout: Annotated[int, _seconds(1, 180)] | None = Field(None, description="seconds, 1-180")

    @model_validator(mode="after")
    def _caller_for_pstn(self) -> Self:
        if self.phone_number is not None and self.source_caller_id is None:
            raise PydanticCustomError("source_caller_id_required", "dialing a phone number needs source_caller_id")
        return self

    def params(self) -> dict[str, Any]:
        return {**super().params(), **self.model_dump(include={"source_caller_id", "invitation_timeout"},
                                                      exclude_none=True)}


class CancelAddBody(Body):
    invitation_id: str = Field(min_length=1, max_length=128)


class DtmfBody(PstnParticipant):
    """Send 1-18 tones (``"123#"`` or ``["1", "2", "3", "#"]``) to a PSTN participant."""

    tones: str | list[str]

    @field_validator("tones")
    @classmethod
    def _check(cls, value: str | list[str]) -> list[str]:
        tones = _tones(value)
        if not 1 <= len(tones) <= MAX_TONES:
            raise PydanticCustomError("too_many_tones", f"send between 1 and {MAX_TONES} tones at a time")
        return tones

    def params(self) -> dict[str, Any]:
        return {**super().params(), "tones": self.tones}


class MediaSource(Body):
    """An audio file URL, or text to speak."""

    file_url: str | None = None
    text: str | None = Field(None, max_length=4000)
    voice_name: str | None = Field(None, max_length=100)

    @field_validator("file_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and (urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).netloc):
            raise PydanticCustomError("invalid_media_url", "file_url must be an http(s) URL")
        return value

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.file_url is None) == (self.text is None):
            raise PydanticCustomError("invalid_media_source", "give exactly one of file_url or text")
        return self


class PlayBody(MediaSource):
    """Play to the listed participants, or to everyone when ``targets`` is omitted."""

    targets: list[Participant] | None = Field(None, max_length=50)
    loop: bool = False

    def params(self) -> dict[str, Any]:
        source = MediaSource.model_validate(self.model_dump(include={"file_url", "text", "voice_name"}))
        return {"source": source.model_dump(exclude_none=True), "loop": self.loop,
                "targets": [t.raw_id for t in self.targets or []]}


class RecognizeBody(Participant):
    """Collect DTMF (or speech) from one participant, optionally after a prompt."""

    input_type: Literal["dtmf", "speech"] = "dtmf"
    max_tones: int = Field(1, ge=1, le=100)
    initial_silence_timeout: Annotated[int, _seconds(0, 300)] | None = None
    inter_tone_timeout: Annotated[int, _seconds(1, 60)] | None = None
    stop_tones: Tones | None = None
    prompt: MediaSource | None = None
    interrupt_prompt: bool = False
    speech_language: str | None = Field(None, max_length=20)

    def params(self) -> dict[str, Any]:
        return {**super().params(), **self.model_dump(exclude={"phone_number", "communication_user"},
                                                      exclude_none=True)}


class RecordingBody(Body):
    """Recording options; ACS records audio as wav/mp3 and audio+video as mp4."""

    content: Literal["audio", "audioVideo"] = "audio"
    channel: Literal["mixed", "unmixed"] = "mixed"
    format: Literal["wav", "mp3", "mp4"] = "wav"

    @model_validator(mode="after")
    def _compatible(self) -> Self:
        if (self.content == "audioVideo") != (self.format == "mp4") or (self.content == "audioVideo" and
                                                                           self.channel == "unmixed"):
            raise PydanticCustomError("incompatible_recording_options",
                                      "audio records as wav or mp3; audioVideo records mixed, as mp4")
        return self
