"""How big the chaos scenarios run, and where their report goes: one environment variable picks both.

``make test`` runs the bounded scale (seconds per scenario) and writes ``tests/chaos/output/report.md``
(scratch, gitignored); ``callq chaos`` sets ``CALLQ_CHAOS_SCALE=long`` (minutes, the figures quoted in the
README) and writes ``tests/chaos/report.md``. Each scenario keeps its two sizes side by side with :func:`pick`,
so what the bounded form leaves out is visible next to what the long form does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TypeVar

SCALE_ENV = "CALLQ_CHAOS_SCALE"
REPORT_ENV = "CALLQ_CHAOS_REPORT"
SCALES = ("bounded", "long")
CHAOS_DIR = Path(__file__).resolve().parent
COMMITTED_REPORT = CHAOS_DIR / "report.md"
SCRATCH_REPORT = CHAOS_DIR / "output" / "report.md"
T = TypeVar("T")


def scale() -> str:
    """The scale this run uses; a value other than the known ones fails loudly rather than running bounded."""
    value = os.environ.get(SCALE_ENV, "bounded")
    if value not in SCALES:
        raise ValueError(f"{SCALE_ENV} must be one of {', '.join(SCALES)}, got {value!r}")
    return value


def pick(*, bounded: T, long: T) -> T:
    """This scenario's parameters at the current scale."""
    return long if scale() == "long" else bounded


def report_path() -> Path:
    """Where this run's report goes: ``CALLQ_CHAOS_REPORT`` if set, else scratch output (``callq chaos`` sets it)."""
    explicit = os.environ.get(REPORT_ENV)
    return Path(explicit) if explicit else SCRATCH_REPORT
