"""MP3 and MP4 recording files, encoded from the simulator's own WAV by ffmpeg (Debian's package ``ffmpeg``).

The simulator writes no codec of its own: a real encoder makes files any player and probe accepts. ffmpeg is an
external program (``Settings.ffmpeg``, ``CALLQ_SIM_FFMPEG``; ``make test`` installs it), so a machine without it
still runs the simulator: a start asking for mp3 or mp4 there fails with StartRecordingFailed naming what is missing
(``missing``), and a file whose encoding fails is served as a 500 saying why (``EncodeError``); neither stops the
simulator.

What each format holds (the WAV's 400 Hz tone, the recorded time; the simulator's choices, not ACS's):

- ``mp3``: MPEG-2 audio layer III, mono, 16 kHz, 32 kbit/s (``audio/mpeg``);
- ``mp4``: AAC audio, mono, 16 kHz, 48 kbit/s, plus for ``audioVideo`` content (ACS's mp4 is mixed audio and video)
  an H.264 track of a still black 320x180 picture at 10 frames a second (``video/mp4``); audio-only content gives an
  audio-only MP4 (``audio/mp4``).

Both are mono: the simulator mixes unmixed audio into one channel for them (a layout for unmixed MP3 was not found).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import audio

ENCODED = ("mp3", "mp4")
TIMEOUT_S = 600.0  # an hour of audio encodes in seconds; this only stops a hung ffmpeg
VIDEO = {"longerSideLength": 320, "shorterSideLength": 180, "framerate": 10, "bitRate": 64_000}


@dataclass(frozen=True)
class Profile:
    """What one encoded format holds, as the file's metadata describes it."""

    audio_bit_rate: int
    video: bool


def profile(format_type: str, content_type: str) -> Profile:
    """The encoding of ``format_type`` (mp3 / mp4) for a recording of ``content_type`` (audio / audioVideo)."""
    if format_type == "mp3":
        return Profile(32_000, video=False)
    return Profile(48_000, video=content_type == "audioVideo")


def media_type(format_type: str, content_type: str) -> str:
    """The Content-Type the file is served with."""
    if format_type == "mp3":
        return "audio/mpeg"
    if format_type == "mp4":
        return "video/mp4" if profile(format_type, content_type).video else "audio/mp4"
    return "audio/wav"


class EncodeError(Exception):
    """ffmpeg could not make the file; the message says what it printed."""


def missing(ffmpeg: str, format_type: str) -> str | None:
    """Why a recording in ``format_type`` cannot be made here (None when it can): the encoder is not installed."""
    if format_type not in ENCODED or shutil.which(ffmpeg) is not None:
        return None
    return (f"The simulator cannot record {format_type}: its encoder {ffmpeg!r} was not found. Install Debian's "
            f"ffmpeg (apt-get install ffmpeg; make test does) or set CALLQ_SIM_FFMPEG to its path.")


def encode(ffmpeg: str, format_type: str, content_type: str, duration_ms: int) -> bytes:
    """The recorded time as a ``format_type`` file: the simulator's WAV (mono) through ffmpeg, in a scratch dir."""
    if format_type not in ENCODED:
        raise ValueError(f"not an encoded format: {format_type}")
    frames = audio.frames_for(duration_ms)
    chosen = profile(format_type, content_type)
    with tempfile.TemporaryDirectory(prefix="callq-sim-rec-") as scratch:
        source, target = Path(scratch, "in.wav"), Path(scratch, f"out.{format_type}")
        with source.open("wb") as out:
            for block in audio.wav_bytes(frames, 1, 0, audio.wav_size(frames, 1) - 1):
                out.write(block)
        command = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(source)]
        if chosen.video:
            size = f"{VIDEO['longerSideLength']}x{VIDEO['shorterSideLength']}"
            command += ["-f", "lavfi", "-i", f"color=c=black:s={size}:r={VIDEO['framerate']}:d={duration_ms / 1000}",
                        "-map", "1:v", "-map", "0:a", "-c:v", "libx264", "-preset", "ultrafast", "-tune",
                        "stillimage", "-pix_fmt", "yuv420p", "-b:v", str(VIDEO["bitRate"])]
        codec = ["-c:a", "libmp3lame", "-f", "mp3"] if format_type == "mp3" else [
            "-c:a", "aac", "-movflags", "+faststart", "-f", "mp4"]
        command += ["-ac", "1", "-b:a", str(chosen.audio_bit_rate), *codec, str(target)]
        try:
            done = subprocess.run(command, capture_output=True, timeout=TIMEOUT_S, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EncodeError(f"{ffmpeg} could not encode {format_type}: {exc}") from None
        if done.returncode != 0 or not target.exists():
            said = done.stderr.decode(errors="replace").strip()[-500:] or f"exit status {done.returncode}"
            raise EncodeError(f"{ffmpeg} could not encode {format_type}: {said}")
        return target.read_bytes()
