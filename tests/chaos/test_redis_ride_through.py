"""A worker and the API ride through Redis going read-only and Redis gone for a while, without exiting or 500s.

Read-only: the server the worker and API use becomes a replica (``REPLICAOF`` an address with nothing behind it:
read-only, data kept), as a managed endpoint pointing at a replica before the promotion does. Gone: redis-server
stopped for OUTAGE_S by the clock (30 s at long scale, `callq chaos`; 6 s in `make test`) with the worker retrying
its broker connection all along (its log says so), then started on the same port and data. (The outage used to
end once the worker's announced retry waits summed to OUTAGE_S; Celery announces each wait before it waits, so
the outage lasted one wait less: about 20 s of the 30.) Both times: the API answers 503 with a stable code, and
the worker, never restarted, runs a command afterwards. Both record their figures in the chaos report (503s
answered, how long Redis was away, whether the worker exited), so the long report shows the read-only window and
the 30 s outage next to the failover runs (test_redis_failover.py).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.chaos.harness import AofRedis
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.conftest import TEST_API_KEY, free_port, wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from workers import keys

OUTAGE_S = pick(bounded=6.0, long=30.0)  # how long Redis stays away (the worker retries after 2, 4, 6 … s)


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
    """A connect accepted and succeeded (asserted: a 503 here is a failure, not the window under test)."""
    accepted = post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")
    assert accepted.status_code == 202, accepted.text
    done = wait_until(lambda: (c := wait(api, accepted.json()["id"]))["status"] in ("succeeded", "failed") and c,
                      timeout_s=60, what="the command")
    assert done["status"] == "succeeded", done


class Answers:
    """The API's answers while Redis cannot take writes: every one a 202 or a 503 ``unavailable``, counted."""

    def __init__(self) -> None:
        self.unavailable = 0
        self.accepted = 0  # 202s in the window (a request that reached Redis before it changed): not followed

    def unavailable_now(self, resp: httpx.Response) -> bool:
        assert resp.status_code in (202, 503), resp.text  # never a 500
        if resp.status_code == 503 and resp.json()["error"]["code"] == "unavailable":
            self.unavailable += 1
            return True
        self.accepted += resp.status_code == 202
        return False

    def notes(self, worker: subprocess.Popen[bytes]) -> dict[str, int | str]:
        return {"503 unavailable": self.unavailable, "202 in the window (not followed)": self.accepted,
                "worker exited": "yes" if worker.poll() is not None else "no"}


def _retried_for_s(tmp_path: Path) -> float:
    # Celery's "Trying again in N seconds" lines, each written before its wait: their sum runs one wait ahead.
    return sum(float(s) for s in re.findall(r"Trying again in ([0-9.]+) seconds", _log(tmp_path)))


def _log(tmp_path: Path) -> str:
    return (tmp_path / "worker-w1.log").read_text(errors="replace")


def test_worker_and_api_ride_through_a_read_only_window(aof: AofRedis, simulator: ThreadServer, tmp_path: Path,
                                                       stack: tuple[httpx.Client, subprocess.Popen[bytes]],
                                                       record_figures: Callable[[Figures], None]) -> None:
    api, worker = stack
    _connect_succeeds(api, simulator)
    answers = Answers()
    admin = redis.Redis.from_url(aof.url)
    admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))  # nothing listens there: read-only, data kept
    try:
        wait_until(lambda: answers.unavailable_now(post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")),
                   timeout_s=30, what="the API to answer 503 while Redis is read-only")
        ready = api.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("read-only"), ready.text
        wait_until(lambda: "ReadOnlyError" in _log(tmp_path) or worker.poll() is not None, timeout_s=60,
                   what="the worker to meet the read-only Redis")
    finally:
        admin.execute_command("REPLICAOF", "NO", "ONE")
    exited_in_window = worker.poll() is not None
    if not exited_in_window:
        _connect_succeeds(api, simulator)  # the figures below are recorded only once both connects succeeded
    record_figures(Figures(
        "Redis read-only window", "1 worker, the API; the Redis they use turned replica (REPLICAOF an address "
        "with nothing behind it: read-only, data kept) until the worker has met it, then primary again; a "
        "connect before and one after", commands=2 - exited_in_window, faults="Redis read-only", lost=0,
        duplicated=0, http_5xx=answers.unavailable, notes={**answers.notes(worker), "/readyz": "503 read-only"}))
    assert not exited_in_window, _log(tmp_path)
    assert worker.poll() is None, _log(tmp_path)


def test_worker_and_api_ride_through_an_outage(aof: AofRedis, simulator: ThreadServer, tmp_path: Path,
                                                 stack: tuple[httpx.Client, subprocess.Popen[bytes]],
                                                 record_figures: Callable[[Figures], None]) -> None:
    api, worker = stack
    _connect_succeeds(api, simulator)
    answers = Answers()
    aof.stop(signal.SIGTERM)
    stopped = time.monotonic()
    try:
        assert answers.unavailable_now(post(api, "/v1/rooms/any-room/connect"))
        assert api.get("/readyz").status_code == 503
        # The fault's length is the point here: Redis stays away OUTAGE_S by the clock (or until the worker exits).
        wait_until(lambda: time.monotonic() - stopped >= OUTAGE_S or worker.poll() is not None,
                   timeout_s=OUTAGE_S * 2, what=f"Redis to be away {OUTAGE_S:.0f} s", interval_s=0.5)
        assert _retried_for_s(tmp_path) > 0, "the worker never noticed the outage: " + _log(tmp_path)
    finally:
        aof.start()
    outage_s = time.monotonic() - stopped
    exited_in_outage = worker.poll() is not None
    if not exited_in_outage:
        _connect_succeeds(api, simulator)  # as above
    record_figures(Figures(
        "Redis outage", f"1 worker, the API; redis-server stopped for {OUTAGE_S:.0f} s (the worker retrying its broker "
        "connection), then started on the same port and data; a connect before and one after",
        commands=2 - exited_in_outage, faults=f"Redis down {outage_s:.0f} s", lost=0, duplicated=0,
        http_5xx=answers.unavailable,
        notes={**answers.notes(worker), "worker's announced retry waits": f"{_retried_for_s(tmp_path):.0f} s"}))
    assert not exited_in_outage, _log(tmp_path)
    assert worker.poll() is None, _log(tmp_path)
