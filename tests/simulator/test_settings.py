"""Settings from the environment, refusing to start without a key, ``python -m simulator``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from simharness import KEY

from simulator.settings import DEFAULT_ISSUER, DEFAULT_RESOURCE_ID, ConfigError, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_from_env() -> None:
    settings = Settings.from_env({"CALLQ_ACS_ACCESS_KEY": KEY})
    assert (settings.host, settings.port) == ("127.0.0.1", 8089)
    assert settings.resource_id == DEFAULT_RESOURCE_ID
    assert settings.issuer == DEFAULT_ISSUER
    assert settings.public_url == "http://127.0.0.1:8089"
    assert KEY not in repr(settings)


def test_every_variable_is_read() -> None:
    settings = Settings.from_env({
        "CALLQ_ACS_ACCESS_KEY": KEY, "CALLQ_SIM_HOST": "0.0.0.0", "CALLQ_SIM_PORT": "9000",
        "CALLQ_ACS_RESOURCE_ID": "res-1", "CALLQ_SIM_PUBLIC_URL": "http://sim.test:9000/", "CALLQ_SIM_ISSUER": "iss",
        "CALLQ_LOG_FORMAT": "json",
    })
    assert (settings.host, settings.port, settings.resource_id, settings.issuer) == ("0.0.0.0", 9000, "res-1", "iss")
    assert settings.log_format == "json"
    assert settings.public_url == "http://sim.test:9000"


@pytest.mark.parametrize(("env", "variable"), [
    ({}, "CALLQ_ACS_ACCESS_KEY"),
    ({"CALLQ_ACS_ACCESS_KEY": "not base64!"}, "CALLQ_ACS_ACCESS_KEY"),
    ({"CALLQ_ACS_ACCESS_KEY": KEY, "CALLQ_SIM_PORT": "eighty"}, "CALLQ_SIM_PORT"),
    ({"CALLQ_ACS_ACCESS_KEY": KEY, "CALLQ_LOG_FORMAT": "xml"}, "CALLQ_LOG_FORMAT"),
])
def test_bad_configuration_names_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(env)


def test_module_refuses_to_start_without_key() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CALLQ_ACS_ACCESS_KEY"}
    done = subprocess.run([sys.executable, "-m", "simulator"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2
    assert "CALLQ_ACS_ACCESS_KEY is empty" in done.stderr
