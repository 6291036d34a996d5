"""``callq up``: start the embedded stack in order, wait for each part to be healthy, supervise it, stop it cleanly.

Start-up is fail-fast: ports are checked before anything starts, each component must pass its health check before
the next one starts, and any failure stops what is running and prints the culprit's last lines.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType
from typing import TextIO

from callq import _components, _credentials
from callq._health import StackError, check_ports, planned_ports, probe, store_pings
from callq._procs import Console, ManagedProcess
from callq._table import ready_table
from workers import redis_clients
from workers.settings import Settings

__all__ = [
    "PID_FILE", "READY_BANNER", "StackError", "load_dev_api_key", "project_root", "resolve_data_dir", "up",
    "with_saved_credentials",
]

READY_BANNER = "callq is ready"
PID_FILE = "callq.pid"
_POLL_S = 0.1
# A component that keeps dying is not saved by restarting it: more than this many restarts within the window
# stops the stack, with the component's last lines, as a start-up failure does.
RESTARTS_MAX, RESTARTS_WINDOW_S = 5, 60.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def project_root() -> Path:
    """The checkout callq runs from: children start here so ``api``, ``tasks`` and ``simulator`` import."""
    return Path(__file__).resolve().parent.parent


def resolve_data_dir(settings: Settings) -> Settings:
    """``settings`` with ``data_dir`` made absolute (relative to the project root, where the children run)."""
    path = Path(settings.data_dir).expanduser()
    return settings if path.is_absolute() else settings.with_(data_dir=str(project_root() / path))


def load_dev_api_key(settings: Settings) -> str | None:
    """The API key a local client should use: the configured one, else the one ``callq up`` generated."""
    settings = resolve_data_dir(settings)
    saved = _credentials.load(Path(settings.data_dir) / _credentials.CREDENTIALS_FILE)
    return _credentials.pick_api_key(_credentials.apply(settings, saved))


def with_saved_credentials(settings: Settings) -> Settings:
    """``settings`` with empty secrets filled from what the running (or last) ``callq up`` generated."""
    settings = resolve_data_dir(settings)
    return _credentials.apply(settings, _credentials.load(Path(settings.data_dir) / _credentials.CREDENTIALS_FILE))


class _StopRequest:
    """Signal handler that only records the signal: the main loop notices it within one poll interval."""

    def __init__(self) -> None:
        self.signals: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)  # list.append is atomic and takes no lock a signal could deadlock on

    def __bool__(self) -> bool:
        return bool(self.signals)

    def hurry(self) -> bool:
        """A second signal: the user wants out now, so stop waiting for graceful exits."""
        return len(self.signals) > 1


def up(
    settings: Settings, *, demo: bool = False, out: TextIO = sys.stdout, base_env: Mapping[str, str] | None = None,
    health_deadline_s: float = 30.0, stop_grace_s: float = 10.0,
) -> int:
    """Run the stack until SIGINT/SIGTERM/SIGHUP (exit 0) or until a component fails (exit 1)."""
    settings = resolve_data_dir(settings)
    data_dir = Path(settings.data_dir)
    pid_file = data_dir / PID_FILE
    _refuse_if_running(pid_file)
    check_ports(planned_ports(settings))
    redis_server = None if settings.external_redis else _find_redis_server()
    creds = _credentials.generate(settings)
    settings = with_dev_webhooks(with_dev_eventgrid(_credentials.apply(settings, creds)))
    components = _components.stack(settings, python=sys.executable, redis_server=redis_server)  # validates Flower

    # Nothing above touched the disk or started a process: a refusal leaves no trace.
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # holds Redis data and the credentials
    (data_dir / "redis").mkdir(exist_ok=True)
    _credentials.save(data_dir / _credentials.CREDENTIALS_FILE, creds)
    env = _child_env(os.environ if base_env is None else base_env, settings)

    names = [c.name for c in components] + ["demo", "callq"]
    runner = _Runner(Console(out, names, colour=out.isatty()), env, stop_grace_s)
    stop = _StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in _STOP_SIGNALS}
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        if settings.external_redis and not _wait(lambda: store_pings(settings), health_deadline_s, stop):
            if stop:
                return 0
            where = "CALLQ_REDIS_SENTINELS" if settings.redis_sentinels else "CALLQ_REDIS_URL"
            raise StackError(f"cannot reach Redis at {redis_clients.describe(settings)} ({where})")
        for component in components:
            if not runner.start_healthy(component, health_deadline_s, stop):
                return 0 if stop else 1
        runner.console.write(ready_table(settings, components, creds, data_dir, banner=READY_BANNER))
        if demo:
            runner.start_demo()
        return runner.supervise(stop)
    finally:
        if stop:
            runner.console.line("callq", f"stopping ({signal.Signals(stop.signals[0]).name})")
        runner.stop_all(stop.hurry)
        pid_file.unlink(missing_ok=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def describe_exit(code: int) -> str:
    """``exit code 1`` or ``ended by SIGKILL`` (Popen reports death by signal N as -N)."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"ended by {signal.Signals(-code).name}"
    except ValueError:
        return f"ended by signal {-code}"


def _refuse_if_running(pid_file: Path) -> None:
    """Two supervisors on one data dir would run two redis-servers appending to the same AOF files."""
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return  # no pid file, or its process is gone: a stale file from a killed supervisor is overwritten
    if pid != os.getpid() and b"callq" in cmdline:  # the command line guards against a reused pid
        raise StackError(f"callq up is already running with data in {pid_file.parent} (pid {pid}); stop it first, "
                         "or set CALLQ_DATA_DIR to another directory")


def _find_redis_server() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise StackError("redis-server is not on PATH; install it with: apt-get install redis-server, or run make up "
                         "(or point CALLQ_REDIS_URL at a running Redis)")
    return path


# The embedded stack's Event Grid: the simulator's subscription delivers to callq with Entra-style tokens for this
# tenant and audience, signed by the simulator and published in its OpenID document, which callq trusts. Real
# Event Grid needs a real tenant and app: see README "Pointing at real ACS".
DEV_EVENTGRID_TENANT = "00000000-0000-4000-8000-0000ca11e9e1"
DEV_EVENTGRID_AUDIENCE = "api://callq-dev"


def with_dev_eventgrid(settings: Settings) -> Settings:
    """``settings`` with the simulator's Event Grid wired to callq, unless Event Grid is configured or ACS is real."""
    if settings.eventgrid_configured or settings.uses_real_acs:
        return settings
    return settings.with_(
        eventgrid_tenant_id=DEV_EVENTGRID_TENANT, eventgrid_audience=(DEV_EVENTGRID_AUDIENCE,),
        eventgrid_openid_url=f"{settings.acs_endpoint}/entra/{DEV_EVENTGRID_TENANT}/v2.0/.well-known/openid-configuration")


LOOPBACK = ("127.0.0.0/8", "::1/128")


def with_dev_webhooks(settings: Settings) -> Settings:
    """``settings`` letting webhooks reach this machine (the demo's receiver, a receiver you run beside it), unless
    CALLQ_WEBHOOK_ALLOWED_NETWORKS names networks of its own."""
    return settings if settings.webhook_allowed_networks else settings.with_(webhook_allowed_networks=LOOPBACK)


def eventgrid_env(settings: Settings) -> dict[str, str]:
    """What callq's processes and the simulator must agree on for the embedded Event Grid subscription."""
    if not settings.eventgrid_entra or settings.eventgrid_tenant_id != DEV_EVENTGRID_TENANT:
        return {}
    return {
        "CALLQ_EVENTGRID_TENANT_ID": settings.eventgrid_tenant_id,
        "CALLQ_EVENTGRID_AUDIENCE": ",".join(settings.eventgrid_audience),
        "CALLQ_EVENTGRID_OPENID_URL": settings.eventgrid_openid_url,
        "CALLQ_SIM_EVENTGRID_URL": f"{settings.public_url}/v1/eventgrid/events",
        "CALLQ_SIM_EVENTGRID_TENANT_ID": settings.eventgrid_tenant_id,
        "CALLQ_SIM_EVENTGRID_AUDIENCE": settings.eventgrid_audience[0],
    }


def _child_env(base: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """The parent's environment plus everything children must agree on (URL, data dir, generated secrets)."""
    env = dict(base)
    env.update(_credentials.credential_env(settings))
    env.update(eventgrid_env(settings))
    env["CALLQ_WEBHOOK_ALLOWED_NETWORKS"] = ",".join(settings.webhook_allowed_networks)
    # ACS announces a recording's files minutes after it stops; the embedded simulator does so within a second (the
    # demo downloads its class recording), unless told otherwise.
    env.setdefault("CALLQ_SIM_RECORDING_FILE_DELAY_S", "1")
    env["CALLQ_REDIS_URL"] = settings.redis_url
    env["CALLQ_DATA_DIR"] = settings.data_dir
    env["CALLQ_LOG_FORMAT"] = settings.log_format  # text (for people) unless the operator asked for json
    env["PYTHONUNBUFFERED"] = "1"  # children write to a pipe; without this their log lines arrive in 8 KiB bursts
    return env


def _wait(
    ready: Callable[[], bool], deadline_s: float, stop: _StopRequest, exited: Callable[[], bool] = lambda: False,
) -> bool:
    """Poll ``ready()`` until it is true (True), or the deadline passes, a stop is requested or ``exited()``."""
    deadline = time.monotonic() + deadline_s
    interval_s = 0.05
    while not stop and time.monotonic() < deadline:
        if exited():
            return False
        if ready():
            return True
        time.sleep(interval_s)  # poll interval: quick for fast starters, backing off so probes don't flood the logs
        interval_s = min(interval_s * 1.5, 0.5)
    return False


class _Runner:
    """The started children, in start order, and how to report on and stop them."""

    def __init__(self, console: Console, env: dict[str, str], stop_grace_s: float) -> None:
        self.console = console
        self._env = env
        self._grace_s = stop_grace_s
        self._procs: list[ManagedProcess] = []
        self._components: dict[str, _components.Component] = {}
        self._restarts: dict[str, list[float]] = {}
        self._demo: ManagedProcess | None = None

    def _spawn(self, name: str, argv: tuple[str, ...], extra_env: Mapping[str, str], watch: tuple[str, ...]) -> (
            ManagedProcess):
        return ManagedProcess(name, argv, env={**self._env, **extra_env}, cwd=project_root(), console=self.console,
                              watch=watch)

    def start_healthy(self, component: _components.Component, deadline_s: float, stop: _StopRequest) -> bool:
        """Start ``component`` and wait until it is healthy; on failure say why and show its last lines."""
        proc = self._spawn_component(component)
        self._procs.append(proc)
        self._components[component.name] = component
        healthy = _wait(lambda: probe(component.health, proc.saw), deadline_s, stop, exited=proc.has_exited)
        if not healthy and not stop:
            why = "exited" if proc.has_exited() else f"was not healthy within {deadline_s:g} s"
            self._report_failure(proc, f"{component.name} {why} during start-up")
        return healthy

    def _spawn_component(self, component: _components.Component) -> ManagedProcess:
        watch = (component.health.text,) if isinstance(component.health, _components.LogLine) else ()
        return self._spawn(component.name, component.argv, component.env, watch)

    def _restart(self, proc: ManagedProcess) -> bool:
        """Start a died component again, if it may be restarted and has not been too often lately."""
        component = self._components.get(proc.name)
        now = time.monotonic()
        recent = [t for t in self._restarts.get(proc.name, []) if now - t < RESTARTS_WINDOW_S]
        if component is None or not component.restart or len(recent) >= RESTARTS_MAX:
            return False
        self._restarts[proc.name] = [*recent, now]
        count = f"{len(recent) + 1} of {RESTARTS_MAX} within {RESTARTS_WINDOW_S:g} s"
        self._report_failure(proc, f"{proc.name} stopped unexpectedly", then=f"; restarting it ({count})")
        proc.stop(0)  # reap it and close its pipes
        self._procs[self._procs.index(proc)] = self._spawn_component(component)
        return True

    def start_demo(self) -> None:
        self._demo = self._spawn("demo", (sys.executable, "-m", "callq", "demo"), {}, ())

    def supervise(self, stop: _StopRequest) -> int:
        """Watch the children until a stop signal (0) or one that may not be restarted dies (1).

        A stateless component (API, worker, beat, Flower) that dies is started again (a worker can exit when
        its broker connection drops mid-restore, kombu 5.7); the demo may finish on its own.
        """
        while not stop:
            for proc in list(self._procs):
                if proc.has_exited() and not self._restart(proc):
                    self._report_failure(proc, f"{proc.name} stopped unexpectedly")
                    return 1
            if self._demo is not None and self._demo.has_exited():
                code = self._demo.stop(0)
                self.console.line("callq", f"demo finished ({describe_exit(code)}); the stack keeps running")
                self._demo = None
            time.sleep(_POLL_S)  # poll interval for child liveness and the stop flag
        return 0

    def _report_failure(self, proc: ManagedProcess, what: str, then: str = "") -> None:
        code = "still running" if proc.exit_code is None else describe_exit(proc.exit_code)
        # A process that just died may still have its last words (often the traceback) in the pipe.
        tail = proc.last_lines(drain_s=2.0 if proc.exit_code is not None else 0.0)
        lines = "\n".join(f"    {line}" for line in tail)
        self.console.write(f"callq: {what} ({code}){then}; its last {len(tail)} lines:\n{lines}")

    def stop_all(self, hurry: Callable[[], bool]) -> None:
        """Stop every child, newest first, so workers finish with Redis still up."""
        for proc in ([self._demo] if self._demo else []) + self._procs[::-1]:
            code = proc.stop(self._grace_s, hurry=hurry)
            self.console.line("callq", f"stopped {proc.name} ({describe_exit(code)})")
