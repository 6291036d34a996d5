"""A stopped recording's file: made when the simulator announces it, described by metadata JSON like ACS's.

Where the reference found no value, the simulator's choice (callq must not depend on these):

- one chunk per recording (``index`` 0, ``endReason`` ``SessionEnded``); its length is the recorded time, paused
  spans left out, and ``recordingDurationMs`` says the same (whether ACS's counts paused time: not found);
- the file is in the format asked: WAV (16 kHz, 16-bit PCM, a quiet tone, made on demand for any byte range), or
  MP3 / MP4 encoded from that WAV by ffmpeg once the recording stopped (``encoder``: what each holds, and what
  happens without ffmpeg); the Content-Type and the metadata's ``recordingInfo`` say which;
- mixed audio is one channel; unmixed WAV one per participant (at least one, at most five), ``channelAffinity``
  placing who it names, the others following in the order they joined; ``participants`` lists them in channel
  order (ACS's per-channel field: not found); MP3 and MP4 are mono;
- metadata times: ``chunkStartTime`` and each pause's ``startTime`` ISO 8601; ``chunkDuration`` and each pause's
  ``duration`` in milliseconds (the unit is not documented).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from . import audio, encoder
from .acs_events import timestamp
from .model import Recording, RecordingFile

MAX_CHANNELS = 5
_DIGITS = re.compile(r"[0-9]{0,18}")  # ASCII only: str.isdigit() takes "²", which int() refuses


def new_file(document_id: str, rec: Recording, participants: list[str], stopped_at: float) -> RecordingFile:
    """The file of ``rec``, stopped at ``stopped_at`` with ``participants`` in the call (in join order); an MP3 or
    MP4 still has to be encoded (``encoder.encode``) before it is served."""
    unmixed = rec.channel_type == "unmixed" and rec.format_type not in encoder.ENCODED
    ordered = _channel_order(rec, participants) if unmixed else participants
    channels = max(1, min(MAX_CHANNELS, len(ordered))) if unmixed else 1
    return RecordingFile(document_id, rec, rec.active_ms, channels, ordered, stopped_at, format=rec.format_type)


def _channel_order(rec: Recording, participants: list[str]) -> list[str]:
    placed = dict(rec.channel_affinity)
    rest = iter(p for p in participants if p not in placed.values())
    width = max([len(participants), *(c + 1 for c in placed)]) if placed or participants else 0
    return [placed.get(channel) or next(rest, "") for channel in range(min(width, MAX_CHANNELS))]


def frames(file: RecordingFile) -> int:
    return audio.frames_for(file.duration_ms)


def size(file: RecordingFile) -> int:
    """The file's length in bytes."""
    if file.content is not None:
        return len(file.content)
    return audio.wav_size(frames(file), file.channels)


def media_type(file: RecordingFile) -> str:
    """The Content-Type it is served with."""
    return encoder.media_type(file.format, file.recording.content_type)


def content(file: RecordingFile, first: int, last: int) -> Iterator[bytes]:
    """Bytes ``first``..``last`` (inclusive) of the file."""
    if file.content is None:
        return audio.wav_bytes(frames(file), file.channels, first, last)
    data = file.content
    return (data[at:min(last + 1, at + audio.CHUNK_BYTES)] for at in range(first, last + 1, audio.CHUNK_BYTES))


def locations(file: RecordingFile, public_url: str) -> dict[str, str]:
    """Where the chunk's content, metadata and delete endpoints are (the event's ``…Location`` fields)."""
    base = f"{public_url}/recordings/{file.document_id}"
    return {"contentLocation": f"{base}/content", "metadataLocation": f"{base}/metadata",
            "deleteLocation": f"{base}/delete"}


def metadata(file: RecordingFile, resource_id: str) -> dict[str, Any]:
    """The chunk's metadata document (rooms-and-eventgrid.md §4.1's fields)."""
    rec = file.recording
    return {
        "resourceId": resource_id,
        "callId": rec.call.correlation_id,
        "chunkDocumentId": file.document_id,
        "chunkIndex": file.index,
        "chunkStartTime": timestamp(rec.started_at),
        "chunkDuration": file.duration_ms,
        "pauseResumeIntervals": [{"startTime": timestamp(start), "duration": ms} for start, ms in rec.pauses],
        "recordingInfo": _recording_info(file),
        "participants": [{"participantId": raw} for raw in file.participants if raw],
    }


def _recording_info(file: RecordingFile) -> dict[str, Any]:
    rec = file.recording
    info: dict[str, Any] = {"contentType": rec.content_type, "channelType": rec.channel_type, "format": file.format}
    if file.format in encoder.ENCODED:
        chosen = encoder.profile(file.format, rec.content_type)
        bit_rate = chosen.audio_bit_rate
    else:
        chosen, bit_rate = None, audio.SAMPLE_RATE * audio.SAMPLE_BYTES * 8 * file.channels
    info["audioConfiguration"] = {"sampleRate": audio.SAMPLE_RATE, "channels": file.channels, "bitRate": bit_rate}
    if chosen is not None and chosen.video:
        info["videoConfiguration"] = dict(encoder.VIDEO)
    return info


def byte_range(header: str | None, total: int) -> tuple[int, int] | None | str:
    """The inclusive byte range one ``Range`` header asks of ``total`` bytes: None to send everything (no header,
    or one this simulator ignores, as RFC 9110 allows: several ranges, bad syntax), ``"unsatisfiable"`` (416)."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, sep, last_text = header.removeprefix("bytes=").strip().partition("-")
    if not sep or not all(_DIGITS.fullmatch(t) for t in (first_text, last_text)) or not first_text + last_text:
        return None
    if not first_text:  # a suffix: the last N bytes
        count = int(last_text)
        return (max(0, total - count), total - 1) if count and total else "unsatisfiable"
    first, last = int(first_text), int(last_text) if last_text else total - 1
    if last_text and last < first:
        return None  # not a valid range: ignored
    if first >= total:
        return "unsatisfiable"
    return first, min(last, total - 1)
