"""The simulation: state plus the two ways it acts later, timers and callback events."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from . import acs_events, encoder, events, recording_files
from .delivery import Dispatcher
from .events import Result
from .failures import Rule
from .faults import Faults
from .identifiers import is_phone, phone_number
from .model import Connection, Member, Recording, RecordingFile, ServerCall, Store

logger = logging.getLogger("simulator.recordings")


class Publisher(Protocol):
    """Where the resource's Event Grid events go (``eventgrid.EventGrid``)."""

    @property
    def active(self) -> bool:
        """True when some subscription would deliver an event published now."""

    def publish(self, event: acs_events.Event) -> None:
        """Hand one event to every validated subscription."""


class Sim:
    """Shared by the ACS endpoints, the admin API and timers; lives in the app's lifespan state."""

    def __init__(self, dispatcher: Dispatcher, faults: Faults, eventgrid: Publisher | None = None, *,
                 public_url: str = "", resource_id: str = "", recording_file_delay_s: float = 5.0,
                 ffmpeg: str = "ffmpeg") -> None:
        self.store = Store()
        self.dispatcher = dispatcher
        self.faults = faults
        self.eventgrid = eventgrid
        self.public_url = public_url
        self.resource_id = resource_id
        self.recording_file_delay_s = recording_file_delay_s
        self.ffmpeg = ffmpeg  # the encoder of mp3 and mp4 recording files (simulator.encoder)
        self._timers: set[asyncio.TimerHandle] = set()
        self._encodings: set[asyncio.Task[None]] = set()
        # While an ACS request executes, the acks of the events it sends are collected here so the
        # "early_delivery" fault can hold the response until they arrived. Handlers are synchronous,
        # so no other request can interleave between begin and end.
        self._acks: list[asyncio.Future[None]] | None = None

    # -- requests and timers ---------------------------------------------------------------------------

    def begin_request(self) -> None:
        """Start collecting the events one ACS request sends."""
        self._acks = [] if self.faults.knobs.early_delivery else None

    def end_request(self) -> list[asyncio.Future[None]]:
        """Stop collecting; returns acks to await for early delivery (empty unless that fault is on)."""
        acks, self._acks = self._acks or [], None
        return acks

    def later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> asyncio.TimerHandle:
        """Run ``fn(*args)`` after ``delay_s`` on the event loop; reset cancels it."""

        def fire() -> None:
            self._timers.discard(handle)
            fn(*args)

        handle = asyncio.get_running_loop().call_later(max(0.0, delay_s), fire)
        self._timers.add(handle)
        return handle

    def cancel(self, handle: asyncio.TimerHandle | None) -> None:
        """Cancel a timer made by ``later`` (no-op for None or a fired one)."""
        if handle is not None:
            handle.cancel()
            self._timers.discard(handle)

    async def reset(self) -> None:
        """Fresh state, no timers, no queued callbacks."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in self._encodings:  # its ffmpeg runs to its end in its thread; the file is dropped
            task.cancel()
        self._encodings.clear()
        self.store = Store()
        await self.dispatcher.reset()

    # -- events ----------------------------------------------------------------------------------------

    def send(self, url: str | None, event: dict[str, Any], *, lane: str | None = None) -> None:
        """Queue ``event`` for ``url`` (dropped when there is no URL to send to), on ``lane`` if given."""
        if not url:
            return
        ack = self.dispatcher.enqueue(url, event, ack=self._acks is not None, lane_id=lane)
        if ack is not None and self._acks is not None:
            self._acks.append(ack)

    def emit(self, conn: Connection, event: dict[str, Any], url: str | None = None) -> None:
        """Send a connection's event to ``url`` or its callback URI, unless it is already disconnected."""
        if not conn.closed:
            self.send(url or conn.callback_uri, event)

    def emit_recording(self, rec: Recording) -> None:
        """RecordingStateChanged for ``rec``'s current state, unless its call has ended."""
        if not rec.call.ended:
            self.send(rec.callback_uri, events.recording_state_changed(rec), lane=rec.lane)

    def scripted_failure(self, operation: str, *, targets: Iterable[str], connections: Iterable[str]) -> Rule | None:
        """The ``/_sim/failures`` rule that fails this request (counted as used), if any; ``targets`` are raw ids."""
        phones = [phone_number(raw) for raw in targets if is_phone(raw)]
        return self.store.failures.take(operation, phones=phones, call_connection_ids=connections)

    # -- Event Grid ------------------------------------------------------------------------------------

    def _publisher(self) -> Publisher | None:
        # Asked before building an event: with no validated subscription (benchmarks) nothing is built.
        return self.eventgrid if self.eventgrid is not None and self.eventgrid.active else None

    def _admit(self, call: ServerCall, raw_id: str) -> Member | None:
        if not acs_events.is_acs_user(raw_id) or raw_id in call.members:
            return None
        room = self.store.rooms.get(call.room_id or "")
        member = call.members[raw_id] = Member(room.role(raw_id) if room else "Attendee", self.store.ids.uuid())
        return member

    def call_started(self, call: ServerCall, raw_ids: list[str]) -> None:
        """Participants started ``call``: CallStarted, then CallParticipantAdded for each ACS user."""
        admitted = [(raw, m) for raw in raw_ids if (m := self._admit(call, raw)) is not None]
        call.started_by = raw_ids[0]
        starter = call.members.get(call.started_by)
        call.started_by_role = starter.role if starter else "Attendee"
        if (eg := self._publisher()) is not None:
            eg.publish(acs_events.call_started(call))
            for raw, member in admitted:
                eg.publish(acs_events.participant_event(call, acs_events.PARTICIPANT_ADDED, raw, member))

    def user_joined(self, call: ServerCall, raw_id: str) -> None:
        """An ACS user is in the call now (joined, or answered Call Automation's invitation)."""
        member = self._admit(call, raw_id)
        if member is not None and (eg := self._publisher()) is not None:
            eg.publish(acs_events.participant_event(call, acs_events.PARTICIPANT_ADDED, raw_id, member))

    def user_left(self, call: ServerCall, raw_id: str) -> None:
        """An ACS user left the call (hung up, was removed, or the call ended)."""
        member = call.members.pop(raw_id, None)
        if member is not None and (eg := self._publisher()) is not None:
            eg.publish(acs_events.participant_event(call, acs_events.PARTICIPANT_REMOVED, raw_id, member))

    def recording_stopped(self, rec: Recording, session_end_reason: str) -> None:
        """In ``recording_file_delay_s``: make the recording's file, announce it (RecordingFileStatusUpdated)."""
        participants = list(rec.call.participants)  # who is in the call as it stops: the file's channels
        self.later(self.recording_file_delay_s, self._recording_file_ready, rec, participants, time.time(),
                   session_end_reason)

    def _recording_file_ready(self, rec: Recording, participants: list[str], stopped_at: float,
                              session_end_reason: str) -> None:
        file = recording_files.new_file(self.store.ids.document_id(), rec, participants, stopped_at)
        if file.format not in encoder.ENCODED:
            self._file_made(self.store, file, session_end_reason)
            return
        # Encoded off the event loop (ffmpeg takes a moment per minute of audio); announced once done.
        task = asyncio.get_running_loop().create_task(self._encode(file, session_end_reason))
        self._encodings.add(task)
        task.add_done_callback(self._encodings.discard)

    async def _encode(self, file: RecordingFile, session_end_reason: str) -> None:
        store, rec = self.store, file.recording
        try:
            file.content = await asyncio.to_thread(encoder.encode, self.ffmpeg, file.format, rec.content_type,
                                                   file.duration_ms)
        except encoder.EncodeError as exc:
            # Announced all the same, as ACS would announce its file: its content answers 500 with this reason.
            file.error = str(exc)
            logger.error("recording %s: file %s not encoded: %s", rec.recording_id, file.document_id, exc)
        if store is self.store:  # not reset meanwhile
            self._file_made(store, file, session_end_reason)

    def _file_made(self, store: Store, file: RecordingFile, session_end_reason: str) -> None:
        store.recording_files[file.document_id] = file
        if (eg := self._publisher()) is not None:
            eg.publish(acs_events.recording_file(file, recording_files.locations(file, self.public_url),
                                                 session_end_reason=session_end_reason))

    # -- shared transitions ----------------------------------------------------------------------------

    def establish(self, conn: Connection) -> None:
        """connecting → connected: CallConnected then ParticipantsUpdated."""
        call = conn.call
        if conn.closed or call is None or call.ended:
            return
        conn.state = "connected"
        self.emit(conn, events.call_event(conn, "CallConnected", operation_context=conn.operation_context))
        self.emit(conn, events.participants_updated(conn, call))

    def roster_changed(self, call: ServerCall) -> None:
        """Bump the sequence number and send ParticipantsUpdated to every connected connection."""
        call.sequence += 1
        for conn in call.connections.values():
            if conn.state == "connected":
                self.emit(conn, events.participants_updated(conn, call))

    def disconnect(self, conn: Connection, result: Result) -> None:
        """The connection leaves: its pending work stops, CallDisconnected is its last event."""
        self.stop_media(conn, notify=False)
        for invitation in conn.invitations.values():
            self.cancel(invitation.timer)
        for handles in conn.continuous_dtmf.values():
            for handle in handles:
                self.cancel(handle)
        for handle in conn.timers:
            self.cancel(handle)
        conn.continuous_dtmf.clear()
        self.emit(conn, events.call_event(conn, "CallDisconnected", result=result))
        conn.state, conn.closed = "disconnected", True
        if conn.call is not None:
            conn.call.connections.pop(conn.call_connection_id, None)

    def end_call(self, call: ServerCall, result: Result, *, by_participant: str | None = None) -> None:
        """The call ends for everyone: recording stops, every connection gets CallDisconnected, then Event Grid
        hears CallParticipantRemoved for each ACS user left and CallEnded.

        ``by_participant`` names who ended it; None means Call Automation (terminate).
        """
        rec = call.recording
        if rec is not None:
            was_active = rec.state == "active"
            rec.stop(time.time())
            if was_active:
                self.emit_recording(rec)
            call.recording = None
            self.recording_stopped(rec, "CallEnded")
        for conn in list(call.connections.values()):
            self.disconnect(conn, result)
        for raw_id in list(call.members):
            self.user_left(call, raw_id)
        if (eg := self._publisher()) is not None:
            if by_participant is None:
                ended_by, reason = acs_events.ended_by_automation(self.resource_id), acs_events.ENDED_BY_AUTOMATION
            else:
                ended_by, reason = acs_events.ended_by_participant(by_participant), acs_events.ENDED_BY_PARTICIPANTS
            eg.publish(acs_events.call_ended(call, ended_by, reason))
        call.ended = True
        room = self.store.rooms.get(call.room_id or "")
        if room is not None and room.call is call:
            room.call = None

    def stop_media(self, conn: Connection, *, notify: bool) -> None:
        """End the running play/recognize; with ``notify`` send PlayCanceled/RecognizeCanceled."""
        media, conn.media = conn.media, None
        if media is None:
            return
        self.cancel(media.timer)
        if notify:
            name = "PlayCanceled" if media.kind == "play" else "RecognizeCanceled"
            event = events.call_event(conn, name, result=events.CANCELED, operation_context=media.operation_context)
            self.emit(conn, event, media.callback_uri)
