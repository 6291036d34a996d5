"""The chaos report: every scenario records its figures here; the session writes them as one markdown table.

A scenario records as soon as it has measured, before it asserts, so a failing run still reports what it saw;
the test's outcome (pass / FAIL) is attached afterwards from pytest's report of the test.
"""

from __future__ import annotations

import os
import platform
import subprocess
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

COLUMNS = ("scenario", "what was done", "commands", "faults injected", "lost", "duplicated", "5xx", "also seen",
           "result")


@dataclass
class Figures:
    """One scenario run's figures; ``lost``, ``duplicated`` and ``http_5xx`` mean the same in every scenario.

    ``lost``: commands answered 2xx that never reached a terminal state. ``duplicated``: commands ACS
    executed more than once, plus Idempotency-Keys that got a second command. ``http_5xx``: 5xx answers
    callq gave (to clients, or to ACS's callbacks where the scenario says so).
    """

    scenario: str
    setup: str
    commands: int
    faults: str
    lost: int
    duplicated: int
    http_5xx: int
    notes: dict[str, int | str] = field(default_factory=dict)  # scenario-specific figures, in the order recorded
    result: str = "not finished"


@dataclass
class Report:
    """Figures and test outcomes of one pytest session over tests/chaos."""

    scale: str
    rows: list[tuple[str, Figures]] = field(default_factory=list)  # (test node id, figures)
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)  # test file -> passed / failed / skipped
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def record(self, node_id: str, figures: Figures) -> None:
        self.rows.append((node_id, figures))

    def finished(self, node_id: str, outcome: str, seconds: float) -> None:
        """Note a test's outcome (call phase, or a failed set-up / teardown) and how long that phase took."""
        self.outcomes.setdefault(node_id.split("::", 1)[0], Counter())[outcome] += 1
        for recorded_by, figures in self.rows:
            if recorded_by == node_id:
                figures.result = f"{'pass' if outcome == 'passed' else outcome.upper()} ({seconds:.0f} s)"

    def markdown(self, *, command: str) -> str:
        seconds = (datetime.now(UTC) - self.started).total_seconds()
        lines = [
            "# Chaos report",
            "",
            f"Written by `{command}` at scale **{self.scale}** on {self.started:%Y-%m-%d %H:%M} UTC "
            f"({seconds / 60:.1f} min), {_revision()}, on {_machine()}.",
            "",
            "*lost*: answered 2xx but never ended. *duplicated*: executed more than once at ACS (the simulator's "
            "execution log), or a second command for one Idempotency-Key. *5xx*: 5xx answers callq gave.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        for _, f in self.rows:
            notes = "; ".join(f"{name} {_figure(value)}" for name, value in f.notes.items())
            cells = (f.scenario, f.setup, f"{f.commands:,}", f.faults, str(f.lost), str(f.duplicated),
                     str(f.http_5xx), notes, f.result)
            lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
        lines += ["", "Tests run:", "", "| file | passed | failed | skipped |", "|---|---|---|---|"]
        for path, counts in sorted(self.outcomes.items()):
            lines.append(f"| `{path}` | {counts['passed']} | {counts['failed']} | {counts['skipped']} |")
        return "\n".join(lines) + "\n"

    def write(self, path: Path, *, command: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown(command=command))


def _figure(value: object) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)  # fractions arrive formatted by the scenario


def _revision() -> str:
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                   timeout=10, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "revision unknown"
    return f"commit {described}" if described else "revision unknown"


def _machine() -> str:
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor() or "unknown CPU")
    except OSError:
        cpu = platform.processor() or "unknown CPU"
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"
