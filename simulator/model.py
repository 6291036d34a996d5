"""The simulated world's state: rooms, server calls, call connections, invitations, recordings."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from .failures import FailureRules

BEHAVIOURS = ("answer", "busy", "decline", "no-answer")
MAX_ROOM_SPAN = timedelta(days=180)


@dataclass
class PhoneScript:
    """How a phone number behaves when dialled and when asked for input."""

    behaviour: str = "answer"
    delay_ms: float = 50.0  # ring time before answer / busy / decline
    dtmf: str = ""  # keys pressed when recognized, e.g. "1234#"
    speech: str = ""  # what is said when speech or choices are recognized
    input_delay_ms: float = 20.0  # time before the input above starts

    def to_json(self) -> dict[str, object]:
        """As ``/_sim/phones`` shows it."""
        return dict(self.__dict__)


def utc_now() -> datetime:
    """Now, timezone-aware (UTC)."""
    return datetime.now(UTC)


@dataclass
class Room:
    """An ACS room; its call exists once participants start it (admin API).

    ``participants`` is the room's roster (rawId → role). ``None`` marks a room made by ``POST /_sim/rooms`` without
    a roster: a simulator-only convenience that admits anyone (ACS has no such room; the Rooms API always makes a
    roster, possibly empty, and an empty roster admits nobody).
    """

    room_id: str
    pstn_dial_out_enabled: bool = False
    connect_delay_ms: float = 0.0
    call: ServerCall | None = None
    created_at: datetime = field(default_factory=utc_now)
    valid_from: datetime = field(default_factory=utc_now)
    valid_until: datetime = field(default_factory=lambda: utc_now() + MAX_ROOM_SPAN)
    participants: dict[str, str] | None = None
    seq: int = 0  # creation order, for paging

    def is_open(self, now: datetime) -> bool:
        """True inside ``[valid_from, valid_until)``, when the room can be joined."""
        return self.valid_from <= now < self.valid_until

    def admits(self, raw_id: str) -> bool:
        """True when ``raw_id`` may join the room's call (listed, or the room has no roster)."""
        return self.participants is None or raw_id in self.participants

    def role(self, raw_id: str) -> str:
        """The participant's room role (``Attendee`` when the room has no roster)."""
        return (self.participants or {}).get(raw_id, "Attendee")


@dataclass
class Member:
    """An ACS user in a call as Event Grid's participant events describe them."""

    role: str
    participant_id: str


@dataclass
class ServerCall:
    """The call itself (one serverCallId), which Call Automation connections join."""

    server_call_id: str
    correlation_id: str
    room_id: str | None = None
    participants: dict[str, bool] = field(default_factory=dict)  # rawId -> isMuted, in join order
    connections: dict[str, Connection] = field(default_factory=dict)
    sequence: int = 1
    ended: bool = False
    recording: Recording | None = None
    started_at: float = field(default_factory=time.time)
    started_by: str = ""
    started_by_role: str = "Attendee"
    members: dict[str, Member] = field(default_factory=dict)  # ACS users in the call (Event Grid's view)


@dataclass
class MediaOp:
    """The running play or recognize of a connection."""

    kind: str  # "play" | "recognize"
    operation_context: str | None
    callback_uri: str
    timer: asyncio.TimerHandle | None = None


@dataclass
class Transcription:
    """Live transcription as a connection was set up for it (``transcriptionOptions`` at connect), and its state.

    The transcript itself goes to ``transport_url`` over a WebSocket in ACS; the simulator opens none."""

    transport_url: str
    locale: str
    intermediate_results: bool = False
    start_on_connect: bool = False
    state: str = "inactive"  # inactive | active (ACS's TranscriptionSubscriptionState also has disabled)
    subscription_id: str = ""


@dataclass
class Invitation:
    """An add-participant invitation that rings until answered, refused, timed out or cancelled."""

    invitation_id: str
    target: str
    operation_context: str | None
    callback_uri: str
    state: str = "pending"  # pending | answered | failed | canceled
    timer: asyncio.TimerHandle | None = None


@dataclass
class Connection:
    """One Call Automation call connection (callConnectionId) with its callback URI."""

    call_connection_id: str
    callback_uri: str
    correlation_id: str
    operation_context: str | None
    call: ServerCall | None
    state: str = "connecting"  # connecting | connected | disconnected
    closed: bool = False  # CallDisconnected/ConnectFailed sent: nothing more goes out
    media: MediaOp | None = None
    invitations: dict[str, Invitation] = field(default_factory=dict)
    continuous_dtmf: dict[str, list[asyncio.TimerHandle]] = field(default_factory=dict)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)
    transcription: Transcription | None = None  # None: connected without transcription options
    cognitive_services_endpoint: str | None = None  # callIntelligenceOptions at connect


@dataclass
class Recording:
    """A recording of a server call; ACS only knows ``active`` and ``inactive`` (pause = inactive).

    Its file holds the active spans only: ``active_ms`` is the time recorded so far, ``pauses`` each span it was
    inactive between (when it began, how long in ms), as the file's metadata lists them.

    ``call_connection_id`` is the connection that started it (None for a serverCallId start with none connected);
    ``endpoint_id`` is the recorder's own endpoint in the call, which real ACS names as the ``callConnectionId`` of
    the recording's events: in a real RecordingStateChanged (acs-wire.md §5.3) it is not the CallConnected
    connection's id but the ``PlatformEndpointId`` inside the recording id.
    """

    recording_id: str
    call: ServerCall
    callback_uri: str | None
    call_connection_id: str | None
    endpoint_id: str
    state: str = "inactive"
    stopped: bool = False
    start_date_time: str = ""
    kind: str = "azureCommunicationServices"
    content_type: str = "audioVideo"  # ACS's defaults: audioVideo, mixed, mp4
    channel_type: str = "mixed"
    format_type: str = "mp4"
    started_at: float = field(default_factory=time.time)
    external_storage: str | None = None  # bring-your-own-storage container URL
    channel_affinity: dict[int, str] = field(default_factory=dict)  # channel → raw id (unmixed audio)
    active_ms: int = 0
    active_since: float | None = None
    paused_at: float | None = None
    pauses: list[tuple[float, int]] = field(default_factory=list)

    @property
    def lane(self) -> str:
        """The delivery lane of its events: the starting connection's, so they keep their order with its events
        (a call's end stops the recording before CallDisconnected) though they name ``endpoint_id``."""
        return self.call_connection_id or ""

    def set_state(self, state: str, now: float) -> bool:
        """Become ``state`` at ``now``, keeping count of the time recorded and paused; False if it already was."""
        if state == self.state:
            return False
        if state == "active":
            if self.paused_at is not None:
                self.pauses.append((self.paused_at, _ms(now - self.paused_at)))
            self.active_since, self.paused_at = now, None
        else:
            if self.active_since is not None:
                self.active_ms += _ms(now - self.active_since)
            self.active_since, self.paused_at = None, now
        self.state = state
        return True

    def stop(self, now: float) -> None:
        """Recording ends: an open span is counted, an open pause closed."""
        if self.state == "active":
            self.set_state("inactive", now)
        elif self.paused_at is not None:
            self.pauses.append((self.paused_at, _ms(now - self.paused_at)))
        self.paused_at = None
        self.stopped = True


def _ms(seconds: float) -> int:
    return max(0, round(seconds * 1000))


@dataclass
class RecordingFile:
    """One chunk of a stopped recording's file, served to HMAC-signed requests: a WAV of the recorded time, made on
    demand, or (mp3, mp4) the bytes ffmpeg encoded, or the reason it could not (``error``: served as a 500)."""

    document_id: str
    recording: Recording
    duration_ms: int
    channels: int
    participants: list[str]  # in channel order for unmixed audio
    stopped_at: float
    format: str = "wav"
    index: int = 0
    deleted: bool = False
    content: bytes | None = None
    error: str | None = None


class Ids:
    """Identifier generators in ACS's formats."""

    def __init__(self) -> None:
        self._rng = random.Random()

    def room_id(self) -> str:
        """17 digits, like real room ids."""
        return str(self._rng.randrange(10**16, 10**17))

    def server_call_id(self) -> str:
        """Opaque base64url, like real serverCallIds (which encode a URL)."""
        return _b64(f"https://sim.callq.local/conv/{uuid.uuid4()}?i=1")

    def recording_id(self, endpoint_id: str) -> str:
        """base64url JSON naming the recorder's endpoint, like real recording ids (URL-safe so it can sit in a path)."""
        return _b64(json.dumps({"PlatformEndpointId": endpoint_id, "ResourceSpecificId": str(uuid.uuid4())}))

    def document_id(self) -> str:
        """A recording chunk's storage document, like ACS's ``0-eus-d12-<32 hex>``."""
        return f"0-sim-d1-{uuid.UUID(int=self._rng.getrandbits(128)).hex}"

    @staticmethod
    def uuid() -> str:
        """callConnectionId, correlationId and invitationId are plain UUIDs."""
        return str(uuid.uuid4())


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


@dataclass
class Store:
    """All state; ``POST /_sim/reset`` replaces it with a fresh one."""

    rooms: dict[str, Room] = field(default_factory=dict)
    calls: dict[str, ServerCall] = field(default_factory=dict)
    connections: dict[str, Connection] = field(default_factory=dict)
    recordings: dict[str, Recording] = field(default_factory=dict)
    recording_files: dict[str, RecordingFile] = field(default_factory=dict)  # by documentId
    phones: dict[str, PhoneScript] = field(default_factory=dict)
    failures: FailureRules = field(default_factory=FailureRules)  # /_sim/failures
    ids: Ids = field(default_factory=Ids)
    room_seq: int = 0

    def add_room(self, room: Room) -> Room:
        """Store ``room`` as the newest one."""
        self.room_seq += 1
        room.seq = self.room_seq
        self.rooms[room.room_id] = room
        return room
