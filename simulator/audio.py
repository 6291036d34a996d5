"""A recording's audio: a playable 16-bit PCM WAV of a quiet 400 Hz tone, made on demand for any byte range.

The tone's period is a whole number of frames (16 kHz / 400 Hz = 40), so the PCM data is one period repeated and
the bytes of any range can be computed without building the file: a long recording costs no memory, and a Range
request no more work than its length.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator

SAMPLE_RATE = 16_000
SAMPLE_BYTES = 2  # 16-bit PCM
TONE_HZ = 400
AMPLITUDE = 1_000  # of 32 767: about -30 dBFS, a quiet tone
HEADER_BYTES = 44
CHUNK_BYTES = 64 * 1024


def frames_for(duration_ms: int) -> int:
    """Frames of ``duration_ms`` of audio (16 a millisecond: the file lasts exactly that long)."""
    return duration_ms * SAMPLE_RATE // 1000


def wav_size(frames: int, channels: int) -> int:
    """The file's length in bytes."""
    return HEADER_BYTES + frames * channels * SAMPLE_BYTES


def header(frames: int, channels: int) -> bytes:
    """The canonical 44-byte RIFF/WAVE header of a PCM file with ``frames`` frames."""
    data = frames * channels * SAMPLE_BYTES
    block = channels * SAMPLE_BYTES
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + data, b"WAVE", b"fmt ", 16, 1, channels, SAMPLE_RATE,
                       SAMPLE_RATE * block, block, SAMPLE_BYTES * 8, b"data", data)


def _period(channels: int) -> bytes:
    samples = (round(AMPLITUDE * math.sin(2 * math.pi * n * TONE_HZ / SAMPLE_RATE))
               for n in range(SAMPLE_RATE // TONE_HZ))
    return b"".join(struct.pack("<h", s) * channels for s in samples)


def wav_bytes(frames: int, channels: int, first: int, last: int) -> Iterator[bytes]:
    """Bytes ``first``..``last`` (inclusive) of the file, in chunks of at most CHUNK_BYTES."""
    head = header(frames, channels)
    period = _period(channels)
    position = first
    while position <= last:
        end = min(last + 1, position + CHUNK_BYTES)
        if position < HEADER_BYTES:
            end = min(end, HEADER_BYTES)
            yield head[position:end]
        else:
            offset = (position - HEADER_BYTES) % len(period)
            count = end - position
            repeated = period * (count // len(period) + 2)
            yield repeated[offset:offset + count]
        position = end
