"""tasks.versions: callq refuses to start on a kombu or Celery minor whose internals it was not tested with."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import kombu
import pytest

from tasks.versions import minor, require_tested
from workers.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_kombu_and_celery_are_the_tested_minors() -> None:
    require_tested("kombu")
    require_tested("celery")


@pytest.mark.parametrize("version", ["5.7.0", "5.7.3", "5.7.1rc2"])
def test_any_patch_release_of_the_tested_minor_is_accepted(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(kombu, "__version__", version)
    require_tested("kombu")


def test_kombu_5_6_is_refused_with_the_range_and_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kombu, "__version__", "5.6.0")
    with pytest.raises(ConfigError) as raised:
        require_tested("kombu")
    assert str(raised.value) == (
        "callq needs kombu >=5.7,<5.8 (its Redis transport internals are used by tasks/broker.py); found 5.6.0")
    assert raised.value.code == "unsupported_dependency"


@pytest.mark.parametrize("version", ["5.8.0", "6.0.0", "4.7.0", "unknown"])
def test_other_kombu_minors_are_refused(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setattr(kombu, "__version__", version)
    with pytest.raises(ConfigError, match=f"found {version}$"):
        require_tested("kombu")


def test_an_untested_celery_minor_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    celery = importlib.import_module("celery")  # (Celery ships no type information)
    monkeypatch.setattr(celery, "__version__", "5.6.3")
    with pytest.raises(ConfigError, match=r"celery >=5\.7,<5\.8 \(its message builder .*\); found 5\.6\.3"):
        require_tested("celery")


def test_minor() -> None:
    assert minor("5.7.0") == (5, 7)
    assert minor("5.10.0b1") == (5, 10)
    assert minor("garbage") is None


def test_the_celery_app_module_does_not_load_on_kombu_5_6() -> None:
    # What `celery -A tasks.app worker` (and the API, beat, Flower) import first: a fresh interpreter, because the
    # check runs once, when tasks.broker is first imported.
    code = "import kombu; kombu.__version__ = '5.6.0'; import tasks.app"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert ("ConfigError: callq needs kombu >=5.7,<5.8 (its Redis transport internals are used by tasks/broker.py); "
            "found 5.6.0") in done.stderr
