"""The chaos suite reuses the integration fixtures (real Redis, simulator, API, worker processes), and collects
every scenario's figures into one report, written when the session ends (see tests/chaos/scale.py for where)."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.chaos.harness import AofRedis
from tests.chaos.report import Figures, Report
from tests.chaos.scale import report_path, scale
from tests.integration.conftest import (  # noqa: F401 - fixtures are registered by import
    api,
    api_server,
    simulator,
    stack_env,
    stack_settings,
    start_worker,
)

REPORT = pytest.StashKey[Report]()
WRITTEN = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[REPORT] = Report(scale=scale())


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> Callable[[Figures], None]:
    """Add this test's figures to the session's chaos report."""
    report = request.config.stash[REPORT]
    return lambda figures: report.record(request.node.nodeid, figures)


@pytest.fixture
def aof(tmp_path: Path) -> Iterator[AofRedis]:
    server = AofRedis(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop(signal.SIGTERM)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                         pytest.TestReport]:
    report = yield
    # A test's outcome is its call's; a set-up that failed or skipped, or a teardown that failed, overrides it.
    if report.when == "call" or (report.when == "setup" and not report.passed) or \
            (report.when == "teardown" and report.failed):
        item.config.stash[REPORT].finished(item.nodeid, report.outcome, report.duration)
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    chaos = session.config.stash.get(REPORT, None)
    if chaos is None or not (chaos.rows or chaos.outcomes):
        return
    path = report_path()
    chaos.write(path, command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    session.config.stash[WRITTEN] = path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if (path := config.stash.get(WRITTEN, None)) is not None:
        terminalreporter.write_line(f"chaos report: {path}")
