"""compose.yaml is valid for docker-compose (checked without a Docker engine) and refuses to run without secrets."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "CALLQ_API_KEYS": "ops:0123456789abcdef0123",
    "CALLQ_ACS_ACCESS_KEY": "Y2FsbHEtdGVzdC1hY2Nlc3Mta2V5LTMyLWJ5dGVzISE=",
    "CALLQ_FLOWER_PASSWORD": "compose-test-password",
}


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `make test` (it installs it) or "
                    "`apt-get install -y --no-install-recommends docker-compose`")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CALLQ_", "FLOWER_"))}
    return subprocess.run([binary, "-f", str(ROOT / "compose.yaml"), *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def test_compose_file_is_valid_with_every_service() -> None:
    result = _compose("config", env=SECRETS)
    assert result.returncode == 0, result.stderr
    services = _compose("config", "--services", env=SECRETS)
    assert services.returncode == 0, services.stderr
    assert set(services.stdout.split()) == {"redis", "simulator", "api", "worker", "beat", "flower"}


def test_compose_passes_flower_credentials_in_the_environment() -> None:
    config = _compose("config", env=SECRETS).stdout
    assert "FLOWER_BASIC_AUTH: admin:compose-test-password" in config
    assert "--basic-auth" not in config
    assert "CALLQ_REDIS_URL: redis://redis:6379/0" in config
    assert "condition: service_healthy" in config


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_a_secret(missing: str) -> None:
    result = _compose("config", env={k: v for k, v in SECRETS.items() if k != missing})
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr
