"""Rooms API semantics as azure-communication-rooms 1.2.0 meets them (rooms-and-eventgrid.md §1): validation with
ACS's exact error codes and messages, RoomModel JSON, merge-patch updates, paging. ``rooms_api`` serves it.

Choices where the reference found nothing (worst case for a client, unless the SDK itself says otherwise):

- ``null`` in a room PATCH leaves the field unchanged: the SDK sends every unset field as ``null`` and documents
  that only the arguments passed in are replaced, so "null resets" would break the SDK's own ``update_room``.
- A participant value ``null`` in a *create* body adds nobody (merge-patch meaning only applies to PATCH).
- ``validUntil`` defaults to ``validFrom`` + 180 days (equal to now + 180 days when ``validFrom`` is defaulted too,
  as the recordings show).
- Rooms are listed newest first (as the recordings show), pages of ``rooms_page_size`` (a ``/_sim/faults`` knob,
  default 50) for rooms and for participants.
- A 17-character room id that is not all digits is 400 ``BadRequest`` "Invalid room ID format."; deleting an
  unknown or deleted room is 404 ``NotFound`` like GET and PATCH.
- A room made by the admin API without a roster gets one when participants are first added here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from datetime import UTC, datetime
from typing import Any

from .model import MAX_ROOM_SPAN, Room, Store

API_VERSIONS = ("2023-06-14", "2024-04-15", "2025-03-13")
ROLES = ("Presenter", "Attendee", "Consumer", "Collaborator")
ROOM_ID_LENGTH = 17
MALFORMED = "The request could not be understood by the server due to malformed syntax."
_USER_ID = re.compile(r"8:(acs|spool|dod-acs|gcch-acs):[^\s:]\S*")


class RoomsError(Exception):
    """Raised to answer with the Rooms API's error body (and ``x-ms-error-code``); nothing has changed."""

    def __init__(self, status: int, code: str, message: str, *, target: str | None = None,
                 details: list[dict[str, str]] | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(f"{status}/{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        """``{"error": {"code", "message", "target"?, "details"?}}``: absent parts are left out, as ACS does."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def bad_request(message: str) -> RoomsError:
    """400 ``BadRequest`` with ``message``."""
    return RoomsError(400, "BadRequest", message)


def bad_argument(target: str, message: str) -> RoomsError:
    """400 ``BadRequest`` whose one detail names the bad field (how ACS reports the time-range errors)."""
    return RoomsError(400, "BadRequest", MALFORMED,
                      details=[{"code": "BadArgument", "message": message, "target": target}])


def not_found() -> RoomsError:
    """404 for an unknown or deleted room."""
    return RoomsError(404, "NotFound", "The server cannot find the requested resource.")


def iso7(moment: datetime) -> str:
    """ACS's timestamp: UTC, 7 fractional digits, ``+00:00`` (``2026-11-25T10:00:00.1234560+00:00``)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}0+00:00"


def room_json(room: Room) -> dict[str, Any]:
    """RoomModel: all five fields, always (the SDK raises KeyError on a missing one)."""
    return {
        "id": room.room_id,
        "createdAt": iso7(room.created_at),
        "validFrom": iso7(room.valid_from),
        "validUntil": iso7(room.valid_until),
        "pstnDialOutEnabled": room.pstn_dial_out_enabled,
    }


def find(store: Store, room_id: str) -> Room:
    """The room ``room_id``: 400 for a malformed id, 404 when unknown or deleted."""
    if len(room_id) != ROOM_ID_LENGTH:
        raise bad_request("Invalid room ID length.")
    if not room_id.isdigit():
        raise bad_request("Invalid room ID format.")
    room = store.rooms.get(room_id)
    if room is None:
        raise not_found()
    return room


def create(store: Store, body: dict[str, Any], now: datetime) -> Room:
    """``POST /rooms``: a new room with defaults filled in, or RoomsError."""
    valid_from = _time(body.get("validFrom"), "ValidFrom") or now
    valid_until = _time(body.get("validUntil"), "ValidUntil") or valid_from + MAX_ROOM_SPAN
    dial_out = _flag(body.get("pstnDialOutEnabled"))
    roster = {raw: role for raw, role in participants(body.get("participants")).items() if role is not None}
    check_window(valid_from, valid_until, now)
    room_id = store.ids.room_id()
    while room_id in store.rooms:
        room_id = store.ids.room_id()
    room = Room(room_id, bool(dial_out), created_at=now, valid_from=valid_from, valid_until=valid_until,
                participants=roster)
    return store.add_room(room)


def update(room: Room, body: dict[str, Any], now: datetime) -> Room:
    """``PATCH /rooms/{id}`` (merge-patch; ``null`` leaves a field as it is)."""
    valid_from = _time(body.get("validFrom"), "ValidFrom")
    valid_until = _time(body.get("validUntil"), "ValidUntil")
    dial_out = _flag(body.get("pstnDialOutEnabled"))
    if valid_from is not None or valid_until is not None:
        valid_from, valid_until = valid_from or room.valid_from, valid_until or room.valid_until
        check_window(valid_from, valid_until, now)
        room.valid_from, room.valid_until = valid_from, valid_until
    if dial_out is not None:
        room.pstn_dial_out_enabled = dial_out
    return room


def update_participants(room: Room, body: dict[str, Any]) -> None:
    """``PATCH /rooms/{id}/participants``: add, change roles, and remove (``null``) in one go; unknown removals
    are no-ops."""
    if not isinstance(body.get("participants"), dict):
        raise bad_argument("participants", "The participants field is required.")
    changes = participants(body["participants"])
    roster = room.participants if room.participants is not None else {}
    for raw_id, role in changes.items():
        if role is None:
            roster.pop(raw_id, None)
        else:
            roster[raw_id] = role
    if room.participants is not None or roster:
        room.participants = roster


def participants(value: Any) -> dict[str, str | None]:
    """The ``participants`` map, rawId → role (``None`` = remove); role ``null``/absent means Attendee."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_argument("participants", "The participants field must be an object keyed by raw id.")
    parsed: dict[str, str | None] = {}
    for raw_id, spec in value.items():  # roles first: ACS fails the body's deserialisation before its ids
        if spec is None:
            parsed[raw_id] = None
            continue
        role = spec.get("role") if isinstance(spec, dict) else "?"
        canonical = "Attendee" if role is None else _role(role)
        if canonical is None:
            target = f"$.participants.{raw_id}.role"
            raise RoomsError(400, "BadRequest", MALFORMED, details=[{
                "code": "BadArgument", "target": target,
                "message": f"The JSON value could not be converted to RoleDto. Path: {target}.",
            }])
        parsed[raw_id] = canonical
    if not all(_USER_ID.fullmatch(raw_id) for raw_id in parsed):
        raise bad_request("Invalid format for communication identifier.")
    return parsed


def _role(value: Any) -> str | None:
    return next((r for r in ROLES if isinstance(value, str) and r.lower() == value.lower()), None)


def check_window(valid_from: datetime, valid_until: datetime, now: datetime) -> None:
    """ACS's three time-range errors, in the order it checks them."""
    if valid_from > now + MAX_ROOM_SPAN:
        raise bad_argument("ValidFrom", "Value is incorrect or more than 180 days in the future.")
    if valid_until < now:
        raise bad_argument("ValidUntil", "The time range end is in the past.")
    if valid_until <= valid_from or valid_until - valid_from > MAX_ROOM_SPAN:
        raise bad_argument("ValidUntil", "The time range is incorrect, or larger than 180 days.")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 date and time (a string with a ``T``), or None when ``value`` is not one."""
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) and "T" in value else None
    except ValueError:
        return None


def _time(value: Any, target: str) -> datetime | None:
    if value is None:
        return None
    parsed = parse_time(value)
    if parsed is None:
        raise bad_argument(target, "The value is not a valid RFC 3339 date and time.")
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)  # naive: UTC, as the SDK means it


def _flag(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise bad_argument("PstnDialOutEnabled", "The value must be true or false.")
    return value


# -- paging ----------------------------------------------------------------------------------------------------

def page(items: list[dict[str, Any]], *, offset: int, size: int, next_base: str, version: str) -> dict[str, Any]:
    """One page; ``nextLink`` is absolute, like ACS's: ``{next_base}?nextLink=<token>&api-version=<version>``."""
    body: dict[str, Any] = {"value": items[offset : offset + size]}
    if offset + size < len(items):
        token = _token(items[offset + size - 1], offset + size)
        body["nextLink"] = f"{next_base}?nextLink={token}&api-version={version}"
    return body


def _token(last: dict[str, Any], offset: int) -> str:
    # Opaque to clients; names the last item served so a room deleted between pages does not shift the next one.
    raw = json.dumps({"offset": offset, "after": last.get("id") or last.get("rawId")}).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def offset_of(token: str | None, items: list[dict[str, Any]]) -> int:
    """Where the page after ``token`` starts in ``items`` (0 without a token); 400 for a token not issued here."""
    if not token:
        return 0
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, after = int(data["offset"]), data["after"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise bad_request("Invalid continuation token.") from None
    keys = [item.get("id") or item.get("rawId") for item in items]
    return keys.index(after) + 1 if after in keys else min(offset, len(items))
