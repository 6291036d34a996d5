"""A real Sentinel set-up for tests: a primary, one replica and three ``redis-server --sentinel``, on free ports.

The failover chaos test (tests/chaos/test_redis_failover.py) also uses it with the replica replicating through a
proxy that delays the stream (``replica_via``), with no Sentinels at all (the managed-endpoint shape), and with its
own Sentinel timings.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port, wait_until

MASTER = "callq"


@dataclass
class SentinelSet:
    """The processes and their ports; ``env`` is what points callq at it (CALLQ_REDIS_URL's host is not used)."""

    directory: Path
    primary_port: int
    replica_port: int
    sentinel_ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        return {"CALLQ_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
                "CALLQ_REDIS_SENTINEL_MASTER": MASTER,
                "CALLQ_REDIS_URL": "redis://sentinel-names-the-primary.invalid:1/0"}

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=2)

    def primary(self) -> int:
        """The primary's port, as the first Sentinel answers it."""
        addr = self.client(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER)
        return int(addr[1])

    def start(self, port: int, *args: str) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed"
        with (self.directory / f"{port}.log").open("ab") as log:  # the child keeps its own descriptor
            self.procs[port] = subprocess.Popen(
                [binary, *args, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(self.directory),
                 "--save", "", "--appendonly", "no",
                 # A replica's full sync starts at once, not after Redis 7's default 5 s wait for more replicas.
                 *(() if "--sentinel" in args else ("--repl-diskless-sync-delay", "0"))],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.terminate()
        proc.wait(timeout=10)

    def kill(self, port: int) -> None:
        """SIGKILL: the server dies with whatever it had not sent its replica yet."""
        proc = self.procs.pop(port)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def role(self, port: int) -> str:
        """``master`` or ``slave`` as the server itself says (``INFO replication``), or ``down``."""
        try:
            return str(self.client(port).info("replication")["role"])
        except redis.RedisError:
            return "down"

    def acknowledged(self, port: int) -> bool:
        """Whether a write on the primary at ``port`` is acknowledged by a replica (``WAIT 1``, up to 1 s)."""
        try:
            primary = self.client(port)
            primary.set("callq:test:sync-probe", "1")
            return int(primary.execute_command("WAIT", 1, 1000)) >= 1  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return False

    def in_sync(self) -> bool:
        """The replica's link is up and it acknowledges a write. "Up" alone is not enough: after a diskless full
        sync the primary streams nothing more until the replica's first acknowledgement, which its once-a-second
        cron sends, so for up to a second a ``WAIT`` hears from no replica (seen here: 0 of 1 for ~0.5 s)."""
        try:
            up = self.client(self.replica_port).info("replication").get("master_link_status") == "up"
        except redis.RedisError:
            return False
        return up and self.acknowledged(self.primary_port)

    def offset(self, port: int) -> int:
        """How far into the replication stream this server is: a primary's written offset, a replica's received."""
        info = self.client(port).info("replication")
        return int(info["master_repl_offset"] if info["role"] == "master" else info["slave_repl_offset"])

    def answers(self, port: int) -> bool:
        try:
            return bool(self.client(port).ping())
        except redis.ConnectionError:
            return False

    def close(self) -> None:
        for port in list(self.procs):
            self.stop(port)
        shutil.rmtree(self.directory, ignore_errors=True)


def start_pair() -> SentinelSet:
    """A primary and one replica in sync, no Sentinels (for what replication alone does, such as WAIT)."""
    s = SentinelSet(Path(tempfile.mkdtemp(prefix="callq-pair-")), free_port(), free_port(), [])
    try:
        s.start(s.primary_port)
        wait_until(lambda: s.answers(s.primary_port), timeout_s=10, what="the primary")
        s.start(s.replica_port, "--replicaof", "127.0.0.1", str(s.primary_port))
        wait_until(lambda: s.in_sync(), timeout_s=20, what="the replica in sync")
    except BaseException:
        s.close()
        raise
    return s


def start_sentinel_set(*, sentinels: int = 3, replica_via: Callable[[int], int] | None = None,
                       down_after_ms: int = 1000, failover_timeout_ms: int = 5000) -> SentinelSet:
    """Start and wait: the replica in sync, every Sentinel seeing the replica and the other Sentinels.

    ``replica_via``: given the primary's port, the port the replica should replicate from instead (a proxy in
    front of the primary); ``sentinels``: 0 for a primary and replica alone.
    """
    s = SentinelSet(Path(tempfile.mkdtemp(prefix="callq-sentinel-")), free_port(), free_port(),
                    [free_port() for _ in range(sentinels)])
    try:
        s.start(s.primary_port)
        wait_until(lambda: s.answers(s.primary_port), timeout_s=10, what="the primary")
        upstream = replica_via(s.primary_port) if replica_via else s.primary_port
        s.start(s.replica_port, "--replicaof", "127.0.0.1", str(upstream))
        wait_until(lambda: s.in_sync(), timeout_s=20, what="the replica in sync")
        for port in s.sentinel_ports:
            conf = s.directory / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
            conf.write_text(f"sentinel monitor {MASTER} 127.0.0.1 {s.primary_port} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} {down_after_ms}\n"
                            f"sentinel failover-timeout {MASTER} {failover_timeout_ms}\n")
            s.start(port, str(conf), "--sentinel")

        def all_see_everyone() -> bool:
            for port in s.sentinel_ports:
                try:
                    master = s.client(port).sentinel_master(MASTER)
                except redis.RedisError:
                    return False
                if int(master.get("num-slaves", 0)) < 1 or \
                        int(master.get("num-other-sentinels", 0)) < len(s.sentinel_ports) - 1:
                    return False
            return True

        wait_until(all_see_everyone, timeout_s=30, what="the Sentinels to find the replica and each other")
    except BaseException:
        s.close()
        raise
    return s


@pytest.fixture
def sentinel_set() -> object:
    """A fresh Sentinel set-up for one test (a failover changes it for good)."""
    s = start_sentinel_set()
    yield s
    s.close()
