"""One module per scenario, each with ``run(ctx) -> ScenarioResult``; ``bench.suite`` runs them in order."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.procs import Children


@dataclass(frozen=True)
class Context:
    """What every scenario gets: the mode, where its children log, and the run's marker."""

    quick: bool
    log_dir: Path
    run_id: str
    prefer_wrk: bool = True

    def children(self, scenario: str) -> Children:
        """The scenario's process owner; use it as a context manager so everything is stopped."""
        return Children(self.log_dir / scenario, self.run_id)

    def pick(self, full: float, quick: float) -> float:
        return quick if self.quick else full
