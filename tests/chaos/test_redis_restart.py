"""Redis killed (SIGKILL) or stopped (SIGTERM) and restarted under load, AOF with appendfsync everysec.

The trade-off, documented in the README: Redis write()s the AOF before it answers a client, so killing
the *process* loses nothing that was acknowledged; `everysec` only risks the last second on a machine
crash or power loss (`always` closes that at a large throughput cost). The test holds callq to that:
no command whose 202 was returned is lost, and a client retrying with the same Idempotency-Key gets the
original command, never a second one.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import TEST_API_KEY, free_port, wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from workers import keys, ledger


class AofRedis:
    """A redis-server with AOF on, which the test can kill and bring back on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.dir = free_port(), data_dir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run make test"
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                                      "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                                      "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False
        wait_until(up, timeout_s=20, what="redis to come back")

    def stop(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=20)


@pytest.fixture
def aof(tmp_path: Path) -> Iterator[AofRedis]:
    server = AofRedis(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.stop(signal.SIGTERM)


def submit(api_url: str, path: str, key: str, deadline_s: float = 60) -> str:
    """What a well-behaved client does: retry with the same key until callq answers 202."""
    def attempt() -> str | None:
        try:
            resp = httpx.post(f"{api_url}{path}", json={"text": "hold"}, timeout=10,
                              headers={"Authorization": f"Bearer {TEST_API_KEY}", "Idempotency-Key": key})
        except httpx.HTTPError:
            return None
        return resp.json()["id"] if resp.status_code == 202 else None
    return str(wait_until(attempt, timeout_s=deadline_s, what=f"202 for {key}", interval_s=0.2))


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_redis_restart_loses_no_accepted_command(sig: signal.Signals, aof: AofRedis, simulator: ThreadServer,
                                                 stack_env: dict[str, str], start_worker: Callable,  # type: ignore[type-arg]
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    env = {**stack_env, "CALLQ_REDIS_URL": aof.url, "CALLQ_VISIBILITY_TIMEOUT_SECONDS": "6"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    api_server = ThreadServer("api.app:create_app", env, int(env["CALLQ_API_PORT"])).start()
    try:
        start_worker(extra_env=env, wait=False)  # it heartbeats to this test's Redis, not the session's
        wait_until(lambda: redis.Redis.from_url(aof.url).zcard(keys.WORKERS_ZSET), timeout_s=30, what="the worker")
        with httpx.Client(base_url=api_server.url, timeout=30,
                          headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as api:
            calls = [wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
                     ["call_connection_id"] for _ in range(6)]
        accepted: dict[str, str] = {}
        plan = [(f"/v1/calls/{calls[n % len(calls)]}/play", f"k-{n}-{uuid.uuid4().hex[:6]}") for n in range(60)]

        def load() -> None:
            for path, key in plan:
                accepted[key] = submit(api_server.url, path, key)

        loader = threading.Thread(target=load)
        loader.start()
        wait_until(lambda: len(accepted) >= 15, timeout_s=60, what="load to be under way")
        aof.stop(sig)  # mid-load: some requests are in flight, some clients are about to retry
        aof.start()
        loader.join(timeout=180)
        assert not loader.is_alive() and len(accepted) == len(plan)

        r = redis.Redis.from_url(aof.url, decode_responses=True)
        # Nothing whose 202 was returned is lost: every command exists and ends.
        try:
            wait_until(lambda: all(r.hget(keys.command_key(c), "status") in ledger.TERMINAL
                                   for c in accepted.values()), timeout_s=120, what="every command to end")
        except AssertionError:
            stuck = [r.hgetall(keys.command_key(c)) for c in accepted.values()
                     if r.hget(keys.command_key(c), "status") not in ledger.TERMINAL]
            raise AssertionError(f"{len(stuck)} accepted commands never ended, e.g. {stuck[:2]}") from None
        # Retrying any key gives the original command back, never a second one.
        for path, key in plan[:20]:
            assert submit(api_server.url, path, key) == accepted[key]
        assert len(set(accepted.values())) == len(plan)
    finally:
        api_server.stop()
