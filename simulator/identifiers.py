"""Communication identifiers: requests carry no ``kind``; responses and events add it (acs-wire.md §3.1)."""

from __future__ import annotations

from typing import Any

from .errors import invalid_request

Identifier = dict[str, Any]  # wire shape with kind, e.g. {"rawId", "kind", "phoneNumber": {"value"}}


def from_raw_id(raw_id: str) -> Identifier:
    """The response/event form of a raw id (``4:+1604…`` phone, ``8:acs:…`` user, else unknown)."""
    if raw_id.startswith("4:"):
        return {"rawId": raw_id, "kind": "phoneNumber", "phoneNumber": {"value": raw_id[2:]}}
    if raw_id.startswith(("8:acs:", "8:spool:", "8:dod-acs:", "8:gcch-acs:")):
        return {"rawId": raw_id, "kind": "communicationUser", "communicationUser": {"id": raw_id}}
    return {"rawId": raw_id, "kind": "unknown"}


def raw_id_of(value: object, field: str) -> str:
    """The raw id of a request identifier; raises 400/8523 naming ``field`` when it is not one."""
    if not isinstance(value, dict):
        raise invalid_request(f"{field} must be a communication identifier object")
    raw = value.get("rawId")
    if not raw:
        # The SDK always sends rawId, but other clients may send only the nested object.
        phone = value.get("phoneNumber")
        user = value.get("communicationUser")
        if isinstance(phone, dict) and phone.get("value"):
            raw = f"4:{phone['value']}"
        elif isinstance(user, dict) and user.get("id"):
            raw = user["id"]
    if not isinstance(raw, str) or not raw:
        raise invalid_request(f"{field} has no rawId")
    return raw


def is_phone(raw_id: str) -> bool:
    """True for PSTN identifiers."""
    return raw_id.startswith("4:")


def phone_number(raw_id: str) -> str:
    """E.164 number of a phone raw id."""
    return raw_id[2:]


def participant_json(raw_id: str, *, is_muted: bool = False) -> dict[str, Any]:
    """A CallParticipant as responses and ParticipantsUpdated carry it."""
    return {"identifier": from_raw_id(raw_id), "isMuted": is_muted, "isOnHold": False}
