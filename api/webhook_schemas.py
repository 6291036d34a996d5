"""Request bodies of the webhook routes (``api/webhooks.py``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from api.schemas import Body
from workers.webhooks import EVENT_TYPES

MAX_URL = 2048

EventType = Annotated[str, Field(description=f"one of {', '.join(EVENT_TYPES)}, or '*' for all")]


def _check_events(events: list[str] | None) -> list[str] | None:
    if events is None:
        return None
    unknown = [e for e in events if e != "*" and e not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; use {', '.join(EVENT_TYPES)} or '*'")
    if not events:
        raise ValueError("name at least one event type, or '*' for all")
    return sorted(set(events))


class WebhookBody(Body):
    """A new endpoint: where to POST, and which events."""

    url: str = Field(min_length=1, max_length=MAX_URL, description="http(s) URL that receives the POSTs")
    events: list[EventType] = Field(default_factory=lambda: ["*"], max_length=20)
    description: str = Field(default="", max_length=500)
    enabled: bool = True

    _events = field_validator("events")(_check_events)


class WebhookPatch(Body):
    """Change any of url, events, description, enabled."""

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL)
    events: list[EventType] | None = Field(default=None, max_length=20)
    description: str | None = Field(default=None, max_length=500)
    enabled: bool | None = None

    _events = field_validator("events")(_check_events)

    @model_validator(mode="after")
    def _something(self) -> WebhookPatch:
        if not self.model_fields_set:
            raise ValueError("give at least one of url, events, description, enabled")
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


class ReplayBody(Body):
    """Send again what was made since a time, or (for one call or room) since a ``seq``."""

    since: datetime | None = Field(default=None, description="messages made at or after this time (ISO 8601)")
    since_seq: int | None = Field(default=None, ge=1, description="with call_connection_id or room_id")
    call_connection_id: str | None = Field(default=None, max_length=200)
    room_id: str | None = Field(default=None, max_length=200)

    @model_validator(mode="after")
    def _one_way(self) -> ReplayBody:
        if (self.since is None) == (self.since_seq is None):
            raise ValueError("give exactly one of since, since_seq")
        if self.since is not None and self.since.tzinfo is None:
            raise ValueError("since needs a time zone (e.g. 2026-12-03T10:00:00Z)")
        if self.since_seq is not None and (self.call_connection_id is None) == (self.room_id is None):
            raise ValueError("since_seq needs exactly one of call_connection_id, room_id")
        return self
