"""Webhook POSTs on aiohttp, connecting only to addresses ``workers.egress.Policy`` validated.

Pinning: the URL keeps its host name (so connections are pooled per name, TLS sends SNI and checks the certificate
for that name, and ``Host`` is right), but aiohttp's resolver here is a lookup of what the policy already validated
for that name (``_Validated``): aiohttp never asks DNS itself, so a name cannot be re-pointed at an internal address
between the check and the connection (DNS rebinding). An IP-literal URL is checked before aiohttp sees it.

Why aiohttp and not httpx (which the rest of callq uses for its own clients): deliveries are a hot path, many in
flight to one origin; measured here, httpx's connection pool cost 3-4 ms of CPU per POST at 64 connections to one
origin (it re-scans every pooled connection on each request), aiohttp 0.2 ms.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from workers.egress import EgressRefused, Policy, Target

MAX_BODY_BYTES = 64 * 1024  # we only need the status; reading a small body lets the connection be kept alive
_DELTA_SECONDS = re.compile(r"[0-9]+")
_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})  # ours to set, never the caller's
_REFUSALS = {"webhook_url_forbidden": "forbidden_address", "webhook_url_unresolvable": "unresolvable",
             "webhook_url_invalid": "invalid_url"}


@dataclass(frozen=True)
class Answer:
    """What one delivery attempt got: an HTTP status, or why there was none."""

    status: int | None  # None: no HTTP answer (refused, unreachable, timed out)
    retry_after_s: float | None  # from Retry-After; never negative
    error: str  # "" on an HTTP answer, else a short stable word (see Sender.post)
    elapsed_s: float


def parse_retry_after(value: str | None, *, now_s: float) -> float | None:
    """Retry-After (RFC 9110: delay-seconds or an HTTP-date) as seconds from ``now_s``; None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if _DELTA_SECONDS.fullmatch(value):  # not str.isdigit(): it accepts "²" and other non-ASCII digits
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    # An HTTP-date is GMT, but parsedate_to_datetime returns a naive datetime for a "-0000" zone, which timestamp()
    # would take as local time.
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_s)


def _error(exc: BaseException) -> str:
    """A short stable word for an aiohttp failure."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return "tls_error"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return "connect_error"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError | aiohttp.ClientResponseError):
        return "protocol_error"
    if isinstance(exc, aiohttp.InvalidURL):
        return "invalid_url"
    return "network_error"


class _Validated(AbstractResolver):
    """aiohttp's resolver: the addresses the policy validated for a name (the first one: the one we connect to)."""

    def __init__(self) -> None:
        self.addresses: dict[tuple[str, int], str] = {}

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        ip = self.addresses.get((host, port))
        if ip is None:  # never: Sender.post validates first; refuse rather than fall back to DNS
            raise OSError(f"{host} was not checked by the egress policy")
        return [{"hostname": host, "host": ip, "port": port, "family": socket.AF_INET6 if ":" in ip else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        """Nothing to release."""


class Sender:
    """Delivers POSTs to policy-checked addresses, keeping connections alive per origin (one aiohttp session)."""

    def __init__(self, policy: Policy, *, timeout_s: float = 15.0, max_connections: int = 10,
                 verify: ssl.SSLContext | bool = True, max_clients: int = 256, resolve_ttl_s: float = 30.0,
                 clock: Callable[[], float] = time.time) -> None:
        """``timeout_s`` bounds a whole attempt (resolution included); ``max_connections`` is the most connections
        open at once, all origins together; ``verify`` a context with the CA to trust (tests), or False;
        ``max_clients`` bounds the names whose validated address is remembered, for ``resolve_ttl_s`` (0: resolve
        every time); ``clock`` is the wall clock Retry-After dates are measured against."""
        self._policy = policy
        self._timeout_s = timeout_s
        self._max_connections = max_connections
        self._ssl: ssl.SSLContext | bool = verify if isinstance(verify, ssl.SSLContext) else (
            ssl.create_default_context() if verify else False)
        self._max_names = max_clients
        self._resolve_ttl_s = resolve_ttl_s
        self._clock = clock
        self._resolved: OrderedDict[tuple[str, int], tuple[float, list[str]]] = OrderedDict()
        self._validated = _Validated()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the event loop that uses it
            # use_dns_cache=False: aiohttp asks _Validated every time, which answers from what was checked just now.
            connector = aiohttp.TCPConnector(limit=self._max_connections, limit_per_host=0, resolver=self._validated,
                                             use_dns_cache=False, ssl=self._ssl)
            # trust_env=False: no proxy from HTTP(S)_PROXY (a proxy would connect for us); no cookies kept.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def post(self, target: Target, body: bytes, headers: Mapping[str, str]) -> Answer:
        """POST ``body`` to ``target`` at its first validated address; never raises for a delivery failure.

        ``error`` is one of: forbidden_address, unresolvable, invalid_url, timeout, connect_error, tls_error,
        protocol_error, network_error. A 3xx is returned as its status: redirects are never followed.
        """
        started = time.monotonic()
        deadline = asyncio.get_running_loop().time() + self._timeout_s
        try:
            async with asyncio.timeout_at(deadline):
                ips = await self._resolve(target)
                self._validated.addresses[(target.host, target.port)] = ips[0]
                status, retry_after_s = await self._send(target, body, headers)
        except EgressRefused as exc:
            return Answer(None, None, _REFUSALS.get(exc.code, exc.code), time.monotonic() - started)
        except TimeoutError:
            return Answer(None, None, "timeout", time.monotonic() - started)
        except (aiohttp.ClientError, ValueError) as exc:  # ValueError: a URL aiohttp cannot build (scoped IPv6)
            return Answer(None, None, _error(exc) if isinstance(exc, aiohttp.ClientError) else "invalid_url",
                          time.monotonic() - started)
        return Answer(status, retry_after_s, "", time.monotonic() - started)

    async def _send(self, target: Target, body: bytes, headers: Mapping[str, str]) -> tuple[int, float | None]:
        request_headers = {k: v for k, v in headers.items() if k.lower() not in _FRAMING_HEADERS}
        host = f"[{target.host}]" if ":" in target.host else target.host
        url = f"{target.scheme}://{host}:{target.port}{target.target}"
        response: Any = await self._client().post(url, data=body, headers=request_headers, allow_redirects=False)
        try:
            await response.content.read(MAX_BODY_BYTES)
            if not response.content.at_eof():
                response.close()  # a huge answer: drop the connection rather than read it all
            return int(response.status), parse_retry_after(response.headers.get("retry-after"), now_s=self._clock())
        finally:
            response.release()

    async def _resolve(self, target: Target) -> list[str]:
        """Policy.resolve, remembered for ``resolve_ttl_s``: only validated answers are cached."""
        key = (target.host, target.port)
        now = time.monotonic()
        cached = self._resolved.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        ips = await self._policy.resolve(target)
        if self._resolve_ttl_s > 0:
            self._resolved[key] = (now + self._resolve_ttl_s, ips)
            self._resolved.move_to_end(key)
            while len(self._resolved) > self._max_names:
                old, _ = self._resolved.popitem(last=False)
                self._validated.addresses.pop(old, None)
        return ips

    async def aclose(self) -> None:
        """Close the session (and so every kept-alive connection)."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._resolved.clear()
