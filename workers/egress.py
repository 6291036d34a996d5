"""Outbound HTTP for webhooks that cannot be turned into an SSRF proxy.

A webhook URL is chosen by an API client, so every delivery is a request to an address someone else picked. The
defence (OWASP SSRF cheat sheet, "case 2": block-list, since an allow-list of customers' hosts is impossible):

* :func:`parse_url` accepts only plain ``http``/``https`` URLs with a host: no userinfo, no fragment, no control
  characters, no numeric hosts that resolvers read as IPv4 but :mod:`ipaddress` does not (``127.1``, ``0x7f.1``).
* :class:`Policy` resolves the host and refuses it if ANY of its addresses is not public (loopback, private,
  link-local/metadata, CGNAT, multicast, reserved, Azure's WireServer, and the IPv4-mapped, NAT64 and 6to4 forms of
  those), unless the operator allowed that network explicitly.
* ``workers.sender.Sender`` connects only to addresses the policy validated ("pinning": the HTTP client never
  resolves the name itself, so DNS rebinding between check and connect is impossible), with SNI and the
  certificate check for the original host name. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import idna

from workers.errors import CallqError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}
_CGNAT = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598; is_private is False for it (is_global catches it too)
_AZURE_WIRESERVER = ipaddress.ip_address("168.63.129.16")  # "public" but reachable from every Azure VM
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: last 32 bits are the IPv4 address
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")  # underscores occur in real DNS names
_NUMERIC_LABEL = re.compile(r"[0-9]+|0x[0-9a-f]*")


class EgressRefused(CallqError):
    """Raised when a webhook URL is malformed, names a forbidden address, or does not resolve."""

    code = "webhook_url_invalid"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


def _invalid(message: str) -> EgressRefused:
    return EgressRefused("webhook_url_invalid", message)


@dataclass(frozen=True)
class Target:
    """A parsed webhook URL: where to connect and what to ask for."""

    url: str  # as given
    scheme: str  # "http" or "https"
    host: str  # lowercase ASCII (IDNA-encoded), no trailing dot; an IPv6 literal without brackets
    port: int  # explicit, or the scheme's default
    target: str  # path and query as sent on the request line; at least "/"

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: the original host, with the port only when it is not the default."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if _DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"


def parse_url(url: str) -> Target:
    """Parse a webhook URL; raises EgressRefused(webhook_url_invalid) for anything but a plain http(s) URL."""
    if len(url) > MAX_URL_CHARS:
        raise _invalid(f"webhook URL is longer than {MAX_URL_CHARS} characters")
    # urlsplit silently drops tabs and newlines and strips leading control characters: refuse them instead, so the
    # URL we check is the URL the client wrote.
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise _invalid("webhook URL must not contain spaces or control characters")
    if "#" in url:
        raise _invalid("webhook URL must not have a fragment (#...)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _invalid(f"webhook URL is malformed: {exc}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise _invalid("webhook URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise _invalid("webhook URL must not contain a user name or password")
    if not parts.hostname:
        raise _invalid("webhook URL must name a host")
    if port == 0:
        raise _invalid("webhook URL port must be between 1 and 65535")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url=url, scheme=parts.scheme, host=_host(parts.hostname, bracketed="[" in parts.netloc),
                  port=port or _DEFAULT_PORTS[parts.scheme], target=target)


def _host(host: str, *, bracketed: bool) -> str:
    """The canonical form of a URL's host: an IP literal's compressed form, or an IDNA-encoded DNS name."""
    if bracketed:
        # ipaddress accepts zone ids ("fe80::1%eth0"); refuse them: they name an interface of *our* machine.
        try:
            if "%" not in host:
                return ipaddress.IPv6Address(host).compressed
        except ValueError:
            pass
        raise _invalid("webhook URL has a malformed IPv6 address")
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        pass
    if not host.isascii():
        try:
            host = idna.encode(host, uts46=True).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            raise _invalid("webhook URL host is not a valid internationalised domain name") from None
    # Without the root's trailing dot: SNI must not carry it (RFC 6066) and the certificate does not name it.
    # (Resolving "hook" instead of "hook." may try search domains; whatever it finds is checked like any answer.)
    name = host.removesuffix(".")
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise _invalid("webhook URL host is not a valid domain name")
    # A resolver reads "127.1", "2130706433" or "0x7f.1" as an IPv4 address that ipaddress does not: refuse them
    # (WHATWG URL does the same) rather than check them as names.
    if _NUMERIC_LABEL.fullmatch(labels[-1]):
        raise _invalid("webhook URL host is a numeric address in a non-standard form")
    return name


def _unwrap(addr: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped IPv6 address (the socket layer connects to it), else addr."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 (64:ff9b::/96) or 6to4 (2002::/16) address reaches through a translator."""
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return addr.sixtofour


def is_public(addr: IPAddress) -> bool:
    """Whether an address is safe to deliver to without an operator's say-so."""
    if isinstance(addr, ipaddress.IPv6Address):
        addr = _unwrap(addr)
    if isinstance(addr, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(addr)
        if embedded is not None:
            # Judged by the IPv4 address reached. (Python counts all of 64:ff9b::/96 as reserved, being inside
            # ::/8, though IANA lists the NAT64 prefix as globally reachable: on an IPv6-only network with DNS64,
            # every IPv4-only webhook host resolves into it.)
            return is_public(embedded)
    # Python's is_global misses multicast and Azure's WireServer; the other terms are belt and braces.
    return addr.is_global and not (addr.is_multicast or addr.is_reserved or addr.is_unspecified
                                   or addr in _CGNAT or addr == _AZURE_WIRESERVER)


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class Policy:
    """Which addresses webhooks may reach: public ones, plus networks the operator allows (e.g. loopback in a demo)."""

    def __init__(self, allowed_networks: Sequence[str] = ()) -> None:
        """``allowed_networks``: CIDRs accepted even though not public; a bad entry raises ValueError naming it."""
        networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in allowed_networks:
            try:
                networks.append(ipaddress.ip_network(raw.strip(), strict=False))
            except ValueError:
                raise ValueError(f"allowed network {raw!r} is not an IP network in CIDR form") from None
        self.allowed_networks = tuple(networks)

    def _allowed(self, addr: IPAddress) -> bool:
        # Both forms: "::1/128, 127.0.0.0/8" must let ::ffff:127.0.0.1 through too. The NAT64/6to4 embedded form is
        # not matched: it reaches the network through a translator, which the operator did not name.
        candidates = {addr, _unwrap(addr)}
        return any(a in net for a in candidates for net in self.allowed_networks)

    def check_ip(self, ip: str) -> None:
        """Raise EgressRefused(webhook_url_forbidden) unless ``ip`` is public or inside an allowed network."""
        addr = _ip_literal(ip)
        if addr is None:  # fail closed: whatever this is, it was not checked
            raise EgressRefused("webhook_url_forbidden", f"webhook URL resolves to {ip!r}, which is not an address")
        if not (self._allowed(addr) or is_public(addr)):
            raise EgressRefused("webhook_url_forbidden",
                                f"webhook URL resolves to {ip}, which is not a public address")

    def check_literal(self, target: Target) -> None:
        """At registration: refuse a host that is a forbidden IP literal (names are checked at each delivery)."""
        if _ip_literal(target.host) is not None:
            self.check_ip(target.host)

    async def resolve(self, target: Target) -> list[str]:
        """The host's addresses, in resolver order, once each; refused if ANY of them is forbidden (OWASP: an
        attacker's DNS can mix a public address with an internal one)."""
        if _ip_literal(target.host) is not None:
            self.check_ip(target.host)
            return [target.host]
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):  # socket.gaierror is an OSError
            raise EgressRefused("webhook_url_unresolvable", f"webhook host {target.host} does not resolve") from None
        ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not ips:
            raise EgressRefused("webhook_url_unresolvable", f"webhook host {target.host} has no addresses")
        for ip in ips:
            self.check_ip(ip)
        return ips
