"""Run ``callq up`` as a real subprocess on free ports, for tests that need the whole embedded stack.

    with running_stack(tmp_path / "callq") as stack:
        httpx.get(f"{stack.api_url}/readyz")
        httpx.post(..., headers={"Authorization": f"Bearer {stack.api_key}"})
        stack.run_callq("demo")            # any other callq subcommand against this stack

Leaving the block sends SIGTERM and waits for the supervisor; ``stack.stop()`` does it earlier and returns its exit
code. Nothing here sleeps: waits are conditions with deadlines (a line on stdout, a process exit, a pidfd). Start-up
plus an orderly stop can outlast the default per-test timeout on a busy machine: mark such tests
``@pytest.mark.timeout(300)``.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from callq.stack import READY_BANNER, load_dev_api_key, with_saved_credentials
from tests.conftest import free_port
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class Output:
    """Collects a process's stdout lines on a thread; tests wait for a line instead of sleeping."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._proc = proc
        self._done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def wait_for(self, text: str, timeout_s: float) -> bool:
        """True once a line contains ``text``; False if the output ends or ``timeout_s`` passes first."""
        with self._cond:
            self._cond.wait_for(lambda: self._done or any(text in line for line in self.lines), timeout=timeout_s)
            return any(text in line for line in self.lines)

    def join(self, timeout_s: float = 10.0) -> None:
        self._thread.join(timeout=timeout_s)
        if not self._thread.is_alive() and self._proc.stdout is not None:
            self._proc.stdout.close()

    def text(self, last: int = 200) -> str:
        with self._cond:
            return "\n".join(self.lines[-last:])


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of ``pid`` from /proc, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw.rsplit(")", 1)[1].split()  # the command name may contain spaces and parentheses
    return int(fields[1]), fields[0], int(fields[19])


def descendants(root_pid: int) -> dict[int, int]:
    """Every live descendant of ``root_pid`` as {pid: start time} (the start time guards against pid reuse)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    found: dict[int, int] = {}
    todo = list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        found[pid] = starts[pid]
        todo.extend(children.get(pid, []))
    return found


def is_running(pid: int, start: int) -> bool:
    """Whether that exact process (not a later one reusing the pid) still runs; a zombie counts as gone."""
    stat = _stat(pid)
    return stat is not None and stat[2] == start and stat[1] != "Z"


def wait_gone(pid: int, start: int, timeout_s: float) -> bool:
    """Wait for a process that is not our child to exit, on a pidfd (no polling); True once it is gone."""
    if not is_running(pid, start):
        return True
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        if not is_running(pid, start):  # the pid may have been reused between the check and pidfd_open
            return True
        readable, _, _ = select.select([fd], [], [], timeout_s)
        return bool(readable) or not is_running(pid, start)
    finally:
        os.close(fd)


def stack_env(data_dir: Path, ports: Mapping[str, int], extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any CALLQ_/FLOWER_ variable, plus the test's ports and data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALLQ_", "FLOWER_"))}
    env.update({name: str(port) for name, port in ports.items()})
    env["CALLQ_DATA_DIR"] = str(data_dir)
    env.update(extra or {})
    return env


def free_ports() -> dict[str, int]:
    """A distinct free port for each port setting of the stack."""
    names = ("CALLQ_API_PORT", "CALLQ_SIM_PORT", "CALLQ_REDIS_PORT", "CALLQ_FLOWER_PORT")
    ports: set[int] = set()
    while len(ports) < len(names):
        ports.add(free_port())
    return dict(zip(names, sorted(ports), strict=True))


@dataclass
class RunningStack:
    """A ``callq up`` subprocess that printed its ready table, with what a client needs to use it."""

    proc: subprocess.Popen[str]
    output: Output
    env: dict[str, str] = field(repr=False)
    settings: Settings = field(repr=False)
    api_key: str = field(repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.sim_port}"

    @property
    def flower_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.flower_port}"

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url

    @property
    def data_dir(self) -> Path:
        return Path(self.settings.data_dir)

    @property
    def flower_auth(self) -> tuple[str, str]:
        return self.settings.flower_user, self.settings.flower_password

    def children(self) -> dict[int, int]:
        """The supervisor's live descendants {pid: start time}."""
        return descendants(self.proc.pid)

    def run_callq(self, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run another ``callq`` subcommand against this stack (it finds the generated credentials on disk)."""
        return subprocess.run([sys.executable, "-m", "callq", *args], cwd=ROOT, env=self.env, capture_output=True,
                              text=True, timeout=timeout_s, check=False)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout_s: float = 90) -> int:
        """Signal the supervisor and wait for it; its exit code. Kills it (and its children) if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            _kill_tree(self.proc)
            tail = self.output.text()
            raise AssertionError(f"callq up did not exit within {timeout_s} s of {sig.name}:\n{tail}") from None
        finally:
            self.output.join()


def _kill_tree(proc: subprocess.Popen[str]) -> None:
    for pid in descendants(proc.pid):
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue  # already gone
    proc.kill()
    proc.wait()


@contextmanager
def running_stack(data_dir: Path, *, args: tuple[str, ...] = ("up",), extra_env: Mapping[str, str] | None = None,
                  ready_timeout_s: float = 90) -> Iterator[RunningStack]:
    """Start ``callq <args>`` on free ports with ``data_dir``; yield once its ready table is printed."""
    env = stack_env(data_dir, free_ports(), extra_env)
    proc = subprocess.Popen([sys.executable, "-m", "callq", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = Output(proc)
    try:
        if not output.wait_for(READY_BANNER, ready_timeout_s):
            raise AssertionError(f"callq up did not get ready (exit code {proc.poll()}):\n{output.text()}")
        settings = with_saved_credentials(Settings.from_env(env))  # what the children run with
        api_key = load_dev_api_key(settings)
        assert api_key, "callq up saved no API key"
        yield RunningStack(proc=proc, output=output, env=env, settings=settings, api_key=api_key)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                _kill_tree(proc)
        output.join()

