"""Pre-flight port checks and health probes for ``callq up``."""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import redis

from callq._components import Health, HttpOk, LogLine, RedisPing
from workers import redis_clients
from workers.errors import CallqError
from workers.settings import Settings


class StackError(CallqError):
    """Raised when the embedded stack cannot start or stay up; the message says what to do."""

    code = "stack_error"


@dataclass(frozen=True)
class Port:
    """A port ``callq up`` will bind, with the variable that chooses it (for the error message)."""

    port: int
    setting: str
    host: str = "127.0.0.1"


def planned_ports(settings: Settings) -> list[Port]:
    """Every port the stack binds on this machine; none for Redis when an external one is configured."""
    ports = [
        Port(settings.api_port, "CALLQ_API_PORT", settings.api_host),
        Port(settings.sim_port, "CALLQ_SIM_PORT", settings.sim_host),
        Port(settings.flower_port, "CALLQ_FLOWER_PORT"),
    ]
    if not settings.external_redis:
        ports.append(Port(settings.redis_port, "CALLQ_REDIS_PORT"))
    return ports


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (TIME_WAIT leftovers count as free, as for servers)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def check_ports(ports: list[Port], *, is_free: Callable[[str, int], bool] = port_is_free) -> None:
    """Raise StackError naming each port (and its variable) that is taken, or chosen twice."""
    problems: list[str] = []
    first_use: dict[int, Port] = {}
    for p in ports:
        if p.port in first_use:
            problems.append(f"{p.setting} and {first_use[p.port].setting} are both {p.port}; give each its own port")
            continue
        first_use[p.port] = p
        try:
            free = is_free(p.host, p.port)
        except OSError as exc:
            problems.append(f"cannot listen on {p.host}:{p.port} ({p.setting}): {exc.strerror or exc}")
            continue
        if not free:
            problems.append(f"port {p.port} ({p.setting}) is already in use; stop whatever holds it or set "
                            f"{p.setting} to a free port")
    if problems:
        raise StackError("; ".join(problems))


def http_ok(url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether GET ``url`` answers 200 (any connection error is just "not yet")."""
    try:
        return httpx.get(url, timeout=timeout_s).status_code == 200
    except httpx.HTTPError:
        return False


def redis_pings(url: str, *, timeout_s: float = 2.0) -> bool:
    """Whether Redis at ``url`` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def store_pings(settings: Settings, *, timeout_s: float = 2.0) -> bool:
    """Whether callq's Redis answers PING: the URL's, or the primary the Sentinels name."""
    client = redis_clients.sync_client(settings, decode_responses=False, socket_connect_timeout=timeout_s,
                                       socket_timeout=timeout_s)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def probe(health: Health, saw: Callable[[str], bool]) -> bool:
    """One health check; ``saw(text)`` tells whether the component has logged ``text``."""
    match health:
        case HttpOk(url):
            return http_ok(url)
        case RedisPing(url):
            return redis_pings(url)
        case LogLine(text):
            return saw(text)
    raise AssertionError(f"unknown health check {health!r}")
