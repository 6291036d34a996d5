"""callq behind Sentinel, for real: primary + replica + three Sentinels, the API, a worker and beat.

CALLQ_REDIS_URL's host does not resolve: everything callq reaches, it reaches through the Sentinels.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from callq.demo import BEAT_LOCK_KEY
from tests.conftest import wait_until
from tests.integration.conftest import ROOT, ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from tests.sentinel import SentinelSet, sentinel_set  # noqa: F401  (fixture)
from workers import keys


@pytest.fixture
def stack_env(stack_env: dict[str, str], sentinel_set: SentinelSet,  # noqa: F811
              monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in sentinel_set.env.items():
        monkeypatch.setenv(name, value)
    return {**stack_env, **sentinel_set.env}


@pytest.fixture
def start_worker(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """One Celery worker (conftest's own counts workers through CALLQ_REDIS_URL, which is not reachable here)."""
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / "worker-w1.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-P", "threads", "-c", "4",
                 "-Q", "callq,callq.steps", "-n", "w1@%h", "--without-mingle", "--without-gossip",
                 "--loglevel", "INFO"],
                cwd=ROOT, env={**os.environ, **stack_env}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture
def start_beat(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> subprocess.Popen[bytes]:
        with open(tmp_path / "beat.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "celery", "-A", "tasks.app", "beat", "-S",
                                     "redbeat.RedBeatScheduler", "--loglevel", "INFO"],
                                    cwd=ROOT, env={**os.environ, **stack_env}, stdout=log, stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=15)


def _workers_alive(s: SentinelSet) -> int:
    return int(s.client(s.primary()).zcard(keys.WORKERS_ZSET))


def test_a_command_runs_end_to_end_through_sentinel(sentinel_set: SentinelSet,  # noqa: F811
                                                    simulator: ThreadServer, api: httpx.Client,
                                                    start_worker: Callable[[], subprocess.Popen[bytes]],
                                                    start_beat: Callable[[], subprocess.Popen[bytes]],
                                                    tmp_path: Path) -> None:
    worker = start_worker()
    beat = start_beat()
    wait_until(lambda: _workers_alive(sentinel_set) or worker.poll() is not None, timeout_s=30, what="the worker")
    assert worker.poll() is None, (tmp_path / "worker-w1.log").read_text()

    accepted = post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")
    assert accepted.status_code == 202, accepted.text
    connect = wait(api, accepted.json()["id"])
    assert connect["status"] == "succeeded", connect

    # Beat took redbeat's lock on the primary, through the Sentinels too.
    primary = sentinel_set.client(sentinel_set.primary_port)
    wait_until(lambda: primary.exists(BEAT_LOCK_KEY) or beat.poll() is not None, timeout_s=30, what="beat's lock")
    assert beat.poll() is None, (tmp_path / "beat.log").read_text()
    ready = api.get("/readyz")
    assert ready.status_code == 200, ready.text


def test_after_a_failover_commands_flow_without_restarting_anything(
        sentinel_set: SentinelSet, simulator: ThreadServer, api: httpx.Client,  # noqa: F811
        start_worker: Callable[[], subprocess.Popen[bytes]], tmp_path: Path) -> None:
    worker = start_worker()
    wait_until(lambda: _workers_alive(sentinel_set) or worker.poll() is not None, timeout_s=30, what="the worker")
    first = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
    assert first["status"] == "succeeded", first

    # A Sentinel-driven failover: the old primary becomes a replica (read-only) and the replica is promoted.
    sentinel_set.client(sentinel_set.sentinel_ports[0]).execute_command("SENTINEL", "FAILOVER", "callq")
    wait_until(lambda: sentinel_set.primary() == sentinel_set.replica_port, timeout_s=30, what="the promotion")
    wait_until(lambda: sentinel_set.client(sentinel_set.replica_port).info("replication")["role"] == "master",
               timeout_s=30, what="the replica to take the primary's role")

    def accepted() -> httpx.Response | None:
        resp = post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")
        assert resp.status_code in (202, 503), resp.text  # never a 500 while the roles change
        return resp if resp.status_code == 202 else None

    second = wait_until(accepted, timeout_s=30, what="an accept on the new primary", interval_s=0.2)
    done = wait_until(lambda: (c := wait(api, second.json()["id"]))["status"] in ("succeeded", "failed") and c,
                      timeout_s=60, what="the command after the failover")
    assert done["status"] == "succeeded", done
    assert worker.poll() is None, (tmp_path / "worker-w1.log").read_text()
