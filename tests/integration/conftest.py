"""Real processes for integration tests: the simulator and API (uvicorn in threads), Celery workers."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn

from tests.conftest import TEST_ACS_KEY, TEST_API_KEY, free_port, wait_until
from workers import keys
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


class Server:
    """What a test needs of a server: its URL, and one HTTP client kept for the test."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @functools.cached_property
    def http(self) -> httpx.Client:
        # Kept: a new client per request costs ~60 ms (it builds a TLS context), minutes over a suite.
        return httpx.Client(base_url=self.url, timeout=30.0)

    def _close_http(self) -> None:
        if "http" in self.__dict__:
            self.http.close()


class _QuickServer(uvicorn.Server):
    """uvicorn's server, looking at ``should_exit`` every 10 ms instead of every 100: a test's teardown stops two of
    these, in every integration test."""

    async def main_loop(self) -> None:
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            await asyncio.sleep(0.01)  # sleep-ok: the server's own tick, as uvicorn's (0.1 s there)
            should_exit = await self.on_tick(counter)


class ThreadServer(Server):
    """A uvicorn server on a free port in a background thread, stopped cleanly at teardown."""

    def __init__(self, app_factory: str, env: dict[str, str], port: int) -> None:
        self.port = port
        self._env = env
        # A request still in flight at teardown (a delivery from the other server, itself stopping) is cut after
        # a second instead of holding the test's teardown until the join below gives up.
        config = uvicorn.Config(app_factory, factory=True, host="127.0.0.1", port=port, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=1)
        self.server = _QuickServer(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), timeout_s=15, what="uvicorn start")
        assert self.server.started, "server failed to start"
        return self

    def stop(self) -> None:
        self._close_http()
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ProcessServer(Server):
    """A uvicorn server in a process of its own, for the heavy tests: in a thread of the test process it would
    share one interpreter lock with the test's client and the API's thread, and slow both."""

    def __init__(self, app_factory: str, env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self._argv = [sys.executable, "-m", "uvicorn", "--factory", app_factory, "--host", "127.0.0.1",
                      "--port", str(port), "--log-level", "warning"]
        self._env = {**os.environ, **env}
        self._log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def _answers(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, f"server exited: see {self._log}"
        try:
            httpx.get(self.url, timeout=1.0)  # any answer will do: it is serving
        except httpx.TransportError:
            return False
        return True

    def start(self) -> ProcessServer:
        with self._log.open("ab") as log:
            self.proc = subprocess.Popen(self._argv, cwd=ROOT, env=self._env, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self._answers, timeout_s=30, what="uvicorn process start")
        return self

    def stop(self) -> None:
        self._close_http()
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def stack_env(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """CALLQ_* variables for one test's stack; also applied to this process (the factories read them)."""
    api_port, sim_port = free_port(), free_port()
    env = {
        "CALLQ_REDIS_URL": redis_url,
        "CALLQ_API_PORT": str(api_port),
        "CALLQ_SIM_PORT": str(sim_port),
        "CALLQ_PUBLIC_URL": f"http://127.0.0.1:{api_port}",
        "CALLQ_ACS_ENDPOINT": f"http://127.0.0.1:{sim_port}",
        "CALLQ_ACS_ACCESS_KEY": TEST_ACS_KEY,
        "CALLQ_API_KEYS": f"alice:{TEST_API_KEY}",
        "CALLQ_RETRY_BASE_SECONDS": "0.05",
        "CALLQ_RETRY_CAP_SECONDS": "0.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


EVENTGRID_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
EVENTGRID_AUDIENCE = "api://callq-integration"


def with_eventgrid(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``stack_env`` with Event Grid wired as `callq up` wires it: the simulator's subscription posts to callq with an
    Entra token for callq's audience; callq trusts the simulator's OpenID document for that tenant. (For a module's
    own ``stack_env`` fixture.)"""
    sim = stack_env["CALLQ_ACS_ENDPOINT"]
    extra = {
        "CALLQ_SIM_EVENTGRID_URL": f"{stack_env['CALLQ_PUBLIC_URL']}/v1/eventgrid/events",
        "CALLQ_SIM_EVENTGRID_TENANT_ID": EVENTGRID_TENANT,
        "CALLQ_SIM_EVENTGRID_AUDIENCE": EVENTGRID_AUDIENCE,
        "CALLQ_EVENTGRID_TENANT_ID": EVENTGRID_TENANT,
        "CALLQ_EVENTGRID_AUDIENCE": EVENTGRID_AUDIENCE,
        "CALLQ_EVENTGRID_OPENID_URL": f"{sim}/entra/{EVENTGRID_TENANT}/v2.0/.well-known/openid-configuration",
    }
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return {**stack_env, **extra}


def eventgrid_validated(simulator: Server) -> bool:
    """Whether the simulator's one Event Grid subscription has passed its handshake with callq."""
    return [s.get("status") for s in simulator.http.get("/_sim/eventgrid/subscriptions").json()] == ["Succeeded"]


@pytest.fixture
def stack_settings(stack_env: dict[str, str]) -> Settings:
    return Settings.from_env(stack_env)


@pytest.fixture
def simulator(stack_env: dict[str, str]) -> Iterator[ThreadServer]:
    server = ThreadServer("simulator.app:create_app", stack_env, int(stack_env["CALLQ_SIM_PORT"])).start()
    yield server
    server.stop()


@pytest.fixture
def simulator_process(stack_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessServer]:
    """The simulator in its own process (see ProcessServer), on the port the stack's settings name."""
    server = ProcessServer("simulator.app:create_app", stack_env, int(stack_env["CALLQ_SIM_PORT"]),
                           tmp_path / "simulator.log").start()
    yield server
    server.stop()


@pytest.fixture
def api_process(stack_env: dict[str, str], tmp_path: Path) -> Iterator[ProcessServer]:
    """The API in its own process (see ProcessServer), for the tests that send it hundreds of requests at once."""
    server = ProcessServer("api.app:create_app", stack_env, int(stack_env["CALLQ_API_PORT"]),
                           tmp_path / "api.log").start()
    yield server
    server.stop()


async def post_all(base_url: str, paths: list[str], body: dict[str, object] | None = None, *,
                   connections: int = 20) -> list[httpx.Response]:
    """POST to every path at once, each with its own Idempotency-Key, resent with the same key when the connection
    drops (as callq asks of its clients: the retry gets the command the first try made, or makes it once)."""

    async def one(c: httpx.AsyncClient, path: str) -> httpx.Response:
        key = str(uuid.uuid4())
        for attempt in range(5):
            try:
                return await c.post(path, json=body, headers={"Idempotency-Key": key})
            except httpx.TransportError:
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")

    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=connections),
                                 headers={"Authorization": f"Bearer {TEST_API_KEY}"}) as c:
        return list(await asyncio.gather(*(one(c, p) for p in paths)))


@pytest.fixture
def api_server(stack_env: dict[str, str]) -> Iterator[ThreadServer]:
    server = ThreadServer("api.app:create_app", stack_env, int(stack_env["CALLQ_API_PORT"])).start()
    yield server
    server.stop()


def live_workers(redis_url: str) -> int:
    return int(redis.Redis.from_url(redis_url).zcard(keys.WORKERS_ZSET))


@pytest.fixture
def start_worker(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start real Celery worker processes (threads pool); all are stopped at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str = "w1", *, concurrency: int = 4, extra_env: dict[str, str] | None = None,
              wait: bool = True) -> subprocess.Popen[bytes]:
        before = live_workers(stack_env["CALLQ_REDIS_URL"])
        with open(tmp_path / f"worker-{name}.log", "wb") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks.app", "worker", "-P", "threads", "-c", str(concurrency),
                 "-Q", "callq,callq.steps", "-n", f"{name}@%h", "--without-mingle", "--without-gossip",
                 "--loglevel", "INFO"],
                cwd=ROOT, env={**os.environ, **stack_env, **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        if wait:
            wait_until(lambda: live_workers(stack_env["CALLQ_REDIS_URL"]) > before or proc.poll() is not None,
                       timeout_s=30, what=f"worker {name} heartbeat")
            assert proc.poll() is None, (tmp_path / f"worker-{name}.log").read_text()
        return proc

    yield start
    # The test is over and its Redis is flushed for the next: a warm shutdown (~2 s a worker) would prove nothing
    # (the tests that need one send SIGTERM themselves).
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait()


@pytest.fixture
def api(api_server: ThreadServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_server.url, headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                      timeout=30) as client:
        yield client
