"""Event Grid's ACS events of room calls, as callq records them (room_event.lua).

Each event is stored in CloudEvents form whatever schema Event Grid delivered it in (Event Grid's own mapping:
``source`` = ``topic``, ``type`` = ``eventType``, ``time`` = ``eventTime``), so a room's timeline and a call's
read the same way as ACS's callbacks do.

What an event does:

* every one joins its room's timeline (``GET /v1/rooms/{id}/events``), managed room or not, and the timeline of
  callq's own connection to that call once callq is connected to it;
* ``CallStarted`` marks the room's call live; for a room a client manages it opens the room call's automation
  run (the room's automation, else the client's default), once per (room, serverCallId);
* ``CallEnded`` marks it over and ends callq's connection to it, as a ``CallDisconnected`` would have: pending
  commands fail ``call_ended``. ACS sends ``CallDisconnected`` itself too, but a callback lost on the way (an
  outage of callq's endpoint, say) would otherwise leave the call "connected" for good.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from workers import keys, scripts
from workers.command import now_iso

PREFIX = "Microsoft.Communication."
ROOM_CALL_TYPES = frozenset({f"{PREFIX}{k}" for k in (
    "CallStarted", "CallEnded", "CallParticipantAdded", "CallParticipantRemoved")})
RECORDING_FILE = f"{PREFIX}RecordingFileStatusUpdated"
DEDUPE_MIN_S = 25 * 3600  # Event Grid retries a delivery for up to 24 h


@dataclass(frozen=True)
class RoomEvent:
    """One event of a room call, in CloudEvents form (``document``), with what callq files it by."""

    id: str
    type: str  # the full type, e.g. Microsoft.Communication.CallStarted
    room_id: str
    server_call_id: str
    correlation_id: str
    time: str  # ISO, as Event Grid stamped it ('' if absent)
    document: dict[str, Any]

    @property
    def short_type(self) -> str:
        return self.type.removeprefix(PREFIX)


@dataclass(frozen=True)
class Recorded:
    """What recording one event did."""

    duplicate: bool
    client: str = ""  # the client managing the room ('' for a room no client manages)
    run: str = ""  # 'created' (CallStarted opened a run), 'woken' (CallEnded reached a running one) or ''
    end_call: str = ""  # callq's call connection this CallEnded ends
    call_connection_id: str = ""  # callq's connection to this room call, if any

    @classmethod
    def parse(cls, reply: Any) -> Recorded:
        if reply[0] == "duplicate":
            return cls(duplicate=True)
        _, client, run, end_call, cc = reply
        return cls(False, client or "", run or "", end_call or "", cc or "")


def record(event: RoomEvent, *, run_id: str, advance_message: str, steps_queue: str, dedup_ttl_s: int, ttl_s: int,
           retention_s: int) -> scripts.ScriptCall[Recorded]:
    """Record one event (room_event.lua); ``advance_message`` is pushed when it opens or wakes a run."""
    room, scid = event.room_id, event.server_call_id
    now_s = time.time()
    return scripts.call(
        "room_event",
        [keys.grid_event_seen_key(event.id), keys.room_events_key(room), keys.room_key(room),
         keys.room_call_key(room), keys.room_live_key(room), keys.room_run_key(room, scid or "-"),
         keys.room_runs_key(room), keys.queue_key(steps_queue), keys.room_ended_key(room),
         keys.server_call_room_key(scid) if scid else ""],
        [max(dedup_ttl_s, DEDUPE_MIN_S), str(int((now_s - retention_s) * 1000)),
         json.dumps(event.document, separators=(",", ":")), event.short_type, scid, now_iso(), run_id,
         advance_message, ttl_s, int(now_s * 1000), event.time, event.correlation_id, room],
        Recorded.parse)


def disconnected(event: RoomEvent, call_connection_id: str) -> dict[str, Any]:
    """The ``CallDisconnected`` callback a ``CallEnded`` stands for, for callq's connection to the ended call.

    Its id is derived from the Event Grid event's, so a redelivery of the CallEnded is a duplicate here too.
    """
    return {
        "id": f"eventgrid-{event.id}",
        "source": f"calling/callConnections/{call_connection_id}",
        "type": f"{PREFIX}CallDisconnected",
        "specversion": "1.0",
        "time": event.time or now_iso(),
        "subject": f"calling/callConnections/{call_connection_id}",
        "data": {"callConnectionId": call_connection_id, "serverCallId": event.server_call_id,
                 "correlationId": event.correlation_id,
                 "resultInformation": {"code": 0, "subCode": 0,
                                       "message": f"The call ended (Event Grid CallEnded {event.id})."}},
    }
