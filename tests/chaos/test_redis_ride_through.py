"""A worker and the API ride through Redis going read-only and Redis gone for a while, without exiting or 500s.

Read-only: the server the worker and API use becomes a replica (``REPLICAOF`` an address with nothing behind it:
read-only, data kept), as a managed endpoint pointing at a replica before the promotion does. Gone: redis-server
stopped until the worker has retried its broker connection for at least OUTAGE_S (30 s at long scale, `callq
chaos`; 6 s in `make test`; its log says so), then started on
the same port and data. Both times: the API answers 503 with a stable code, and the worker, never restarted,
runs a command afterwards.
"""

from __future__ import annotations

import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.chaos.harness import AofRedis
from tests.chaos.scale import pick
from tests.conftest import TEST_API_KEY, free_port, wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from workers import keys

OUTAGE_S = pick(bounded=6.0, long=30.0)  # the worker's retry waits sum to this (Celery's 2, 4, 6 … s)


@pytest.fixture
def stack(aof: AofRedis, simulator: ThreadServer, stack_env: dict[str, str], start_worker: Callable,  # type: ignore[type-arg]
          monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    env = {**stack_env, "CALLQ_REDIS_URL": aof.url}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    api_server = ThreadServer("api.app:create_app", env, int(env["CALLQ_API_PORT"])).start()
    worker = start_worker(extra_env={"CALLQ_REDIS_URL": aof.url}, wait=False)
    wait_until(lambda: redis.Redis.from_url(aof.url).zcard(keys.WORKERS_ZSET) or worker.poll() is not None,
               timeout_s=30, what="the worker")
    assert worker.poll() is None, (tmp_path / "worker-w1.log").read_text()
    with httpx.Client(base_url=api_server.url, timeout=30, headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as api:
        yield api, worker
    api_server.stop()


def _connect_succeeds(api: httpx.Client, simulator: ThreadServer) -> None:
    accepted = post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")
    assert accepted.status_code == 202, accepted.text
    done = wait_until(lambda: (c := wait(api, accepted.json()["id"]))["status"] in ("succeeded", "failed") and c,
                      timeout_s=60, what="the command")
    assert done["status"] == "succeeded", done


def _unavailable(resp: httpx.Response) -> bool:
    assert resp.status_code in (202, 503), resp.text  # never a 500
    return resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable"


def _log(tmp_path: Path) -> str:
    return (tmp_path / "worker-w1.log").read_text(errors="replace")


def test_worker_and_api_ride_through_a_read_only_window(aof: AofRedis, simulator: ThreadServer, tmp_path: Path,
                                                       stack: tuple[httpx.Client, subprocess.Popen[bytes]]) -> None:
    api, worker = stack
    _connect_succeeds(api, simulator)
    admin = redis.Redis.from_url(aof.url)
    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # nothing listens there: read-only, data kept
    try:
        wait_until(lambda: _unavailable(post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")), timeout_s=30,
                   what="the API to answer 503 while Redis is read-only")
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("read-only"), ready.text
        wait_until(lambda: "ReadOnlyError" in _log(tmp_path) or worker.poll() is not None, timeout_s=60,
                   what="the worker to meet the read-only Redis")
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")
    assert worker.poll() is None, _log(tmp_path)
    _connect_succeeds(api, simulator)
    assert worker.poll() is None, _log(tmp_path)


def test_worker_and_api_ride_through_an_outage(aof: AofRedis, simulator: ThreadServer, tmp_path: Path,
                                                 stack: tuple[httpx.Client, subprocess.Popen[bytes]]) -> None:
    api, worker = stack
    _connect_succeeds(api, simulator)
    aof.stop(signal.SIGTERM)
    try:
        assert _unavailable(post(api, "/v1/rooms/any-room/connect"))
        assert api.get("/readyz").status_code == 503

        def retried_for_s() -> float:
            # Celery's "Trying again in N seconds" lines: their sum is how long the worker has been retrying.
            return sum(float(s) for s in re.findall(r"Trying again in ([0-9.]+) seconds", _log(tmp_path)))

        wait_until(lambda: retried_for_s() >= OUTAGE_S or worker.poll() is not None, timeout_s=OUTAGE_S * 4,
                   what=f"the worker to retry for {OUTAGE_S:.0f} s", interval_s=0.5)
        assert worker.poll() is None, _log(tmp_path)
    finally:
        aof.start()
    _connect_succeeds(api, simulator)
    assert worker.poll() is None, _log(tmp_path)
