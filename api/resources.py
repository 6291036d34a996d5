"""What the API answers, as pydantic models: the source of ``/openapi.json``'s response schemas.

The routes build these bodies as plain dicts (``api.render``, ``workers.reads``); these models only
describe them, and the contract test (tests/integration/test_openapi_contract.py) checks that they do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workers.command import Status


class ErrorDetail(BaseModel):
    code: str = Field(examples=["invalid_phone_number"], description="stable machine code")
    message: str
    details: list[dict[str, Any]] = Field(description="per-field problems, or ACS's status and codes")


class Error(BaseModel):
    """Every 4xx/5xx answer."""

    error: ErrorDetail


class Command(BaseModel):
    """A command: accepted once per Idempotency-Key, run exactly once, resolved by ACS's answer or event."""

    id: str
    type: str
    status: Status
    call_connection_id: str | None = Field(description="null for a connect until ACS has answered it")
    room_id: str | None
    recording_id: str | None = Field(description="null for a start_recording until ACS has answered it")
    attempts: int = Field(ge=0)
    created_at: str
    updated_at: str
    sent_at: str | None = Field(description="when ACS accepted callq's request for it; null until then")
    resolved_at: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    resolved_by: dict[str, Any] | None
    links: dict[str, str]


class CommandPage(BaseModel):
    items: list[Command]


class Event(BaseModel):
    """An ACS event as ACS sent it (CloudEvents fields), with callq's ``seq`` for paging."""

    model_config = ConfigDict(extra="allow")

    seq: str


class EventPage(BaseModel):
    items: list[Event]
    next: str | None = Field(None, description="the next page's URL, when this page is full")


class Transcription(BaseModel):
    state: str | None = Field(description="active, inactive or disabled (ACS's transcription subscription)")
    locale: str | None


class Call(BaseModel):
    call_connection_id: str | None
    server_call_id: str | None
    state: str | None
    correlation_id: str | None
    targets: list[str]
    transcription: Transcription | None = Field(None, description="null: connected without transcription options")


class CallParticipant(BaseModel):
    raw_id: str | None
    is_muted: bool | None
    is_on_hold: bool | None


class ParticipantPage(BaseModel):
    items: list[CallParticipant]


class RecordingFile(BaseModel):
    """One file (chunk) of a recording, as ACS announced it."""

    index: int = Field(ge=0)
    content_type: str | None = Field(description="audio/wav, audio/mpeg or video/mp4, from the format ACS named")
    duration_s: float | None = Field(description="when the recording is one file; else in each file's metadata")
    start_time: str | None = Field(description="the recording's start, on its first file")
    end_reason: str | None = Field(description="ACS's endReason, e.g. SessionEnded, ChunkMaximumSizeExceeded")
    deleted_at: str | None = Field(description="when callq deleted it at ACS; null while ACS keeps it")
    links: dict[str, str] = Field(description="content (GET, Range supported), metadata")


class RecordingFilePage(BaseModel):
    items: list[RecordingFile]


class Recording(BaseModel):
    recording_id: str | None
    state: str | None = Field(description="active or inactive as ACS reports it; ended once ACS no longer has it")
    kind: str | None
    call_connection_id: str | None
    files_at: str | None = Field(description="when ACS announced the files (RecordingFileStatusUpdated); null before")
    duration_s: float | None = Field(description="ACS's recordingDurationMs, in seconds")
    session_end_reason: str | None
    storage_type: str | None = Field(description="with bring-your-own storage, where ACS also wrote the files")
    files: list[RecordingFile]
    links: dict[str, str]


MODELS: tuple[type[BaseModel], ...] = (Error, Command, CommandPage, EventPage, Call, CallParticipant, ParticipantPage,
                                       Recording)
