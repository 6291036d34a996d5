"""The ``callq`` command: ``up`` runs the whole stack; the others run one piece in the foreground.

Heavy or concurrently-written modules (the demo, the simulator, uvicorn) are imported inside their subcommand, so
``callq up`` starts without them and a broken one only breaks its own subcommand.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from callq import _api_commands, _components, stack
from callq.client import CallqAPIError, CallqClientError
from workers.errors import ConfigError
from workers.settings import Settings

Command = Callable[[Settings, argparse.Namespace], int]


def _up(settings: Settings, args: argparse.Namespace) -> int:
    return stack.up(settings, demo=args.demo)


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    from callq import demo  # written alongside; only this subcommand needs it

    settings = stack.with_saved_credentials(settings)
    api_key = stack.load_dev_api_key(settings)
    if api_key is None:
        raise stack.StackError("no API key: set CALLQ_API_KEYS, or start the stack with `callq up` first")
    return demo.run(settings, api_key=api_key)


def _simulator(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    uvicorn.run("simulator.app:create_app", factory=True, host=settings.sim_host, port=settings.sim_port)
    return 0


def _exec(component: _components.Component) -> NoReturn:
    """Replace this process with ``component`` (same environment plus its own variables)."""
    env = {**os.environ, **component.env}
    os.chdir(stack.project_root())
    os.execve(component.argv[0], list(component.argv), env)


def _worker(settings: Settings, args: argparse.Namespace) -> int:
    return _exec(_components.worker(settings, sys.executable))


def _beat(settings: Settings, args: argparse.Namespace) -> int:
    return _exec(_components.beat(settings, sys.executable))


def _flower(settings: Settings, args: argparse.Namespace) -> int:
    return _exec(_components.flower(settings, sys.executable))


def _bench(settings: Settings, args: argparse.Namespace) -> int:
    # bench/ is not an installed package: import it from the checkout, like the children the suite starts.
    root = str(stack.project_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    from bench import suite  # heavy (matplotlib, the SDK) and only this subcommand needs it

    return suite.run_from_args(args)


def _chaos(settings: Settings, args: argparse.Namespace) -> int:
    # The scenarios are the test suite's own (tests/chaos/), run at a larger scale: import them from the checkout.
    root = str(stack.project_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        import pytest
    except ImportError:
        raise stack.StackError("callq chaos runs tests/chaos with pytest: install it with pip install -e '.[dev]'") \
            from None
    from tests.chaos import scale

    names = sorted(p.stem.removeprefix("test_") for p in scale.CHAOS_DIR.glob("test_*.py"))
    if unknown := [name for name in args.only if name not in names]:
        raise stack.StackError(f"no chaos scenario {', '.join(unknown)}; there are: {', '.join(names)}")
    # Only a whole long run replaces the committed report: its figures are the ones the README quotes.
    whole = args.scale == "long" and not args.only
    out: Path = args.out or (scale.COMMITTED_REPORT if whole else scale.SCRATCH_REPORT)
    os.environ[scale.SCALE_ENV] = args.scale
    os.environ[scale.REPORT_ENV] = str(out.resolve())
    targets = [str(scale.CHAOS_DIR / f"test_{name}.py") for name in args.only] or [str(scale.CHAOS_DIR)]
    return int(pytest.main(targets))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callq", description="Exactly-once in-call commands for ACS Call Automation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = sub.add_parser("up", help="run redis, simulator, api, worker, beat and flower until Ctrl-C")
    up.add_argument("--demo", action="store_true", help="run the demo once everything is ready")
    up.set_defaults(run=_up)
    commands: list[tuple[str, str, Command]] = [
        ("demo", "run the demo against a running stack", _demo),
        ("simulator", "run the ACS simulator in the foreground", _simulator),
        ("worker", "run a Celery worker in the foreground", _worker),
        ("beat", "run Celery beat (redbeat) in the foreground", _beat),
        ("flower", "run Flower in the foreground (needs CALLQ_FLOWER_PASSWORD)", _flower),
    ]
    for name, help_text, run in commands:
        sub.add_parser(name, help=help_text).set_defaults(run=run)
    bench = sub.add_parser("bench", help="run the benchmark suite; writes bench/results.md, .json and latency.png")
    _bench_arguments(bench)
    bench.set_defaults(run=_bench)
    chaos = sub.add_parser("chaos", help="run the chaos scenarios at long scale; writes tests/chaos/report.md")
    _chaos_arguments(chaos)
    chaos.set_defaults(run=_chaos)
    _api_commands.add_parsers(sub)
    return parser


def _chaos_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", choices=("bounded", "long"), default="long",
                        help="long (default): minutes per scenario; bounded: the seconds-long form make test runs")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME",
                        help="run only these scenarios (worker_kills, redis_restart, redis_ride_through, "
                             "redis_failover, api_restarts, callback_chaos, throttling_storm, flood_kills, "
                             "hostile_input, webhook_chaos)")
    parser.add_argument("--out", type=Path, default=None,
                        help="where the report goes (default: tests/chaos/report.md after a whole long run, "
                             "tests/chaos/output/report.md otherwise)")


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options, declared here so parsing needs no import of it (it checks the names itself)."""
    parser.add_argument("--quick", action="store_true", help="small samples: every scenario, about 80 s on 2 cores")
    parser.add_argument("--only", nargs="+", default=[], metavar="NAME",
                        help="run only these scenarios (accept, overhead, e2e, rate, ingest, pending, flood, "
                             "simulator)")
    parser.add_argument("--out", type=Path, default=stack.project_root() / "bench",
                        help="where results.md, results.json and latency.png go (default: bench/)")
    parser.add_argument("--no-wrk", action="store_true", help="use the Python load generator even if wrk is here")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``callq`` script; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        code: int = args.run(settings, args)
    except ConfigError as exc:
        print(f"callq: {exc.message}", file=sys.stderr)
        return 2
    except stack.StackError as exc:
        print(f"callq: {exc.message}", file=sys.stderr)
        return 1
    except CallqAPIError as exc:  # the API's own words: status, stable code and what to do
        print(f"callq: the API answered HTTP {exc.status} {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except CallqClientError as exc:
        print(f"callq: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
