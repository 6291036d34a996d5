"""`callq bench --quick` runs every scenario to a figure or a recorded error, and leaves no process behind.

Marked ``bench_smoke``: ``make bench`` runs it first (``make bench-smoke`` alone); ``make test`` leaves it out, as
its minute and more of running every scenario would take the suite past its 15-minute budget on a 2-core machine.

Never a timing: the figures depend on the machine; only their presence and shape are checked here.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = {"accept", "replicated", "overhead", "e2e", "rate", "ingest", "pending", "flood", "webhook_latency",
             "webhook_throughput", "simulator"}
MARKER = "CALLQ_BENCH_RUN"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _processes_marked(run_id: str) -> list[int]:
    """Live processes whose environment carries this run's marker (every child of the suite gets it)."""
    wanted = f"{MARKER}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return found


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLQ_")}
    argv = [sys.executable, "-m", "callq", "bench", "--quick", "--out", str(out)]
    with subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=240)
        except subprocess.TimeoutExpired:
            proc.terminate()  # SIGTERM: the suite stops every child it started, then exits
            stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr), out


@pytest.mark.integration
@pytest.mark.bench_smoke
@pytest.mark.timeout(300)
def test_quick_suite_reports_every_scenario_as_figures_or_an_error(
        quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, out = quick_run
    assert (out / "results.json").exists(), done.stdout + done.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["scenarios"]) == SCENARIOS
    for name, scenario in results["scenarios"].items():
        if scenario["status"] == "error":
            assert scenario["error"], name
            continue
        assert scenario["rows"], name
        for row in scenario["rows"]:
            assert _is_number(row["callq"]), (name, row)
            assert row["baseline"] is None or _is_number(row["baseline"]), (name, row)
            assert row["ratio"] is None or _is_number(row["ratio"]), (name, row)
    assert {"cpu", "cores", "python", "date"} <= set(results["machine"])
    table = (out / "results.md").read_text()
    assert all(f"| {name} |" in table for name in SCENARIOS)
    # The exit code says whether a scenario errored; the figures themselves are never judged here.
    assert done.returncode in (0, 1), done.stderr


@pytest.mark.integration
@pytest.mark.bench_smoke
@pytest.mark.timeout(300)
def test_quick_suite_leaves_no_process_behind(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    done, out = quick_run
    run_id = json.loads((out / "results.json").read_text())["run_id"]
    assert _processes_marked(run_id) == [], done.stdout
