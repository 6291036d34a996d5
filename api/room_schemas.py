"""Room request bodies (``/v1/rooms``): pydantic models whose validators raise stable codes.

Checks that need the clock (a window in the past, longer than ACS's 180 days, opening too far ahead) live in
``check_window``, run by the routes after the body parsed; they raise the same kind of error.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, Field, StrictBool, WithJsonSchema
from pydantic_core import PydanticCustomError

from api.schemas import AcsUser, Body
from workers.errors import InvalidCommand
from workers.rooms import MAX_SPAN, ROLES

MAX_PARTICIPANTS = 1000  # per request; ACS documents no limit per room (a call holds at most 350)
CODES = frozenset({"unknown_role", "invalid_communication_user", "duplicate_participant", "window_inverted",
                   "window_in_past", "window_too_long", "valid_from_too_far"})


def _role(value: str) -> str:
    role = value.lower()
    if role not in ROLES:
        raise PydanticCustomError("unknown_role", f"role must be one of {', '.join(ROLES)}")
    return role


Role = Annotated[str, AfterValidator(_role), WithJsonSchema({"type": "string", "enum": list(ROLES)})]


class RoomParticipant(Body):
    """An ACS user invited to the room, with a role (``attendee`` by default, as ACS)."""

    communication_user: AcsUser = Field(examples=["8:acs:resource_teacher"])
    role: Role = Field("attendee", examples=["presenter"])


def _unique(participants: list[RoomParticipant]) -> list[RoomParticipant]:
    seen: set[str] = set()
    for p in participants:
        if p.communication_user in seen:
            raise PydanticCustomError("duplicate_participant", f"{p.communication_user} is listed twice")
        seen.add(p.communication_user)
    return participants


Participants = Annotated[list[RoomParticipant], Field(max_length=MAX_PARTICIPANTS), AfterValidator(_unique)]


class RoomBody(Body):
    """A new room. Unset times default as at ACS: open from now, until 180 days later."""

    valid_from: AwareDatetime | None = Field(None, examples=["2026-12-07T09:00:00Z"])
    valid_until: AwareDatetime | None = Field(None, examples=["2026-12-07T11:00:00Z"])
    pstn_dial_out_enabled: StrictBool = False
    participants: Participants = Field(default_factory=list)

    def acs_participants(self) -> dict[str, str]:
        return {p.communication_user: ROLES[p.role] for p in self.participants}


class RoomPatch(Body):
    """A change to a room: only the fields given change."""

    valid_from: AwareDatetime | None = None
    valid_until: AwareDatetime | None = None
    pstn_dial_out_enabled: StrictBool | None = None


class ParticipantsBody(Body):
    """Participants to add, or whose role changes."""

    participants: Annotated[Participants, Field(min_length=1)]


class RemoveBody(Body):
    """Participants to remove (removing one the room does not list is not an error, as at ACS)."""

    participants: Annotated[list[AcsUser], Field(min_length=1, max_length=MAX_PARTICIPANTS)]


def check_window(valid_from: datetime, valid_until: datetime, now: datetime, *, new: bool) -> None:
    """ACS's rules for a room's window, as callq's errors; ``new``: a create, whose window may not start late."""
    if valid_until <= valid_from:
        raise InvalidCommand("valid_until must be after valid_from.", code="window_inverted")
    if valid_until <= now:
        raise InvalidCommand("valid_until is in the past: the room could never be joined.", code="window_in_past")
    if valid_until - valid_from > MAX_SPAN:
        raise InvalidCommand("A room's window may last at most 180 days.", code="window_too_long")
    if new and valid_from - now > MAX_SPAN:
        raise InvalidCommand("valid_from may be at most 180 days ahead.", code="valid_from_too_far")


def window(body: RoomBody, now: datetime) -> tuple[datetime, datetime]:
    """The window a create asks for, with ACS's defaults filled in (to check it before asking ACS)."""
    start = body.valid_from or now
    return start, body.valid_until or start + MAX_SPAN


def iso_z(value: datetime | None) -> str | None:
    """A datetime as ACS is sent it: UTC, ``Z``, milliseconds (as callq shows every time)."""
    return None if value is None else value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
