"""The lock files, pyproject.toml's pins and tasks/versions.py agree; make, CI and the image install from the locks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from tasks.versions import TESTED

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTIONS = {"FROM", "ENV", "WORKDIR", "COPY", "ADD", "RUN", "USER", "EXPOSE", "CMD", "ENTRYPOINT", "ARG",
                "LABEL", "HEALTHCHECK", "VOLUME", "STOPSIGNAL", "SHELL", "ONBUILD"}


def pins(name: str) -> dict[str, str]:
    """``package: version`` of every ``package==version`` line of a pip-compile output."""
    found = {}
    for line in (ROOT / name).read_text().splitlines():
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[2]
    return found


def requirement(name: str) -> str:
    """The requirement of ``name`` among pyproject.toml's runtime dependencies, without its comment or extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for spec in project["dependencies"]:
        if re.match(rf"{name}(\[|>|=|<|$)", spec):
            return re.sub(r"\[.*?\]", "", spec)
    raise AssertionError(f"{name} is not a dependency")


@pytest.mark.parametrize("name", sorted(TESTED))
def test_pyproject_and_both_locks_pin_the_minor_tasks_versions_accepts(name: str) -> None:
    (major, minor), _ = TESTED[name]
    assert requirement(name) == f"{name}>={major}.{minor},<{major}.{minor + 1}"
    for lock in ("requirements.lock", "requirements-runtime.lock"):
        assert pins(lock)[name].startswith(f"{major}.{minor}."), lock


def test_the_runtime_lock_is_the_dev_lock_without_the_dev_tools() -> None:
    runtime, everything = pins("requirements-runtime.lock"), pins("requirements.lock")
    assert {name: everything.get(name) for name in runtime} == runtime
    for tool in ("pytest", "mypy", "ruff", "pip-tools"):
        assert tool in everything and tool not in runtime
    for needed in ("tzdata", "jinja2", "kombu", "celery"):
        assert needed in runtime


def test_make_installs_from_the_lock_and_reinstalls_when_it_changes() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): \$\(LOCK\)", makefile, re.M)
    assert "pip install --disable-pip-version-check -r $(LOCK)" in makefile
    assert "--no-deps -e ." in makefile
    test = re.search(r"^test:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert test is not None
    steps = [line.strip().removeprefix("$(MAKE) --no-print-directory ") for line in test[1].splitlines()]
    # Everything but the quick-bench smoke run (make bench runs it): the suite stays within its time budget.
    assert steps == ["lint", "typecheck", "lint-lua", '$(VENV)/bin/pytest -m "not bench_smoke"']


def test_the_image_installs_the_runtime_lock_before_the_code() -> None:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(maxsplit=1) for line in lines if line.strip() and not line.startswith("#")]
    assert {word for word, *_ in instructions} <= INSTRUCTIONS
    steps = [" ".join(parts) for parts in instructions]
    lock = steps.index("RUN pip install -r requirements-runtime.lock")
    assert steps.index("COPY requirements-runtime.lock ./") < lock < steps.index("COPY . .")
    assert any(step.startswith("RUN pip install --no-deps .") for step in steps[lock:])
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert not [line for line in ignored if "requirements" in line or "lock" in line]
