"""A recording's files as ACS announces them (Event Grid's RecordingFileStatusUpdated), kept on callq's recording.

ACS stores a stopped recording as one or more chunks and tells of them once they are ready ("typically a few
minutes" later): each chunk's index, where its content, metadata and delete endpoints are, and why it ended; of the
recording, when it started, how long it is and why the session ended. :func:`attach` keeps them on the recording
callq registered when its start was answered (``callq:rec:{id}``, sent.lua), chunks in ``callq:rec:{id}:files``;
a file of a recording callq did not start is not kept. :func:`files_of` reads them back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from workers import keys, scripts

# The event's recordingFormatType (Wav, Mp3, Mp4) → the file's media type.
MEDIA_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "mp4": "video/mp4"}
DELETED_PREFIX = "deleted:"  # recording hash field per chunk deleted at ACS: deleted:{index} → when


@dataclass(frozen=True)
class Chunk:
    """One stored piece of a recording, as the event lists it."""

    index: int
    document_id: str | None
    content_location: str
    metadata_location: str | None
    delete_location: str | None
    end_reason: str | None


@dataclass(frozen=True)
class FileStatus:
    """What one RecordingFileStatusUpdated says (None where it does not say)."""

    recording_id: str
    chunks: tuple[Chunk, ...]
    start_time: str | None = None
    duration_ms: int | None = None
    session_end_reason: str | None = None
    content_type: str | None = None  # as the event spells it: Audio, AudioVideo
    channel_type: str | None = None  # Mixed, Unmixed
    format_type: str | None = None  # Wav, Mp3, Mp4
    storage_type: str | None = None  # with bring-your-own storage, e.g. blobstorage

    def recording_fields(self) -> dict[str, str]:
        """The fields the recording hash keeps (only those the event gave)."""
        values = {"start_time": self.start_time, "duration_ms": self.duration_ms,
                  "session_end_reason": self.session_end_reason, "content_type": self.content_type,
                  "channel_type": self.channel_type, "format_type": self.format_type,
                  "storage_type": self.storage_type}
        return {k: str(v) for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class Attached:
    """What :func:`attach` did: ``known`` is False for a recording callq did not start (nothing kept)."""

    known: bool
    new_chunks: int = 0

    @classmethod
    def parse(cls, reply: Any) -> Attached:
        return cls(True, int(reply[1])) if reply[0] == "attached" else cls(False)


def attach(status: FileStatus, *, files_at: str, ttl_s: int) -> scripts.ScriptCall[Attached]:
    """Keep the event's chunks and facts on the recording (recording_files.lua); ``files_at``: when it came."""
    fields = [item for pair in {**status.recording_fields(), "files_at": files_at}.items() for item in pair]
    chunks = [item for c in status.chunks for item in (str(c.index), json.dumps(asdict(c), separators=(",", ":")))]
    return scripts.call("recording_files",
                        [keys.recording_key(status.recording_id), keys.recording_files_key(status.recording_id)],
                        [ttl_s, len(fields) // 2, *fields, *chunks], Attached.parse)


@dataclass(frozen=True)
class StoredFile:
    """A chunk as callq keeps it, with when it was deleted at ACS (None while it is there)."""

    chunk: Chunk
    deleted_at: str | None

    @property
    def index(self) -> int:
        return self.chunk.index


def files_of(recording: dict[str, str], files: dict[str, str]) -> list[StoredFile]:
    """The recording's chunks in index order, from its hash and its files hash."""
    chunks = sorted((Chunk(**json.loads(raw)) for raw in files.values()), key=lambda c: c.index)
    return [StoredFile(c, recording.get(f"{DELETED_PREFIX}{c.index}") or None) for c in chunks]


def media_type(recording: dict[str, str]) -> str | None:
    """The files' media type, from the format the event named (None when it named none callq knows)."""
    return MEDIA_TYPES.get(recording.get("format_type", "").lower())
