"""``callq up`` as users run it: a real supervisor with redis-server, simulator, API, worker, beat and Flower."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from callq._health import port_is_free
from callq._procs import Console, ManagedProcess
from callq.stack import PID_FILE
from tests.conftest import wait_until
from tests.integration.stackutil import ROOT, free_ports, is_running, running_stack, stack_env, wait_gone
from tests.integration.test_end_to_end import SEED_SCENARIO

pytestmark = pytest.mark.integration


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except FileNotFoundError:
        return []


@pytest.mark.timeout(300)  # start-up and an orderly stop of six processes, on a busy 2-core machine
def test_up_serves_every_component_then_sigterm_stops_all_of_them(tmp_path: Path) -> None:
    with running_stack(tmp_path / "callq") as stack:
        with httpx.Client(timeout=15) as http:
            assert http.get(f"{stack.api_url}/healthz").status_code == 200
            assert http.get(f"{stack.api_url}/readyz").status_code == 200
            assert http.get(f"{stack.sim_url}/_sim/health").status_code == 200
            assert http.get(f"{stack.flower_url}/healthcheck").status_code == 200
            assert http.get(f"{stack.flower_url}/api/workers").status_code == 401
            assert http.get(f"{stack.flower_url}/api/workers", auth=stack.flower_auth).status_code == 200
        children = stack.children()
        commands = [" ".join(_cmdline(pid)) for pid in children]
        for name in ("redis-server", "simulator.app", "api.app", "worker", "beat", "flower"):
            assert any(name in c for c in commands), f"no {name} among {commands}"
        assert not any(stack.settings.flower_password in c for c in commands), "a password is visible to ps"
        assert stat.S_IMODE((stack.data_dir / "credentials.json").stat().st_mode) == 0o600
        assert (stack.data_dir / PID_FILE).read_text().strip() == str(stack.proc.pid)
        second = stack.run_callq("up")
        assert second.returncode == 1
        assert "callq up is already running" in second.stderr and f"pid {stack.proc.pid}" in second.stderr

        code = stack.stop(signal.SIGTERM)

    assert code == 0, stack.output.text()
    left = [pid for pid, start in children.items() if not wait_gone(pid, start, timeout_s=10)]
    assert not left, f"still running after callq up exited: {[_cmdline(p) for p in left]}"
    assert not (stack.data_dir / PID_FILE).exists()
    assert "stopped redis" in stack.output.text()


@pytest.mark.timeout(300)
def test_a_dead_worker_is_restarted_and_a_dead_simulator_stops_the_stack(tmp_path: Path) -> None:
    def worker_pids() -> list[int]:
        return [pid for pid in stack.children() if "worker" in _cmdline(pid) and "tasks.app" in _cmdline(pid)]

    with running_stack(tmp_path / "callq") as stack:
        children = stack.children()
        first = worker_pids()
        os.kill(first[0], signal.SIGKILL)
        wait_until(lambda: "worker stopped unexpectedly (ended by SIGKILL); restarting it (1 of 5"
                   in stack.output.text(last=1000), timeout_s=60, what="the worker's restart")
        wait_until(lambda: worker_pids() and not set(worker_pids()) & set(first) and
                   httpx.get(f"{stack.api_url}/readyz", timeout=15).status_code == 200,
                   timeout_s=120, what="a new worker answering /readyz")
        children |= stack.children()
        sim = next(pid for pid in children if "simulator.app" in " ".join(_cmdline(pid)))
        os.kill(sim, signal.SIGKILL)  # the simulator's calls live in its memory: not restarted
        code = stack.proc.wait(timeout=120)
        stack.output.join()

    assert code == 1
    text = stack.output.text(last=1000)
    assert "callq: simulator stopped unexpectedly (ended by SIGKILL); its last" in text
    assert "stopped redis" in text
    left = [pid for pid, start in children.items() if not wait_gone(pid, start, timeout_s=10)]
    assert not left, f"still running after callq up exited: {[_cmdline(p) for p in left]}"


def test_a_component_that_fails_to_start_stops_the_rest(tmp_path: Path) -> None:
    ports = free_ports()
    # callq passes any string on; the simulator insists on base64, so it exits during start-up (after redis started).
    env = stack_env(tmp_path / "callq", ports, {"CALLQ_ACS_ACCESS_KEY": "not base64!"})
    result = subprocess.run([sys.executable, "-m", "callq", "up"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)

    assert result.returncode == 1
    assert "callq: simulator exited during start-up (exit code" in result.stdout
    assert "CALLQ_ACS_ACCESS_KEY" in result.stdout.split("callq: simulator exited")[1]  # its last lines say why
    assert "stopped redis" in result.stdout
    assert port_is_free("127.0.0.1", ports["CALLQ_REDIS_PORT"])
    assert not (tmp_path / "callq" / PID_FILE).exists()


def test_a_taken_port_is_named_and_nothing_starts(tmp_path: Path) -> None:
    ports = free_ports()
    data_dir = tmp_path / "callq"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports["CALLQ_FLOWER_PORT"]))
        holder.listen()
        result = subprocess.run([sys.executable, "-m", "callq", "up"], cwd=ROOT, env=stack_env(data_dir, ports),
                                capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 1
    assert f"callq: port {ports['CALLQ_FLOWER_PORT']} (CALLQ_FLOWER_PORT) is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""  # no component printed a line: none was started
    assert not data_dir.exists()


def test_a_bad_setting_exits_2_without_a_traceback(tmp_path: Path) -> None:
    env = stack_env(tmp_path, free_ports(), {"CALLQ_API_PORT": "eighty"})
    result = subprocess.run([sys.executable, "-m", "callq", "up"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=60, check=False)

    assert result.returncode == 2
    assert result.stderr.startswith("callq: CALLQ_API_PORT must be a whole number")
    assert "Traceback" not in result.stderr


class _Lines:
    """A Console stream that lets the test wait for a line instead of sleeping."""

    def __init__(self) -> None:
        self.text = ""
        self._cond = threading.Condition()

    def write(self, s: str) -> int:
        with self._cond:
            self.text += s
            self._cond.notify_all()
        return len(s)

    def flush(self) -> None:
        """Nothing is buffered."""

    def wait_for(self, needle: str, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: needle in self.text, timeout=timeout_s)


# Ignores SIGTERM and leaves a grandchild in its process group: the worst case for a clean stop.
_STUBBORN = """
import os, signal, subprocess, sys
signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # sleep-ok: a process to kill
print("grandchild", child.pid, flush=True)
signal.pause()
"""


def test_stop_kills_a_child_that_ignores_sigterm_and_its_grandchildren(tmp_path: Path) -> None:
    stream = _Lines()
    console = Console(stream, ["stubborn"], colour=False)
    proc = ManagedProcess("stubborn", [sys.executable, "-c", _STUBBORN], env={}, cwd=tmp_path, console=console,
                          watch=["grandchild"])
    try:
        assert stream.wait_for("grandchild", timeout_s=30), stream.text
        grandchild = int(stream.text.split("grandchild ")[1].split()[0])
        start = int(Path(f"/proc/{grandchild}/stat").read_text().rsplit(")", 1)[1].split()[19])
        assert proc.saw("grandchild") and not proc.has_exited()
    finally:
        code = proc.stop(grace_s=0.5)

    assert code == -signal.SIGKILL
    assert proc.exit_code == -signal.SIGKILL
    assert wait_gone(grandchild, start, timeout_s=10), "the grandchild outlived its group"
    assert not is_running(grandchild, start)
    assert "stubborn | grandchild" in stream.text



@pytest.mark.timeout(300)
def test_up_with_demo_prints_the_timeline_and_sigterm_leaves_nothing(tmp_path: Path) -> None:
    """What `make up` does: the stack comes up, the demo's commands both succeed, Ctrl-C/SIGTERM cleans up."""
    with running_stack(tmp_path / "callq", args=("up", "--demo")) as stack:
        assert stack.output.wait_for("commands succeeded", 120), stack.output.text()
        text = stack.output.text()
        assert "demo: 10 of 10 commands succeeded" in text, text
        rows = [line.split("|", 1)[1].split() for line in text.splitlines()
                if line.startswith("demo") and "|" in line and line.split("|", 1)[1].strip()[:1].isdigit()]
        assert [(r[1], r[2], r[3]) for r in rows] == SEED_SCENARIO, text
        # The stack keeps serving after the demo.
        assert httpx.get(f"{stack.api_url}/readyz", timeout=15).status_code == 200
        children = stack.children()
        code = stack.stop(signal.SIGTERM)
    assert code == 0, stack.output.text()
    left = [pid for pid, start in children.items() if not wait_gone(pid, start, timeout_s=10)]
    assert not left, f"still running after callq up exited: {[_cmdline(p) for p in left]}"
