"""What the sync and async clients share: the request table, retry policy, error mapping and SSE parsing.

Every endpoint is described once, as an ``Op`` built by a method of ``Methods``; ``Client`` and ``AsyncClient`` only
differ in how they send one (and in the few calls that loop: pages, waits, streams).
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Literal, TypeVar
from urllib.parse import quote

import httpx

JSON = dict[str, Any]
R = TypeVar("R")   # what a one-request method returns: JSON, or an awaitable of it
RL = TypeVar("RL")  # what an all-pages method returns: a list of JSON items, or an awaitable of one

RETRY_STATUSES = frozenset({429, 503})
RETRY_AFTER_CAP_S = 30.0  # a server asking for longer is not worth blocking a caller on; the caller may retry
TERMINAL = frozenset({"succeeded", "failed"})
WAIT_POLL_S = 30.0
STREAM_READ_TIMEOUT_S = 60.0  # the API sends a keep-alive every 15 s: a minute of silence is a dead connection

CommandType = Literal[
    "connect", "add_participant", "remove_participant", "cancel_add_participant", "send_dtmf", "play", "recognize",
    "continuous_dtmf_start", "continuous_dtmf_stop", "cancel_media", "start_recording", "pause_recording",
    "resume_recording", "stop_recording", "hang_up", "transcription_start", "transcription_stop",
    "transcription_update",
]
# Command type → route; ``{}`` is the room id for connect, the call connection id for the rest (the API's
# recording-scoped pause/resume/stop routes take a recording id: use ``command`` with those paths' call forms).
COMMAND_PATHS: Mapping[CommandType, str] = {
    "connect": "/v1/rooms/{}/connect",
    "add_participant": "/v1/calls/{}/participants",
    "remove_participant": "/v1/calls/{}/participants/remove",
    "cancel_add_participant": "/v1/calls/{}/participants/cancel-add",
    "send_dtmf": "/v1/calls/{}/dtmf",
    "play": "/v1/calls/{}/play",
    "recognize": "/v1/calls/{}/recognize",
    "continuous_dtmf_start": "/v1/calls/{}/continuous-dtmf/start",
    "continuous_dtmf_stop": "/v1/calls/{}/continuous-dtmf/stop",
    "cancel_media": "/v1/calls/{}/media/cancel",
    "start_recording": "/v1/calls/{}/recordings",
    "pause_recording": "/v1/calls/{}/recording/pause",
    "resume_recording": "/v1/calls/{}/recording/resume",
    "stop_recording": "/v1/calls/{}/recording/stop",
    "hang_up": "/v1/calls/{}/hang-up",
    "transcription_start": "/v1/calls/{}/transcription/start",
    "transcription_stop": "/v1/calls/{}/transcription/stop",
    "transcription_update": "/v1/calls/{}/transcription/update",
}


class CallqClientError(Exception):
    """Base of the client's errors."""


class CallqAPIError(CallqClientError):
    """Raised when the API answers with an error: its HTTP status and callq's ``{"error": {...}}`` fields."""

    def __init__(self, status: int, code: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details or []


class CallqConnectionError(CallqClientError):
    """Raised when the API could not be reached (or answered nothing) on every attempt."""


@dataclass(frozen=True)
class Op:
    """One request. ``keyed``: it needs an Idempotency-Key (``key`` if given, else one made once per call)."""

    method: str
    path: str
    json: Any = None
    params: Mapping[str, str | float] = field(default_factory=dict)
    keyed: bool = False
    key: str | None = None
    timeout_s: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def _seg(value: str) -> str:
    """A path segment: ids come from users and ACS, so anything that is not URL-safe is escaped."""
    return quote(value, safe="")


def error_from(resp: httpx.Response) -> CallqAPIError:
    """The ``CallqAPIError`` for an error response; a body that is not callq's shape keeps its first bytes."""
    try:
        err = resp.json()["error"]
        return CallqAPIError(resp.status_code, str(err["code"]), str(err.get("message", "")),
                             list(err.get("details") or []))
    except (ValueError, KeyError, TypeError):
        return CallqAPIError(resp.status_code, "http_error", resp.text[:300] or resp.reason_phrase)


def retry_after_s(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds asked by a ``Retry-After`` header (delay-seconds or an HTTP date), or None when absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_delay_s(attempt: int, status: int | None, retry_after: str | None, *, base_s: float, cap_s: float,
                  rng: random.Random) -> float | None:
    """How long to wait before attempt ``attempt + 1``, or None when this outcome is final.

    ``status`` None is a connection error. Retried: connection errors and 503 (nothing was recorded, or the same
    Idempotency-Key makes the repeat a replay), and 429 (the door refused before recording anything). A
    Retry-After is honoured up to ``RETRY_AFTER_CAP_S``; otherwise full-jitter backoff.
    """
    if status is not None and status not in RETRY_STATUSES:
        return None
    asked = retry_after_s(retry_after) if status is not None else None
    if asked is not None:
        return min(asked, RETRY_AFTER_CAP_S) + rng.uniform(0.0, base_s)  # jitter: many clients, one Retry-After
    return rng.uniform(0.0, min(cap_s, base_s * 2**attempt))


@dataclass(frozen=True)
class RetryPolicy:
    """How many times a request is sent at most, and the backoff between tries."""

    max_attempts: int = 4
    base_s: float = 0.25
    cap_s: float = 5.0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self, attempt: int, status: int | None, retry_after: str | None) -> float | None:
        """The wait before another try after try ``attempt`` (0-based), or None when there is none."""
        if attempt + 1 >= self.max_attempts:
            return None
        return retry_delay_s(attempt, status, retry_after, base_s=self.base_s, cap_s=self.cap_s, rng=self.rng)


def file_op(recording_id: str, index: int, byte_range: str | None) -> Op:
    return Op("GET", f"/v1/recordings/{_seg(recording_id)}/files/{index}",
              headers={"Range": byte_range} if byte_range else {})


def wait_op(command_id: str, remaining_s: float, timeout_s: float) -> Op:
    """One long poll of a command: at most ``WAIT_POLL_S`` (the server's cap is 60 s; shorter polls also keep each
    request under the idle limits of proxies in between), its read timeout past the server's answer time."""
    poll_s = round(max(0.0, min(remaining_s, WAIT_POLL_S)), 3)
    return Op("GET", f"/v1/commands/{_seg(command_id)}", params={"wait": poll_s}, timeout_s=poll_s + timeout_s)


def sse_headers(last_id: str | None) -> dict[str, str]:
    """A stream request's headers; ``Last-Event-ID`` resumes after the last event seen."""
    return {"Accept": "text/event-stream", **({"Last-Event-ID": last_id} if last_id else {})}


def is_disconnect(event: Mapping[str, Any]) -> bool:
    """Whether this is the call's last event (the API ends the stream after it)."""
    return str(event.get("type", "")).endswith("CallDisconnected")


def body_of(resp: httpx.Response) -> JSON:
    """The JSON object a success answered (``{}`` for 204 No Content)."""
    if resp.status_code == 204 or not resp.content:
        return {}
    data = resp.json()
    return data if isinstance(data, dict) else {"items": data}


@dataclass
class SseParser:
    """Server-Sent Events, a line at a time: ``feed`` returns an event's JSON data when a blank line ends it."""

    last_id: str | None = None
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> JSON | None:
        if not line:
            data, self._data = "\n".join(self._data), []
            return json.loads(data) if data else None
        if line.startswith(":"):  # a comment: the server's keep-alive
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self.last_id = value
        return None


def is_terminal(command: Mapping[str, Any]) -> bool:
    return command.get("status") in TERMINAL


def _drop_none(**fields: Any) -> JSON:
    return {k: v for k, v in fields.items() if v is not None}


class Methods(ABC, Generic[R, RL]):
    """Every endpoint as a typed method; subclasses send an ``Op`` (``_do``) or follow its pages (``_pages``)."""

    @abstractmethod
    def _do(self, op: Op) -> R: ...

    @abstractmethod
    def _pages(self, path: str) -> RL: ...

    # Commands: each POST answers 202 with the command; wait on its id for the outcome.
    def command(self, type_: CommandType, target: str, body: Mapping[str, Any] | None = None, *,
                idempotency_key: str | None = None) -> R:
        """Send a command of ``type_`` to ``target`` (a room id for connect, else a call connection id)."""
        path = COMMAND_PATHS[type_].format(_seg(target))
        return self._do(Op("POST", path, json=dict(body or {}), keyed=True, key=idempotency_key))

    def connect(self, room_id: str, *, transcription: Mapping[str, Any] | None = None,
                idempotency_key: str | None = None) -> R:
        """``transcription``: ``{"transport_url": "wss://…", "locale": "en-US", "start": False}`` to allow (or
        start) live transcription in the call."""
        return self.command("connect", room_id, _drop_none(transcription=transcription),
                            idempotency_key=idempotency_key)

    def add_participant(self, cc: str, *, phone_number: str | None = None, communication_user: str | None = None,
                        source_caller_id: str | None = None, invitation_timeout: int | None = None,
                        idempotency_key: str | None = None) -> R:
        body = _drop_none(phone_number=phone_number, communication_user=communication_user,
                          source_caller_id=source_caller_id, invitation_timeout=invitation_timeout)
        return self.command("add_participant", cc, body, idempotency_key=idempotency_key)

    def remove_participant(self, cc: str, *, phone_number: str | None = None, communication_user: str | None = None,
                           idempotency_key: str | None = None) -> R:
        body = _drop_none(phone_number=phone_number, communication_user=communication_user)
        return self.command("remove_participant", cc, body, idempotency_key=idempotency_key)

    def send_dtmf(self, cc: str, phone_number: str, tones: str | list[str], *,
                  idempotency_key: str | None = None) -> R:
        return self.command("send_dtmf", cc, {"phone_number": phone_number, "tones": tones},
                            idempotency_key=idempotency_key)

    def play(self, cc: str, *, text: str | None = None, file_url: str | None = None, ssml: str | None = None,
             sources: list[Mapping[str, str]] | None = None, voice_name: str | None = None, loop: bool = False,
             targets: list[Mapping[str, str]] | None = None, interrupt_call_media_operation: bool = False,
             source_locale: str | None = None, voice_kind: str | None = None,
             custom_voice_endpoint_id: str | None = None, idempotency_key: str | None = None) -> R:
        """One of ``text``, ``file_url``, ``ssml`` or ``sources`` (each ``{"file_url"|"text"|"ssml": …}``, with a
        text source's voice options, played in a row). ``text`` is spoken in ``voice_name``, or a voice ACS picks by
        ``source_locale`` and ``voice_kind`` (male/female); a custom voice is ``voice_name`` plus
        ``custom_voice_endpoint_id``. ``targets``: participants as ``{"phone_number": …}`` or
        ``{"communication_user": …}``; None for all. ``interrupt_call_media_operation``: barge in on what plays now
        (to everyone only)."""
        body = _drop_none(text=text, file_url=file_url, ssml=ssml, sources=sources, voice_name=voice_name,
                          source_locale=source_locale, voice_kind=voice_kind,
                          custom_voice_endpoint_id=custom_voice_endpoint_id, loop=loop, targets=targets)
        if interrupt_call_media_operation:
            body["interrupt_call_media_operation"] = True
        return self.command("play", cc, body, idempotency_key=idempotency_key)

    def start_transcription(self, cc: str, *, locale: str | None = None, idempotency_key: str | None = None) -> R:
        return self.command("transcription_start", cc, _drop_none(locale=locale), idempotency_key=idempotency_key)

    def stop_transcription(self, cc: str, *, idempotency_key: str | None = None) -> R:
        return self.command("transcription_stop", cc, idempotency_key=idempotency_key)

    def update_transcription(self, cc: str, locale: str, *, idempotency_key: str | None = None) -> R:
        return self.command("transcription_update", cc, {"locale": locale}, idempotency_key=idempotency_key)

    def start_recording(self, cc: str, *, idempotency_key: str | None = None, **opts: str) -> R:
        """``opts``: ``content`` (audio/audioVideo), ``channel`` (mixed/unmixed), ``format`` (wav/mp3/mp4)."""
        return self.command("start_recording", cc, opts, idempotency_key=idempotency_key)

    def pause_recording(self, cc: str, *, idempotency_key: str | None = None) -> R:
        return self.command("pause_recording", cc, idempotency_key=idempotency_key)

    def resume_recording(self, cc: str, *, idempotency_key: str | None = None) -> R:
        return self.command("resume_recording", cc, idempotency_key=idempotency_key)

    def stop_recording(self, cc: str, *, idempotency_key: str | None = None) -> R:
        return self.command("stop_recording", cc, idempotency_key=idempotency_key)

    def cancel_media(self, cc: str, *, idempotency_key: str | None = None) -> R:
        return self.command("cancel_media", cc, idempotency_key=idempotency_key)

    def hang_up(self, cc: str, *, for_everyone: bool = True, idempotency_key: str | None = None) -> R:
        return self.command("hang_up", cc, {"for_everyone": for_everyone}, idempotency_key=idempotency_key)

    # Reads of commands and calls.
    def get_command(self, command_id: str) -> R:
        return self._do(Op("GET", f"/v1/commands/{_seg(command_id)}"))

    def call_commands(self, cc: str) -> R:
        """``{"items": [...]}``: the call's commands in acceptance order."""
        return self._do(Op("GET", f"/v1/calls/{_seg(cc)}/commands"))

    def call_events(self, cc: str) -> RL:
        """The call's ACS events so far, every page."""
        return self._pages(f"/v1/calls/{_seg(cc)}/events")

    # Rooms, their participants and automations.
    def create_room(self, *, valid_from: str | None = None, valid_until: str | None = None,
                    pstn_dial_out_enabled: bool | None = None, participants: list[Mapping[str, str]] | None = None,
                    idempotency_key: str | None = None) -> R:
        """Create a room at ACS; ``participants``: ``{"communication_user": "8:acs:…", "role": "presenter"}``."""
        body = _drop_none(valid_from=valid_from, valid_until=valid_until,
                          pstn_dial_out_enabled=pstn_dial_out_enabled, participants=participants)
        return self._do(Op("POST", "/v1/rooms", json=body, keyed=True, key=idempotency_key))

    def get_room(self, room_id: str) -> R:
        return self._do(Op("GET", f"/v1/rooms/{_seg(room_id)}"))

    def list_rooms(self) -> RL:
        return self._pages("/v1/rooms")

    def update_room(self, room_id: str, *, valid_from: str | None = None, valid_until: str | None = None,
                    pstn_dial_out_enabled: bool | None = None) -> R:
        body = _drop_none(valid_from=valid_from, valid_until=valid_until, pstn_dial_out_enabled=pstn_dial_out_enabled)
        return self._do(Op("PATCH", f"/v1/rooms/{_seg(room_id)}", json=body))

    def delete_room(self, room_id: str) -> R:
        return self._do(Op("DELETE", f"/v1/rooms/{_seg(room_id)}"))

    def adopt_room(self, room_id: str) -> R:
        """Manage a room created elsewhere (ACS must know it)."""
        return self._do(Op("PUT", f"/v1/rooms/{_seg(room_id)}"))

    def room_participants(self, room_id: str) -> R:
        return self._do(Op("GET", f"/v1/rooms/{_seg(room_id)}/participants"))

    def put_room_participants(self, room_id: str, participants: list[Mapping[str, str]]) -> R:
        return self._do(Op("PUT", f"/v1/rooms/{_seg(room_id)}/participants", json={"participants": participants}))

    def remove_room_participants(self, room_id: str, raw_ids: list[str]) -> R:
        # Not keyed: removing is idempotent at ACS, and callq takes a key only for creates and commands.
        return self._do(Op("POST", f"/v1/rooms/{_seg(room_id)}/participants/remove", json={"participants": raw_ids}))

    def set_automation(self, room_id: str, steps: list[Mapping[str, Any]]) -> R:
        """``steps``: ``[{"type": "connect"}, {"type": "play", "body": {...}}, …]``, run when the call starts."""
        return self._do(Op("PUT", f"/v1/rooms/{_seg(room_id)}/automation", json={"on_call_started": steps}))

    def get_automation(self, room_id: str) -> R:
        return self._do(Op("GET", f"/v1/rooms/{_seg(room_id)}/automation"))

    def delete_automation(self, room_id: str) -> R:
        return self._do(Op("DELETE", f"/v1/rooms/{_seg(room_id)}/automation"))

    def automation_runs(self, room_id: str) -> RL:
        return self._pages(f"/v1/rooms/{_seg(room_id)}/automation/runs")

    def room_events(self, room_id: str) -> RL:
        return self._pages(f"/v1/rooms/{_seg(room_id)}/events")

    # Webhooks: endpoints, their deliveries, retries and replays.
    def create_webhook(self, url: str, *, events: list[str] | None = None, description: str | None = None,
                       enabled: bool | None = None, idempotency_key: str | None = None) -> R:
        """Register an endpoint; the answer's ``secret`` (``whsec_…``) is shown only here and on rotation."""
        body = _drop_none(url=url, events=events, description=description, enabled=enabled)
        return self._do(Op("POST", "/v1/webhooks", json=body, keyed=True, key=idempotency_key))

    def list_webhooks(self) -> R:
        return self._do(Op("GET", "/v1/webhooks"))

    def get_webhook(self, webhook_id: str) -> R:
        return self._do(Op("GET", f"/v1/webhooks/{_seg(webhook_id)}"))

    def update_webhook(self, webhook_id: str, *, url: str | None = None, events: list[str] | None = None,
                       description: str | None = None, enabled: bool | None = None) -> R:
        body = _drop_none(url=url, events=events, description=description, enabled=enabled)
        return self._do(Op("PATCH", f"/v1/webhooks/{_seg(webhook_id)}", json=body))

    def delete_webhook(self, webhook_id: str) -> R:
        return self._do(Op("DELETE", f"/v1/webhooks/{_seg(webhook_id)}"))

    def rotate_webhook_secret(self, webhook_id: str, *, idempotency_key: str | None = None) -> R:
        """A new secret; the old one keeps signing alongside it for the grace period."""
        return self._do(Op("POST", f"/v1/webhooks/{_seg(webhook_id)}/rotate-secret", keyed=True, key=idempotency_key))

    def test_webhook(self, webhook_id: str, *, idempotency_key: str | None = None) -> R:
        return self._do(Op("POST", f"/v1/webhooks/{_seg(webhook_id)}/test", keyed=True, key=idempotency_key))

    def webhook_deliveries(self, webhook_id: str, *, status: str | None = None) -> RL:
        """Every delivery still kept, newest first (``status``: pending, succeeded or failed)."""
        query = f"?status={_seg(status)}" if status else ""
        return self._pages(f"/v1/webhooks/{_seg(webhook_id)}/deliveries{query}")

    def webhook_delivery(self, webhook_id: str, delivery_id: str) -> R:
        return self._do(Op("GET", f"/v1/webhooks/{_seg(webhook_id)}/deliveries/{_seg(delivery_id)}"))

    def retry_webhook_delivery(self, webhook_id: str, delivery_id: str, *, idempotency_key: str | None = None) -> R:
        return self._do(Op("POST", f"/v1/webhooks/{_seg(webhook_id)}/deliveries/{_seg(delivery_id)}/retry",
                           keyed=True, key=idempotency_key))

    def replay_webhook(self, webhook_id: str, *, since: str | None = None, since_seq: int | None = None,
                       call_connection_id: str | None = None, room_id: str | None = None,
                       idempotency_key: str | None = None) -> R:
        """Send again what was made since ``since`` (ISO time), or since ``since_seq`` of one call or room."""
        body = _drop_none(since=since, since_seq=since_seq, call_connection_id=call_connection_id, room_id=room_id)
        return self._do(Op("POST", f"/v1/webhooks/{_seg(webhook_id)}/replay", json=body, keyed=True,
                           key=idempotency_key))

    # Recordings and their files.
    def get_recording(self, recording_id: str) -> R:
        """The recording as ACS has it now, with its files once ACS announced them."""
        return self._do(Op("GET", f"/v1/recordings/{_seg(recording_id)}"))

    def recording_files(self, recording_id: str) -> R:
        return self._do(Op("GET", f"/v1/recordings/{_seg(recording_id)}/files"))

    def recording_file_metadata(self, recording_id: str, index: int) -> R:
        return self._do(Op("GET", f"/v1/recordings/{_seg(recording_id)}/files/{index}/metadata"))

    def delete_recording_files(self, recording_id: str) -> R:
        return self._do(Op("DELETE", f"/v1/recordings/{_seg(recording_id)}/files"))
