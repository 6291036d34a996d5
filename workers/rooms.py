"""Rooms through callq: the real ``azure-communication-rooms`` SDK, exactly once on create, and callq's record.

ACS is the truth about a room (its window, its dial-out flag, its participants); callq keeps a record of the
rooms each client manages through it (``callq:room:{id}``: owner, the room as ACS last answered, later its
automation and current call) so that rooms are isolated per client and listed without asking ACS.

Exactly once on create. The SDK's ``create_room`` mints a fresh ``Repeatability-Request-ID`` on every call and
overwrites any passed in, so a retried request would make a second room. callq sends the create through the
SDK's generated client instead, with an id derived from the client and its Idempotency-Key and the
``Repeatability-First-Sent`` of the key's first attempt (kept in the key's record): a retry after a dropped
answer is a replay at ACS, not a new room. How long ACS honours the id for rooms is not documented; its rule for
other repeatable requests is five minutes (``REPEAT_WINDOW_S``). Past it, a retry of a create whose outcome callq
never learnt (the answer was lost) is refused as ``room_create_in_doubt`` rather than risk a second room; a create
ACS answered with an error leaves nothing behind, and its key may be retried at any time.

Updates send every field. ``update_room`` sends the fields it is not given as explicit ``null``, which under
JSON merge-patch means "reset", and what ACS does with them is not documented: callq reads the room, merges the
change and sends all three.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

from azure.communication.rooms import RoomsClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from workers import keys, scripts
from workers.acs import EndpointTransport, to_acs_error
from workers.errors import ConfigError, RoomNotFound
from workers.settings import Settings

log = logging.getLogger("callq.rooms")
# A plain string: with the SDK's enum default, pages after the first are sent as "ApiVersion.V2025_03_13".
API_VERSION = "2025-03-13"
REPEAT_WINDOW_S = 300
MAX_SPAN = timedelta(days=180)  # ACS: a room's window, and how far ahead it may open
# callq's role names (lower case, like its other enums) → ACS's.
ROLES = {"presenter": "Presenter", "attendee": "Attendee", "consumer": "Consumer", "collaborator": "Collaborator"}
ACS_ROLES = {v: k for k, v in ROLES.items()}
_NAMESPACE = uuid.UUID("5d0e7c1b-2f3a-4b6c-8d9e-0a1b2c3d4e5f")
_FRACTION = re.compile(r"(\.\d{6})\d+")
T = TypeVar("T")


def create_rooms_client(settings: Settings) -> RoomsClient:
    """One SDK client per process, built from endpoint + key so a plain-HTTP simulator URL works."""
    if not settings.acs_access_key:
        raise ConfigError("CALLQ_ACS_ACCESS_KEY (or CALLQ_ACS_CONNECTION_STRING) must be set to reach ACS")
    endpoint = settings.acs_endpoint.rstrip("/")
    return RoomsClient(
        endpoint, AzureKeyCredential(settings.acs_access_key), api_version=API_VERSION,
        transport=EndpointTransport(endpoint, connection_timeout=settings.acs_timeout_s,
                                    read_timeout=settings.acs_timeout_s),
        # Every Rooms request callq sends is safe to repeat: reads, full-body updates, deletes, merge-patches of
        # participants, and creates (a stable repeatability id). So azure-core may retry 5xx and dropped answers.
        retry_total=2, connection_timeout=settings.acs_timeout_s, read_timeout=settings.acs_timeout_s)


def create_repeatability_id(client: str, idempotency_key: str) -> str:
    """The ``Repeatability-Request-ID`` of a room create: the same for every retry under one Idempotency-Key."""
    return str(uuid.uuid5(_NAMESPACE, f"{client}\n{idempotency_key}"))


class RoomsAcs:
    """The Rooms operations callq uses, on the SDK's generated client: plain dicts in and out, errors as ours.

    Blocking (the SDK's requests transport): the API runs these in its thread pool.
    """

    def __init__(self, client: RoomsClient) -> None:
        self._client = client
        self._service: Any = client._rooms_service_client  # see the module docstring: the create's repeatability

    def close(self) -> None:
        self._client.close()

    def create(self, *, valid_from: str | None, valid_until: str | None, pstn_dial_out_enabled: bool,
               participants: Mapping[str, str], repeatability_id: str, first_sent: str) -> dict[str, Any]:
        """Create a room (``participants``: raw id → ACS role); the same ``repeatability_id`` replays at ACS."""
        body: dict[str, Any] = {"validFrom": valid_from, "validUntil": valid_until,
                                "pstnDialOutEnabled": pstn_dial_out_enabled}
        if participants:
            body["participants"] = {raw: {"role": role} for raw, role in participants.items()}
        headers = {"Repeatability-Request-ID": repeatability_id, "Repeatability-First-Sent": first_sent}
        return _acs(lambda: dict(self._service.rooms.create(create_room_request=body, headers=headers)), "")

    def get(self, room_id: str) -> dict[str, Any]:
        return _acs(lambda: dict(self._service.rooms.get(room_id=room_id)), room_id)

    def update(self, room_id: str, *, valid_from: str, valid_until: str, pstn_dial_out_enabled: bool) -> dict[str, Any]:
        body = {"validFrom": valid_from, "validUntil": valid_until, "pstnDialOutEnabled": pstn_dial_out_enabled}
        return _acs(lambda: dict(self._service.rooms.update(room_id=room_id, update_room_request=body)), room_id)

    def delete(self, room_id: str) -> None:
        _acs(lambda: self._service.rooms.delete(room_id=room_id), room_id)

    def participants(self, room_id: str) -> list[dict[str, str]]:
        """Every participant, following ACS's pages: ``[{"raw_id", "role"}]`` (callq's role names)."""
        def fetch() -> list[dict[str, str]]:
            return [{"raw_id": p["rawId"], "role": ACS_ROLES.get(p.get("role") or "Attendee", str(p.get("role")))}
                    for p in self._service.participants.list(room_id=room_id)]
        return _acs(fetch, room_id)

    def change_participants(self, room_id: str, changes: Mapping[str, str | None]) -> None:
        """One merge-patch: raw id → ACS role to add or change, or None to remove."""
        body = {"participants": {raw: None if role is None else {"role": role} for raw, role in changes.items()}}
        _acs(lambda: self._service.participants.update(room_id=room_id, update_participants_request=body), room_id)


def _acs(fn: Callable[[], T], room_id: str) -> T:
    try:
        return fn()
    except ResourceNotFoundError:
        raise RoomNotFound(f"ACS has no room {room_id!r}.") from None
    except HttpResponseError as exc:
        raise to_acs_error(exc) from None
    except Exception as exc:  # connection errors and the like: ServiceRequestError, ServiceResponseError
        raise to_acs_error(exc) from None


# --- callq's record of a room -----------------------------------------------------------------------------------

def iso(value: str | None) -> str:
    """ACS's timestamps (up to 7 fractional digits, ``+00:00``) as callq writes times: UTC with ``Z``."""
    if not value:
        return ""
    parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def acs_fields(room: Mapping[str, Any]) -> dict[str, str]:
    """The hash fields of what ACS answered about a room."""
    return {
        "valid_from": iso(room.get("validFrom")),
        "valid_until": iso(room.get("validUntil")),
        "pstn_dial_out_enabled": "1" if room.get("pstnDialOutEnabled") else "0",
        "acs_created_at": iso(room.get("createdAt")),
    }


@dataclass(frozen=True)
class Saved:
    """What saving a room found: a new record (or a refresh), the replay of a key's first request, or a room
    another client manages."""

    outcome: Literal["new", "replay", "taken"]
    room_id: str
    fingerprint: str
    response_json: str


def _saved(reply: Any) -> Saved:
    outcome, room_id, fingerprint, response = reply
    if outcome not in ("new", "replay", "taken"):
        raise ValueError(f"unexpected room_save outcome {outcome!r}")
    return Saved(outcome, room_id or "", fingerprint or "", response or "")


def save(*, client: str, room_id: str, fields: Mapping[str, str], idempotency_key: str = "", fingerprint: str = "",
         response_json: str = "", idempotency_ttl_s: int = 0) -> scripts.ScriptCall[Saved]:
    """Write (or refresh) the client's record of a room; with an Idempotency-Key, record it too."""
    return scripts.call(
        "room_save",
        [keys.idempotency_key(client, idempotency_key) if idempotency_key else "", keys.room_key(room_id),
         keys.client_rooms_key(client)],
        [client, room_id, fingerprint, response_json, idempotency_ttl_s,
         *(item for pair in fields.items() for item in pair)],
        _saved)


def render(record: Mapping[str, str]) -> dict[str, Any]:
    """A room as the API answers it."""
    room_id = record["id"]
    base = f"/v1/rooms/{room_id}"
    automation = record.get("automation")
    call: dict[str, Any] | None = None
    if record.get("server_call_id"):
        call = {"server_call_id": record["server_call_id"], "state": record.get("call_state") or "active",
                "started_at": record.get("call_started_at") or None, "ended_at": record.get("call_ended_at") or None,
                "call_connection_id": record.get("call_connection_id") or None}
    return {
        "id": room_id,
        "valid_from": record.get("valid_from") or None,
        "valid_until": record.get("valid_until") or None,
        "pstn_dial_out_enabled": record.get("pstn_dial_out_enabled") == "1",
        "created_at": record.get("acs_created_at") or None,
        "origin": record.get("origin") or "created",
        "managed_since": record.get("managed_since") or None,
        "automation": json.loads(automation) if automation else None,
        "call": call,
        "links": {"self": base, "participants": f"{base}/participants", "events": f"{base}/events",
                  "automation": f"{base}/automation", "runs": f"{base}/automation/runs",
                  "connect": f"{base}/connect"},
    }
