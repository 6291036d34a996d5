"""Request bodies of the webhook routes (``api/webhooks.py``).

Each body's JSON Schema (in ``/openapi.json``) says what its validators check where a schema can: the event types
as an enum, no nulls where null is refused, and replay's choice of ``since`` or ``since_seq`` (with one call or
room) as a ``oneOf``. What a schema cannot say (a URL that resolves to a private address) is the route's to check.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import ConfigDict, Field, WithJsonSchema, field_validator, model_validator

from api.schemas import Body
from workers.webhooks import EVENT_TYPES

MAX_URL = 2048
MAX_EVENTS = 20

EventType = Annotated[str, WithJsonSchema({"type": "string", "enum": [*EVENT_TYPES, "*"],
                                           "description": "an event type, or '*' for all"})]


def _check_events(events: list[str] | None) -> list[str] | None:
    if events is None:
        return None
    unknown = [e for e in events if e != "*" and e not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type {unknown[0]!r}; use {', '.join(EVENT_TYPES)} or '*'")
    if not events:
        raise ValueError("name at least one event type, or '*' for all")
    return sorted(set(events))


def _without_nulls(schema: dict[str, Any]) -> None:
    """Every property's schema without its ``null`` option: these bodies refuse an explicit null (a field is given
    or left out), so the published schema must not offer one."""
    for name, prop in schema["properties"].items():
        options = [o for o in prop.pop("anyOf", [prop]) if o.get("type") != "null"]
        prop.pop("default", None)
        schema["properties"][name] = {**prop, **options[0]} if len(options) == 1 else {**prop, "anyOf": options}


class WebhookBody(Body):
    """A new endpoint: where to POST, and which events."""

    url: str = Field(min_length=1, max_length=MAX_URL, description="http(s) URL that receives the POSTs")
    events: list[EventType] = Field(default_factory=lambda: ["*"], max_length=MAX_EVENTS,
                                    json_schema_extra={"minItems": 1})
    description: str = Field(default="", max_length=500)
    enabled: bool = True

    _events = field_validator("events")(_check_events)


def _patch_schema(schema: dict[str, Any]) -> None:
    _without_nulls(schema)
    schema["minProperties"] = 1


class WebhookPatch(Body):
    """Change any of url, events, description, enabled."""

    model_config = ConfigDict(json_schema_extra=_patch_schema)

    url: str | None = Field(default=None, min_length=1, max_length=MAX_URL)
    events: list[EventType] | None = Field(default=None, max_length=MAX_EVENTS, json_schema_extra={"minItems": 1})
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


def _absent(*names: str) -> dict[str, Any]:
    return {name: False for name in names}


def _replay_schema(schema: dict[str, Any]) -> None:
    _without_nulls(schema)
    schema["oneOf"] = [
        {"required": ["since"], "properties": _absent("since_seq")},
        {"required": ["since_seq"], "properties": _absent("since"), "oneOf": [
            {"required": ["call_connection_id"], "properties": _absent("room_id")},
            {"required": ["room_id"], "properties": _absent("call_connection_id")}]},
    ]


class ReplayBody(Body):
    """Send again what was made since a time, or (for one call or room) since a ``seq``."""

    model_config = ConfigDict(json_schema_extra=_replay_schema)

    since: datetime | None = Field(default=None, description="messages made at or after this time (ISO 8601, with "
                                                             "a time zone)")
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
