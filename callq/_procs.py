"""Child processes for ``callq up``: start each in its own session, stream its output with a prefix, stop its group.

Each child leads its own session and process group, so a Ctrl-C typed at the terminal reaches only the supervisor,
which then stops the children in order instead of racing them; stopping signals the whole group so nothing a
child forked outlives it.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

_POLL_S = 0.05
_COLOURS = ("36", "33", "32", "35", "34", "96", "93", "92")


def prefix(name: str, width: int, colour: str | None = None) -> str:
    """``"api       | "``: the name padded to ``width``, in an ANSI colour when one is given."""
    label = f"{name:<{width}} | "
    return f"\x1b[{colour}m{label}\x1b[0m" if colour else label


class Stream(Protocol):
    """Where the Console writes: a text file such as sys.stdout."""

    def write(self, s: str, /) -> int: ...

    def flush(self) -> None: ...


class Console:
    """Serialises lines from many reader threads onto one stream, each child's under its own prefix."""

    def __init__(self, stream: Stream, names: Iterable[str], *, colour: bool) -> None:
        names = list(names)
        width = max(len(n) for n in names)
        self._prefixes = {
            n: prefix(n, width, _COLOURS[i % len(_COLOURS)] if colour else None) for i, n in enumerate(names)
        }
        self._stream = stream
        self._lock = threading.Lock()

    def line(self, name: str, text: str) -> None:
        self.write(self._prefixes.get(name, f"{name} | ") + text)

    def write(self, text: str) -> None:
        with self._lock:
            try:
                self._stream.write(text + "\n")
                self._stream.flush()
            except (OSError, ValueError):
                pass  # the terminal went away (`callq up | head`, a closed window): keep supervising to a clean stop


class ManagedProcess:
    """A started child: its output pumped to a Console, the last lines kept, a text watch list for health."""

    def __init__(
        self, name: str, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path, console: Console,
        keep_lines: int = 50, watch: Iterable[str] = (),
    ) -> None:
        self.name = name
        self._tail: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._tail_lock = threading.Lock()
        self._watch = tuple(watch)
        self._exit_code: int | None = None
        self._seen: set[str] = set()
        self._console = console
        self._proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._pump, name=f"callq-{name}-output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def exit_code(self) -> int | None:
        """Like Popen.returncode (negative: killed by that signal), known before :meth:`stop` reaps the child."""
        if self._proc.returncode is not None:
            return self._proc.returncode
        return self._exit_code if self.has_exited() else None

    def _pump(self) -> None:
        assert self._proc.stdout is not None
        for raw in self._proc.stdout:
            line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            with self._tail_lock:
                self._tail.append(line)
            self._seen.update(w for w in self._watch if w in line)
            self._console.line(self.name, line)

    def last_lines(self, *, drain_s: float = 0.0) -> list[str]:
        """The last lines it printed; ``drain_s`` waits that long for output still in the pipe (after an exit)."""
        if drain_s:
            self._reader.join(timeout=drain_s)
        with self._tail_lock:
            return list(self._tail)

    def saw(self, text: str) -> bool:
        """Whether a line containing ``text`` (one of ``watch``) has been printed."""
        return text in self._seen

    def has_exited(self) -> bool:
        """Whether the child exited. Leaves it a zombie so its process-group id stays reserved until :meth:`stop`."""
        if self._proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self._proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if info is None:
            return False
        self._exit_code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        return True

    def stop(self, grace_s: float, *, hurry: Callable[[], bool] = lambda: False) -> int:
        """SIGTERM the group, wait up to ``grace_s`` (less if ``hurry()``), SIGKILL what is left; the exit code."""
        if not self.has_exited():
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while not self.has_exited() and time.monotonic() < deadline and not hurry():
                time.sleep(_POLL_S)  # poll: waitid has no timeout, and a blocking wait would reap too early
        # Sweep the group even after a clean exit: a grandchild the leader left behind would be an orphan. The
        # unreaped leader still holds the group id, so this cannot hit an unrelated group.
        self._signal_group(signal.SIGKILL)
        code = self._proc.wait()
        self._reader.join(timeout=5.0)  # EOF comes once every writer is gone; bounded in case one escaped the group
        if not self._reader.is_alive() and self._proc.stdout is not None:
            self._proc.stdout.close()
        return code

    def _signal_group(self, sig: signal.Signals) -> None:
        try:
            os.killpg(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass  # the group is already empty
