"""What a scenario reports, and the files the suite writes: results.md, results.json, latency.png."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.stats import percentile

CURVE_PERCENTILES = tuple(float(p) for p in range(1, 100)) + (99.5, 99.9)


@dataclass
class Row:
    """One figure of a scenario: callq's value, the baseline's, their ratio and the target it is held to."""

    metric: str
    unit: str
    callq: float | None
    baseline: float | None
    baseline_name: str
    ratio: float | None = None
    target: str = "info"
    passed: bool | None = None  # None: reported for information, no target


@dataclass
class ScenarioResult:
    name: str
    rows: list[Row] = field(default_factory=list)
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    # label -> {percentile: milliseconds}, for latency.png
    latency: dict[str, dict[float, float]] = field(default_factory=dict)
    seconds: float = 0.0


def compare(metric: str, unit: str, callq: float, baseline: float, baseline_name: str, *,
            at_least: float | None = None, at_most: float | None = None) -> Row:
    """A row whose ratio is callq / baseline, passed when it is within the bound given (if any)."""
    ratio = callq / baseline if baseline else None
    if at_least is not None:
        target, passed = f"≥ {at_least:g}×", ratio is not None and ratio >= at_least
    elif at_most is not None:
        target, passed = f"≤ {at_most:g}×", ratio is not None and ratio <= at_most
    else:
        return Row(metric, unit, callq, baseline, baseline_name, ratio)
    return Row(metric, unit, callq, baseline, baseline_name, ratio, target, passed)


def curve(samples_ms: list[float]) -> dict[float, float]:
    """Latency percentiles of raw samples for the latency plot."""
    ms = sorted(samples_ms)
    return {p: percentile(ms, p) for p in CURVE_PERCENTILES} if ms else {}


def machine() -> dict[str, Any]:
    """Where the figures were taken: they only mean something next to this."""
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": platform.platform(terse=True),
        "date": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "load_generator": _wrk_version() or "python asyncio (wrk not installed)",
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _wrk_version() -> str | None:
    if not shutil.which("wrk"):
        return None
    out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False, timeout=10)
    first = (out.stdout or out.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else "wrk"


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1e6:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _verdict(row: Row) -> str:
    return "info" if row.passed is None else ("**pass**" if row.passed else "**FAIL**")


def markdown(results: list[ScenarioResult], meta: dict[str, Any], plot_note: str) -> str:
    m = meta["machine"]
    lines = [
        "# callq benchmarks", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['os']}; {m['date']}; "
        f"load average at start {m['load_average_at_start']}, at end {m.get('load_average_at_end')} (the machine "
        "is shared and background load moves absolute figures; accept, ingest, overhead, e2e and the webhook "
        "scenarios measure callq and its baselines in turns so their ratios see the same load); load generator: "
        f"{m['load_generator']}.  ",
        f"Mode: {meta['mode']}; total {meta['seconds']:.0f} s. Written by `callq bench`; figures are ratios "
        "against a baseline measured in the same run, never absolute promises.", "",
        "| scenario | metric | callq | baseline | ratio | target | result |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for res in results:
        if res.error:
            lines.append(f"| {res.name} | — | — | — | — | — | error: {res.error.replace('|', '/')} |")
            continue
        for row in res.rows:
            lines.append(f"| {res.name} | {row.metric} ({row.unit}) | {fmt(row.callq)} | {fmt(row.baseline)} "
                         f"{row.baseline_name} | {fmt(row.ratio)} | {row.target} | {_verdict(row)} |")
    lines += ["", plot_note, "", "## How each figure is taken", ""]
    for res in results:
        lines.append(f"- **{res.name}** ({res.seconds:.0f} s): " + " ".join(res.notes))
    return "\n".join(lines) + "\n"


def to_json(results: list[ScenarioResult], meta: dict[str, Any]) -> str:
    scenarios = {}
    for res in results:
        scenarios[res.name] = {
            "status": "error" if res.error else "ok",
            "error": res.error,
            "seconds": round(res.seconds, 2),
            "rows": [asdict(r) for r in res.rows],
            "notes": res.notes,
            "details": res.details,
        }
    return json.dumps({**meta, "scenarios": scenarios}, indent=2, default=str) + "\n"


def write_plot(results: list[ScenarioResult], path: Path) -> str:
    """latency.png: one panel per scenario with latency data; returns a note for results.md."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display here
        import matplotlib.pyplot as plt
    except ImportError:
        return "No latency plot: matplotlib is not installed (`.venv/bin/pip install matplotlib`)."
    panels = [r for r in results if r.latency and not r.error]
    if not panels:
        return "No latency plot: no scenario produced latency data."
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    cols = min(2, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, res in zip(axes.flat, panels, strict=False):
        for label, points in res.latency.items():
            ps = [p for p in sorted(points) if points[p] > 0]  # a log axis cannot show clock-skewed samples <= 0
            ax.plot([points[p] for p in ps], ps, label=label)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("percentile")
        ax.set_title(res.name)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"Latency distributions: `{path.name}`."
