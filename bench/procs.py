"""Child processes of a scenario: started on free loopback ports, all stopped when the scenario ends.

A scenario opens one :class:`Children` as a context manager; everything it spawns (redis-server, uvicorn,
Celery workers) runs in its own session so the whole process group can be signalled, and is stopped on
exit even when the scenario raised. Waits are conditions with deadlines; nothing waits unbounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
MARKER_ENV = "CALLQ_BENCH_RUN"  # every child carries it, so a test can find anything left behind
T = TypeVar("T")


class BenchError(Exception):
    """Raised when a scenario cannot run (a child did not start, a wait ran out); recorded, not fatal."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], T], *, timeout_s: float, what: str, interval_s: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; raise BenchError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)  # polling interval inside a bounded wait


def _rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def tree_rss_mb(pids: list[int]) -> float:
    """Resident memory of these processes and all their descendants, in MiB."""
    todo, seen, total_kb = list(pids), set(), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total_kb += _rss_kb(pid)
        todo.extend(_children_of(pid))
    return total_kb / 1024


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])  # utime + stime


def tree_cpu_s(pids: list[int]) -> float:
    """CPU time (user + system) these processes and all their live descendants have used, in seconds."""
    todo, seen, ticks = list(pids), set(), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        ticks += _cpu_ticks(pid)
        todo.extend(_children_of(pid))
    return ticks / os.sysconf("SC_CLK_TCK")


class Children:
    """Owns a scenario's child processes and scratch directory; ``with`` guarantees they are stopped."""

    def __init__(self, log_dir: Path, run_id: str) -> None:
        self.log_dir = log_dir
        self.run_id = run_id
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="callq-bench-"))
        self._cleanups: list[Callable[[], None]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> Children:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def on_close(self, cleanup: Callable[[], None]) -> None:
        """Run ``cleanup`` when the scenario ends (before the children are stopped)."""
        self._cleanups.append(cleanup)

    def spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` from the project root with this environment plus ``env``; output goes to a log file."""
        # The caller's own CALLQ_* settings (a callback token, another Redis) must not leak into a scenario.
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CALLQ_")}
        full_env = {**inherited, **(env or {}), MARKER_ENV: self.run_id}
        with open(self.log_dir / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, cwd=ROOT, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def check_alive(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            raise BenchError(f"{name} exited with code {proc.returncode}: {self.log_tail(name)}")

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
        """SIGTERM the child's process group, SIGKILL it if it outlives ``timeout_s``."""
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (a stuck shutdown, a pool's children) goes too. Only signalled while a
        # member lives: a live member keeps the group id from being reused by an unrelated process.
        if proc.poll() is None or _group_members(proc.pid):
            _signal_group(proc, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=5)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]

    def close(self) -> None:
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except Exception as exc:  # one failed cleanup must not keep the children running
                print(f"bench: cleanup failed: {exc!r}", file=sys.stderr)
        self._cleanups.clear()
        # Redis goes last: workers and servers shutting down still talk to it (acks, heartbeats), and one
        # that lost it would retry until killed.
        users = [p for name, p in self.procs if not name.startswith("redis")]
        for group in (users, [p for _, p in self.procs if p not in users]):
            for proc in group:
                if proc.poll() is None:
                    _signal_group(proc, signal.SIGTERM)
            for proc in group:
                self.stop(proc)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # --- the processes scenarios need -------------------------------------------------------------------

    def redis(self, name: str = "redis", *, replica_of: str = "") -> str:
        """A private redis-server (no persistence, no eviction) on a free port; its URL once it answers PING (a
        replica of the server at URL ``replica_of``: once it is in sync)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (apt-get install redis-server)")
        port = free_port()
        data = self.tmp / name
        data.mkdir()
        proc = self.spawn(name, [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
                                 "--dir", str(data), "--maxmemory-policy", "noeviction",
                                 *(("--replicaof", HOST, str(urlsplit(replica_of).port)) if replica_of else ())])
        url = f"redis://{HOST}:{port}/0"
        client = redis.Redis.from_url(url)

        def pings() -> bool:
            self.check_alive(name, proc)
            try:
                return bool(client.ping()) and (
                    not replica_of or client.info("replication").get("master_link_status") == "up")
            except redis.ConnectionError:
                return False

        wait_for(pings, timeout_s=10, what="redis-server to answer PING")
        client.close()
        return url

    def uvicorn(self, name: str, app: str, env: Mapping[str, str], *, health: str = "/healthz",
                wait: bool = True, port: int | None = None) -> Server:
        """Serve ``module:factory`` with uvicorn in its own process (one worker, no access log)."""
        port = port or free_port()
        proc = self.spawn(name, [sys.executable, "-m", "uvicorn", "--factory", app, "--host", HOST, "--port",
                                 str(port), "--log-level", "warning", "--no-access-log"], env)
        server = Server(name, f"http://{HOST}:{port}", port, proc, health, self)
        if wait:
            server.ready()
        return server

    def celery_workers(self, prefix: str, app: str, env: Mapping[str, str], *, count: int, concurrency: int,
                       queue: str, live: Callable[[], int]) -> list[subprocess.Popen[bytes]]:
        """Start ``count`` threads-pool workers together; return once ``live()`` counts them all."""
        before = live()
        procs = []
        for i in range(count):
            name = f"{prefix}{i + 1}"
            procs.append(self.spawn(name, [
                sys.executable, "-m", "celery", "-A", app, "worker", "-P", "threads", "-c", str(concurrency),
                "-Q", f"{queue},{queue}.steps", "-n", f"{name}@%h", "--without-mingle", "--without-gossip",
                "--loglevel", "WARNING",
            ], env))

        def all_live() -> bool:
            for i, proc in enumerate(procs):
                self.check_alive(f"{prefix}{i + 1}", proc)
            return live() >= before + count

        wait_for(all_live, timeout_s=60, what=f"{count} {prefix} worker(s) to report in", interval_s=0.05)
        return procs


class Server:
    """A uvicorn child: its URL, and a bounded wait for its health endpoint."""

    def __init__(self, name: str, url: str, port: int, proc: subprocess.Popen[bytes], health: str,
                 owner: Children) -> None:
        self.name, self.url, self.port, self.proc, self._health, self._owner = name, url, port, proc, health, owner

    def ready(self, timeout_s: float = 30) -> Server:
        wait_http(self.url + self._health, lambda: self._owner.check_alive(self.name, self.proc),
                  what=f"{self.name} to answer {self._health}", timeout_s=timeout_s)
        return self

    def stop(self) -> None:
        self._owner.stop(self.proc)


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry.name))
    return members


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own session (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def wait_http(url: str, check: Callable[[], None], *, what: str, timeout_s: float = 30) -> None:
    """Wait until GET ``url`` answers below 500, calling ``check`` (raises if the server died) meanwhile."""
    with httpx.Client(trust_env=False, timeout=2) as client:
        def up() -> bool:
            check()
            try:
                return client.get(url).status_code < 500
            except httpx.TransportError:
                return False

        wait_for(up, timeout_s=timeout_s, what=what, interval_s=0.05)
