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


class Call(BaseModel):
    call_connection_id: str | None
    server_call_id: str | None
    state: str | None
    correlation_id: str | None
    targets: list[str]


class CallParticipant(BaseModel):
    raw_id: str | None
    is_muted: bool | None
    is_on_hold: bool | None


class ParticipantPage(BaseModel):
    items: list[CallParticipant]


class Recording(BaseModel):
    recording_id: str | None
    state: str | None
    kind: str | None


MODELS: tuple[type[BaseModel], ...] = (Error, Command, CommandPage, EventPage, Call, CallParticipant, ParticipantPage,
                                       Recording)
