"""compose.yaml, and compose.ha.yaml laid over it, are valid for docker-compose (checked without a Docker engine) and
refuse to run without secrets; the HA file points every callq process at the Sentinels."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {
    "CALLQ_API_KEYS": "ops:0123456789abcdef0123",
    "CALLQ_ACS_ACCESS_KEY": "Y2FsbHEtdGVzdC1hY2Nlc3Mta2V5LTMyLWJ5dGVzISE=",
    "CALLQ_FLOWER_PASSWORD": "compose-test-password",
}


PLAIN = ("compose.yaml",)
HA = ("compose.yaml", "compose.ha.yaml")
CALLQ_PROCESSES = {"api", "worker", "beat", "flower"}
SENTINELS = {"sentinel-1", "sentinel-2", "sentinel-3"}


def _compose(*args: str, env: dict[str, str], files: tuple[str, ...] = PLAIN) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: run `make test` (it installs it) or "
                    "`apt-get install -y --no-install-recommends docker-compose`")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CALLQ_", "FLOWER_"))}
    chosen = [arg for name in files for arg in ("-f", str(ROOT / name))]
    return subprocess.run([binary, *chosen, *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def _services(files: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    result = _compose("config", env=SECRETS, files=files)
    assert result.returncode == 0, result.stderr
    services: dict[str, dict[str, Any]] = yaml.safe_load(result.stdout)["services"]
    return services


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


@pytest.mark.parametrize("files", [PLAIN, HA], ids=["plain", "ha"])
@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_refuses_to_run_without_a_secret(missing: str, files: tuple[str, ...]) -> None:
    result = _compose("config", env={k: v for k, v in SECRETS.items() if k != missing}, files=files)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


def test_the_ha_file_adds_a_replica_and_three_sentinels() -> None:
    services = _services(HA)
    assert set(services) == set(_services(PLAIN)) | {"redis-replica"} | SENTINELS
    assert services["redis-replica"]["command"][1:4] == ["--replicaof", "redis", "6379"]
    for name in SENTINELS:
        script = " ".join(services[name]["command"])
        assert "sentinel monitor callq redis 6379 2" in script, script  # a quorum of two of the three
        assert "--sentinel" in script


def test_the_ha_file_points_every_callq_process_at_the_sentinels() -> None:
    services, plain = _services(HA), _services(PLAIN)
    for name in CALLQ_PROCESSES:
        env = services[name]["environment"]
        assert env["CALLQ_REDIS_SENTINELS"] == "sentinel-1:26379,sentinel-2:26379,sentinel-3:26379", name
        assert env["CALLQ_REDIS_SENTINEL_MASTER"] == "callq", name
        assert env["CALLQ_REDIS_MIN_REPLICAS"] == "1", name  # acknowledged means replicated, by default here
        assert SENTINELS <= set(services[name]["depends_on"]), name
        # Everything else is compose.yaml's: the HA file only adds.
        assert {k: v for k, v in env.items() if not k.startswith("CALLQ_REDIS_") or k == "CALLQ_REDIS_URL"} == \
            plain[name]["environment"], name
    # Without the HA file nothing mentions Sentinel.
    assert not any("CALLQ_REDIS_SENTINELS" in s.get("environment", {}) for s in plain.values())
