"""Checks that a downloaded recording file is what its format says: an MP3 frame header, an MP4 ``ftyp`` box, and
(when ffprobe is installed: Debian's ffmpeg package has it) the streams and duration a real decoder finds."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

# MPEG audio sample rates by version bits (3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5) and sample-rate index.
_RATES = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000), 0: (11_025, 12_000, 8_000)}


@dataclass(frozen=True)
class Mp3Frame:
    """The first MPEG audio frame header's facts."""

    layer: int
    sample_rate: int


def mp3_first_frame(data: bytes) -> Mp3Frame | None:
    """The first frame header after an ID3v2 tag, or None when the bytes there are no valid MPEG audio header."""
    at = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2: 10-byte header, then a syncsafe (7 bits a byte) size
        at = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
    head = data[at:at + 4]
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (head[1] >> 3) & 3, (head[1] >> 1) & 3
    bitrate, rate = head[2] >> 4, (head[2] >> 2) & 3
    if version == 1 or layer_bits == 0 or bitrate in (0, 15) or rate == 3:
        return None  # reserved values: not a frame header
    return Mp3Frame(layer=4 - layer_bits, sample_rate=_RATES[version][rate])


def mp4_brand(data: bytes) -> bytes | None:
    """The major brand of the leading ``ftyp`` box, or None when the file does not start with one."""
    return data[8:12] if data[4:8] == b"ftyp" and len(data) >= 12 else None


@dataclass(frozen=True)
class Probe:
    """What ffprobe read: the container's duration in seconds and each stream's (type, codec)."""

    duration_s: float
    streams: list[tuple[str, str]]


def ffprobe(data: bytes, suffix: str) -> Probe | None:
    """Probe the file with ffprobe; None when it is not installed."""
    tool = shutil.which("ffprobe")
    if tool is None:
        return None
    with tempfile.NamedTemporaryFile(suffix=f".{suffix}") as file:
        Path(file.name).write_bytes(data)
        out = subprocess.run([tool, "-v", "error", "-show_entries", "format=duration:stream=codec_type,codec_name",
                              "-of", "json", file.name], capture_output=True, check=True, timeout=60)
    found = json.loads(out.stdout)
    return Probe(float(found["format"]["duration"]),
                 [(s["codec_type"], s["codec_name"]) for s in found.get("streams", [])])
