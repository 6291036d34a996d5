"""The recording-schedule request body, validated by pydantic; each rule's failure has a stable code.

Three kinds, chosen by which fields are given: ``start_at`` alone (one-off), ``cron`` + ``timezone``
(recurring on a local wall clock), ``every`` with an optional first ``start_at`` (recurring at a fixed
period, down to one second: for short cycles and tests). Checks that need the clock (a start in the
past, overlapping sessions) are made by the route.
"""

from __future__ import annotations

from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

from api.schemas import CODES as COMMAND_CODES
from api.schemas import RecordingBody
from workers import recurrence

MAX_DURATION_S = 86_400
MAX_EVERY_S = 366 * 86_400  # a longer period is a one-off or a cron; far larger ones overflow the calendar (a 500)
MAX_WINDOWS = 20
CODES = COMMAND_CODES | {"invalid_duration", "invalid_start_at", "invalid_cron", "unknown_timezone",
                         "invalid_schedule", "timezone_required", "invalid_pause_windows"}


def _duration(value: Any) -> int:
    try:
        return recurrence.parse_duration(value)
    except ValueError as exc:
        raise PydanticCustomError("invalid_duration", str(exc)) from None


Seconds = Annotated[int, BeforeValidator(_duration), WithJsonSchema({"anyOf": [
    {"type": "string", "description": "ISO 8601 duration: PnW, PnD, PTnHnMnS", "examples": ["PT45M"]},
    {"type": "integer", "minimum": 0, "description": "seconds"}]})]


class PauseWindow(BaseModel):
    """Pause ``offset`` after the session's start, resume ``duration`` later."""

    model_config = ConfigDict(extra="forbid")

    offset: Seconds = Field(examples=["PT10M"])
    duration: Seconds = Field(examples=["PT5M"])


class ScheduleBody(RecordingBody):
    """``POST /v1/recording-schedules``: where, when, how long, and how to record."""

    room_id: str = Field(min_length=1, max_length=128)
    start_at: str | None = Field(None, examples=["2026-12-01T10:00:00+01:00"],
                                 description="RFC 3339; a one-off's time, or the first of an `every`")
    cron: str | None = Field(None, examples=["0 10 * * 2"], description="minute hour day month weekday")
    timezone: str | None = Field(None, examples=["Europe/Paris"], description="IANA zone the cron is read in")
    every: Seconds | None = Field(None, examples=["PT5S"], description="fixed period (ISO 8601 or seconds)")
    duration: Seconds = Field(examples=["PT45M"], description="ISO 8601 duration or seconds")
    pause_windows: list[PauseWindow] = Field(default_factory=list, max_length=MAX_WINDOWS)

    @field_validator("start_at")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                recurrence.parse_instant(value)
            except ValueError as exc:
                raise PydanticCustomError("invalid_start_at", str(exc)) from None
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                recurrence.zone(value)
            except ValueError as exc:
                raise PydanticCustomError("unknown_timezone", str(exc)) from None
        return value

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                recurrence.parse_cron(value)
            except ValueError as exc:
                raise PydanticCustomError("invalid_cron", f"cron {exc}") from None
            return " ".join(value.split())
        return value

    @model_validator(mode="after")
    def _kind(self) -> Self:
        if (self.cron is not None) + (self.every is not None) > 1 or (self.cron is not None and self.start_at):
            raise PydanticCustomError("invalid_schedule", "give one of: start_at (one-off), cron with timezone, "
                                                          "or every (optionally with a first start_at)")
        if self.cron is None and self.every is None and self.start_at is None:
            raise PydanticCustomError("invalid_schedule", "give start_at (one-off), cron with timezone, or every")
        if self.cron is not None and self.timezone is None:
            raise PydanticCustomError("timezone_required", "a cron schedule needs an IANA timezone, such as "
                                                           "Europe/Paris")
        if self.pause_on_start:
            raise PydanticCustomError("incompatible_recording_options", "a scheduled recording cannot start paused "
                                      "(nobody would resume it): use pause_windows")
        if not 1 <= self.duration <= MAX_DURATION_S:
            raise PydanticCustomError("invalid_duration", f"duration must be between 1 s and {MAX_DURATION_S} s")
        if self.every is not None and self.every < 1:
            raise PydanticCustomError("invalid_duration", "every must be at least 1 second")
        if self.every is not None and self.every > MAX_EVERY_S:
            raise PydanticCustomError("invalid_duration", f"every must be at most {MAX_EVERY_S} s (366 days)")
        self._check_windows()
        return self

    def _check_windows(self) -> None:
        edge = 0
        for window in self.pause_windows:
            if window.offset <= edge or window.duration < 1 or window.offset + window.duration > self.duration:
                raise PydanticCustomError("invalid_pause_windows", "pause windows must lie inside the session, "
                                          "in order, not overlapping, each after the start and at least 1 s long")
            edge = window.offset + window.duration

    @property
    def kind(self) -> recurrence.Kind:
        return "cron" if self.cron else "every" if self.every else "once"

    def plan(self, now: int) -> recurrence.Plan:
        """The timing; an ``every`` without ``start_at`` starts one period from ``now``."""
        start = recurrence.parse_instant(self.start_at) if self.start_at else None
        if self.kind == "every" and start is None:
            assert self.every is not None
            start = now + self.every
        return recurrence.Plan(kind=self.kind, duration_s=self.duration, start=start, every_s=self.every,
                               cron=self.cron, timezone=self.timezone)

    def compared(self) -> dict[str, Any]:
        """The body as a replay is compared: without the recording options not given (a create made before they
        existed keeps its fingerprint)."""
        dumped = self.model_dump(mode="json")
        return {k: v for k, v in dumped.items() if v is not None or k not in self.LATER_OPTIONS}

    def recording(self) -> dict[str, Any]:
        """How each occurrence records: the options of ``POST /v1/calls/{cc}/recordings`` that were given."""
        return RecordingBody.params(self)

    def windows(self) -> list[tuple[int, int]]:
        return [(w.offset, w.duration) for w in self.pause_windows]
