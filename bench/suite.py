"""``callq bench [--quick] [--only NAME ...] [--out DIR]``: run the scenarios, write results.md/.json/.png.

Scenarios run one after another (the machine has two cores: anything in parallel would measure the
contention). A scenario that fails is recorded as "error: ..." in the table and the suite goes on.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.results import ScenarioResult, machine, markdown, to_json, write_plot
from bench.scenarios import Context

SCENARIOS = ("accept", "replicated", "overhead", "e2e", "rate", "ingest", "pending", "flood", "webhook_latency",
             "webhook_throughput", "simulator")
BENCH_DIR = Path(__file__).resolve().parent


def run_scenario(name: str, ctx: Context) -> ScenarioResult:
    """Run one scenario; any exception becomes its recorded error."""
    started = time.monotonic()
    try:
        module = importlib.import_module(f"bench.scenarios.{name}")
        result: ScenarioResult = module.run(ctx)
    except Exception as exc:
        (ctx.log_dir / f"{name}-error.txt").write_text(traceback.format_exc())
        result = ScenarioResult(name, error=f"{type(exc).__name__}: {exc}"[:300])
    result.seconds = time.monotonic() - started
    return result


def _progress(result: ScenarioResult) -> str:
    if result.error:
        return f"bench: {result.name}: error: {result.error} ({result.seconds:.0f} s)"
    verdicts = ", ".join(f"{r.metric} {r.ratio:.2f}" for r in result.rows if r.ratio is not None and r.passed
                         is not None)
    return f"bench: {result.name}: {verdicts or 'done'} ({result.seconds:.0f} s)"


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def run_suite(*, quick: bool, only: Sequence[str] = (), out_dir: Path = BENCH_DIR,
              prefer_wrk: bool = True) -> list[ScenarioResult]:
    """Run the chosen scenarios (all by default) and write the result files into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = out_dir / "output"
    log_dir.mkdir(exist_ok=True)
    ctx = Context(quick=quick, log_dir=log_dir, run_id=uuid.uuid4().hex, prefer_wrk=prefer_wrk)
    meta: dict[str, Any] = {"mode": "quick" if quick else "full", "machine": machine(), "run_id": ctx.run_id}
    started = time.monotonic()
    results: list[ScenarioResult] = []
    # SIGTERM (a CI timeout, `kill`) must unwind like Ctrl-C so every scenario stops its children: they run
    # in their own sessions and would outlive us.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        for name in (n for n in SCENARIOS if not only or n in only):
            print(f"bench: {name} ...", flush=True)
            results.append(run_scenario(name, ctx))
            print(_progress(results[-1]), flush=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        meta["seconds"] = round(time.monotonic() - started, 1)
        meta["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        plot_note = write_plot(results, out_dir / "latency.png")
        (out_dir / "results.json").write_text(to_json(results, meta))
        (out_dir / "results.md").write_text(markdown(results, meta, plot_note))
    print(f"bench: wrote {out_dir / 'results.md'} in {meta['seconds']:.0f} s", flush=True)
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="small samples: every scenario, about 80 s on 2 cores")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME",
                        help=f"run only these scenarios ({', '.join(SCENARIOS)})")
    parser.add_argument("--out", type=Path, default=BENCH_DIR,
                        help="where results.md, results.json and latency.png go (default: bench/)")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk is here")


def run_from_args(args: argparse.Namespace) -> int:
    """Exit code 0 when every scenario ran (targets missed are reported, not failures), 1 if one errored."""
    unknown = [name for name in args.only if name not in SCENARIOS]
    if unknown:
        print(f"callq bench: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2
    results = run_suite(quick=args.quick, only=args.only, out_dir=args.out, prefer_wrk=not args.no_wrk)
    return 1 if any(r.error for r in results) else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.suite", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
