"""What ``callq up`` runs: each component's command line, private environment and health check, built from Settings.

Pure: nothing here starts a process or opens a socket, so unit tests can read every command line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from workers.errors import ConfigError
from workers.settings import Settings


@dataclass(frozen=True)
class HttpOk:
    """Healthy when GET ``url`` answers 200."""

    url: str


@dataclass(frozen=True)
class RedisPing:
    """Healthy when Redis at ``url`` answers PING."""

    url: str


@dataclass(frozen=True)
class LogLine:
    """Healthy once the component has printed a line containing ``text``."""

    text: str


Health = HttpOk | RedisPing | LogLine


@dataclass(frozen=True)
class Component:
    """One child process of the stack."""

    name: str
    argv: tuple[str, ...]
    health: Health
    url: str = ""  # shown in the ready table; empty for components nobody connects to
    note: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # variables only this child gets (secrets)
    # Restarted when it dies unexpectedly: it keeps no state of its own (Redis holds it all). Redis and the
    # simulator (whose calls live in its memory) are not: losing them ends the stack.
    restart: bool = False


def local_host(host: str) -> str:
    """The address to reach a server bound to ``host`` from this machine (a wildcard bind means loopback)."""
    reachable = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    return f"[{reachable}]" if ":" in reachable else reachable  # IPv6 literals need brackets in URLs


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and the ready table."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def flower_basic_auth(settings: Settings) -> str:
    """The ``FLOWER_BASIC_AUTH`` value; refuses to run Flower's API open or with a value Flower would mis-split."""
    if not settings.flower_password:
        raise ConfigError("CALLQ_FLOWER_PASSWORD must be set to run Flower (its API can revoke and run tasks)")
    if ":" in settings.flower_user or "," in settings.flower_user or not settings.flower_user:
        raise ConfigError("CALLQ_FLOWER_USER must be non-empty and contain no ':' or ','")
    if "," in settings.flower_password:
        raise ConfigError("CALLQ_FLOWER_PASSWORD must not contain ',' (Flower splits its basic-auth list on commas)")
    return f"{settings.flower_user}:{settings.flower_password}"


def redis(settings: Settings, redis_server: str) -> Component:
    """A private redis-server with AOF on and no eviction (kombu keeps its bindings as keys)."""
    data = str(Path(settings.data_dir) / "redis")
    argv = (
        redis_server, "--port", str(settings.redis_port), "--bind", "127.0.0.1", "--dir", data,
        "--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction",
        "--save", "", "--daemonize", "no",
    )
    return Component("redis", argv, RedisPing(settings.redis_url), url=redact_url(settings.redis_url),
                     note=f"AOF in {data}")


def simulator(settings: Settings, python: str) -> Component:
    url = f"http://{local_host(settings.sim_host)}:{settings.sim_port}"
    argv = (python, "-m", "uvicorn", "--factory", "simulator.app:create_app",
            "--host", settings.sim_host, "--port", str(settings.sim_port))
    return Component("simulator", argv, HttpOk(f"{url}/_sim/health"), url=url, note="ACS simulator")


def api(settings: Settings, python: str) -> Component:
    url = f"http://{local_host(settings.api_host)}:{settings.api_port}"
    argv = (python, "-m", "uvicorn", "--factory", "api.app:create_app",
            "--host", settings.api_host, "--port", str(settings.api_port))
    return Component("api", argv, HttpOk(f"{url}/healthz"), url=url, restart=True)


def _celery(settings: Settings, python: str) -> tuple[str, ...]:
    """``python -m celery -A tasks.app``, ``--quiet`` in json mode: Celery's banner is plain text, not a log line."""
    return (python, "-m", "celery", "-A", "tasks.app", *(("--quiet",) if settings.log_format == "json" else ()))


def worker(settings: Settings, python: str) -> Component:
    argv = (*_celery(settings, python), "worker", "-E", "-P", "threads",
            "-c", str(settings.worker_concurrency), "-Q", settings.worker_queues, "-n", "worker1@%h",
            "--loglevel", settings.log_level)
    # The API's /readyz needs Redis, the broker and a worker answering a ping: the end-to-end proof.
    readyz = f"http://{local_host(settings.api_host)}:{settings.api_port}/readyz"
    return Component("worker", argv, HttpOk(readyz),
                     note=f"queues {settings.worker_queues}, {settings.worker_concurrency} threads", restart=True)


def beat(settings: Settings, python: str) -> Component:
    argv = (*_celery(settings, python), "beat", "-S", "redbeat.RedBeatScheduler", "--loglevel", settings.log_level)
    # "beat: Starting..." is logged once the app is loaded and the scheduler service runs. Waiting for redbeat's
    # "Acquired lock" instead would hang start-up for the lock's whole TTL after a crashed beat left its lock behind.
    return Component("beat", argv, LogLine("beat: Starting"), note="redbeat scheduler", restart=True)


def flower(settings: Settings, python: str) -> Component:
    url = f"http://127.0.0.1:{settings.flower_port}"
    argv = (python, "-m", "celery", "-A", "tasks.app", "flower", "--address=127.0.0.1",
            f"--port={settings.flower_port}")
    # Credentials go in the environment: anything on the command line is readable by every user through ps.
    return Component("flower", argv, HttpOk(f"{url}/healthcheck"), url=url,
                     env={"FLOWER_BASIC_AUTH": flower_basic_auth(settings)}, restart=True)


def stack(settings: Settings, *, python: str, redis_server: str | None) -> list[Component]:
    """Every component in start order; no redis when ``redis_server`` is None (an external Redis is used)."""
    own_redis = [redis(settings, redis_server)] if redis_server else []
    return [*own_redis, *(build(settings, python) for build in (simulator, api, worker, beat, flower))]
