"""A real Sentinel set-up for tests: a primary, one replica and three ``redis-server --sentinel``, on free ports."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
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
                 "--save", "", "--appendonly", "no"],
                stdout=log, stderr=subprocess.STDOUT)

    def stop(self, port: int) -> None:
        proc = self.procs.pop(port)
        proc.terminate()
        proc.wait(timeout=10)

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
        wait_until(lambda: s.answers(s.replica_port) and
                   s.client(s.replica_port).info("replication").get("master_link_status") == "up",
                   timeout_s=20, what="the replica in sync")
    except BaseException:
        s.close()
        raise
    return s


def start_sentinel_set() -> SentinelSet:
    """Start and wait: the replica in sync, every Sentinel seeing the replica and the other two Sentinels."""
    s = SentinelSet(Path(tempfile.mkdtemp(prefix="callq-sentinel-")), free_port(), free_port(),
                    [free_port() for _ in range(3)])
    try:
        s.start(s.primary_port)
        wait_until(lambda: s.answers(s.primary_port), timeout_s=10, what="the primary")
        s.start(s.replica_port, "--replicaof", "127.0.0.1", str(s.primary_port))
        wait_until(lambda: s.answers(s.replica_port) and
                   s.client(s.replica_port).info("replication").get("master_link_status") == "up",
                   timeout_s=20, what="the replica in sync")
        for port in s.sentinel_ports:
            conf = s.directory / f"sentinel-{port}.conf"  # Sentinel rewrites its file: one each
            conf.write_text(f"sentinel monitor {MASTER} 127.0.0.1 {s.primary_port} 2\n"
                            f"sentinel down-after-milliseconds {MASTER} 1000\n"
                            f"sentinel failover-timeout {MASTER} 5000\n")
            s.start(port, str(conf), "--sentinel")

        def all_see_everyone() -> bool:
            for port in s.sentinel_ports:
                try:
                    master = s.client(port).sentinel_master(MASTER)
                except redis.RedisError:
                    return False
                if int(master.get("num-slaves", 0)) < 1 or int(master.get("num-other-sentinels", 0)) < 2:
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
