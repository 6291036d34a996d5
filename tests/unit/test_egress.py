"""workers.egress: webhook URLs are parsed strictly, only public addresses are reached, and delivery is pinned to the
address that was checked (Host, SNI and the certificate still name the original host)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import email.utils
import socket
import ssl
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workers.egress import EgressRefused, Policy, Target, parse_url
from workers.sender import Answer, Sender, parse_retry_after

LOOPBACK = ("127.0.0.0/8", "::1/128")
T = TypeVar("T")


# --- a local HTTP(S) server ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Seen:
    path: str
    headers: Message
    body: bytes
    client: tuple[Any, ...]


Respond = Callable[["_Handler"], None]


class _Server(ThreadingHTTPServer):
    """Records every request and every accepted connection; answers with ``respond``."""

    daemon_threads = True

    def __init__(self, host: str, respond: Respond, tls: ssl.SSLContext | None) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.respond = respond
        self.seen: list[Seen] = []
        self.connections = 0
        super().__init__((host, 0), _Handler)
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1  # after accept (and, for TLS, after a successful handshake)
        return True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up on a slow or huge answer is what some tests do


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible
    server: _Server

    def do_POST(self) -> None:  # http.server calls do_<METHOD>
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.server.seen.append(Seen(self.path, self.headers, body, self.client_address))
        self.server.respond(self)

    def log_message(self, *args: object) -> None:
        pass  # quiet


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Respond:
    def respond(handler: _Handler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        with contextlib.suppress(OSError):  # the client may stop reading (a huge body) or be gone (a timeout)
            handler.wfile.write(body)
    return respond


def localhost_ip() -> str:
    """The address `localhost` resolves to first: the one Sender pins, so the one the server must listen on."""
    return str(socket.getaddrinfo("localhost", 0, type=socket.SOCK_STREAM)[0][4][0])


@contextlib.contextmanager
def serving(respond: Respond, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Iterator[_Server]:
    server = _Server(host, respond, tls)
    # A short poll interval: shutdown() waits for serve_forever to look (0.5 s by default, per test).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def post(url: str, *, allowed: Sequence[str] = LOOPBACK, body: bytes = b"{}", headers: dict[str, str] | None = None,
         **sender: Any) -> Answer:
    async def go() -> Answer:
        s = Sender(Policy(allowed), **sender)
        try:
            return await s.post(parse_url(url), body, headers or {})
        finally:
            await s.aclose()
    return run(go())


def refusal(call: Callable[[], object]) -> str:
    with pytest.raises(EgressRefused) as info:
        call()
    assert info.value.message
    return info.value.code


# --- parse_url -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "ftp://example.com/", "javascript:alert(1)", "example.com/hook", "//example.com/hook",
    "http://user:pw@example.com/", "http://user@example.com/", "http://:pw@example.com/",
    "http:///hook", "http://", "https://:443/",
    "https://example.com/#frag", "https://example.com/#",
    "http://example.com/" + "a" * 2030,
    "http://exa mple.com/", "http://example.com/\nHost: x", "http://example.com/\t", " http://example.com/",
    "http://127.1/", "http://2130706433/", "http://0x7f.1/", "http://0177.0.0.1/", "http://1.2.3.4.5/",
    "http://[fe80::1%25eth0]/", "http://[::1/", "http://[127.0.0.1]/", "http://[example.com]/",
    "http://example.com:0/", "http://example.com:99999/", "http://example.com:x/",
    "http://ex%41mple.com/", "http://a..b/", "http://-a.com/", "http://☃.net/", "http://" + "a" * 64 + ".com/",
])
def test_parse_url_refuses_anything_but_a_plain_http_url(url: str) -> None:
    assert refusal(lambda: parse_url(url)) == "webhook_url_invalid"


def test_parse_url_accepts_2048_characters_and_no_more() -> None:
    base = "https://example.com/"
    assert parse_url(base + "a" * (2048 - len(base))).target == "/" + "a" * (2048 - len(base))
    assert refusal(lambda: parse_url(base + "a" * (2049 - len(base)))) == "webhook_url_invalid"


@pytest.mark.parametrize(("url", "expected"), [
    ("http://Example.COM", Target("http://Example.COM", "http", "example.com", 80, "/")),
    ("https://example.com", Target("https://example.com", "https", "example.com", 443, "/")),
    ("HTTPS://example.com:8443/a/b?x=1&y=2",
     Target("HTTPS://example.com:8443/a/b?x=1&y=2", "https", "example.com", 8443, "/a/b?x=1&y=2")),
    ("http://[2606:4700:0:0::1111]:8080/x", Target("http://[2606:4700:0:0::1111]:8080/x", "http",
                                                  "2606:4700::1111", 8080, "/x")),
    ("http://8.8.8.8/", Target("http://8.8.8.8/", "http", "8.8.8.8", 80, "/")),
    ("https://Bücher.example/", Target("https://Bücher.example/", "https", "xn--bcher-kva.example", 443, "/")),
    ("https://_acme.example.com./", Target("https://_acme.example.com./", "https", "_acme.example.com", 443, "/")),
])
def test_parse_url(url: str, expected: Target) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(("url", "host_header"), [
    ("http://example.com/", "example.com"), ("http://example.com:80/", "example.com"),
    ("https://example.com:443/", "example.com"), ("https://example.com:80/", "example.com:80"),
    ("http://[::1]:8080/", "[::1]:8080"), ("https://[::1]/", "[::1]"),
])
def test_host_header_has_the_port_only_when_not_the_default(url: str, host_header: str) -> None:
    assert parse_url(url).host_header == host_header


# --- Policy ----------------------------------------------------------------------------------------------------------

FORBIDDEN = [
    "127.0.0.1", "127.255.0.1", "::1", "10.0.0.1", "172.16.0.1", "172.31.255.254", "192.168.1.1",
    "169.254.169.254", "fe80::1", "fc00::1", "fd00:ec2::254", "0.0.0.0", "::", "100.64.0.1", "100.127.255.254",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "168.63.129.16", "::ffff:168.63.129.16",
    "224.0.0.1", "ff02::1", "ff0e::1", "255.255.255.255", "240.0.0.1", "198.18.0.1",
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a83f:8110", "64:ff9b:1::808:808",
    "2002:a9fe:a9fe::1", "2002:7f00:1::1", "2002:e000:1::1", "::7f00:1", "2001::1", "2001:db8::1",
    "not-an-address", "fe80::1%eth0",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "20.0.0.1", "2606:4700::1111", "2001:4860:4860::8888", "::ffff:8.8.8.8",
          "64:ff9b::808:808", "2002:808:808::1", "100.128.0.1"]


@pytest.mark.parametrize("ip", FORBIDDEN)
def test_non_public_addresses_are_forbidden(ip: str) -> None:
    assert refusal(lambda: Policy().check_ip(ip)) == "webhook_url_forbidden"


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_pass(ip: str) -> None:
    Policy().check_ip(ip)


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"])
def test_allowed_networks_let_loopback_through(ip: str) -> None:
    Policy(LOOPBACK).check_ip(ip)


@pytest.mark.parametrize("ip", [ip for ip in FORBIDDEN if ip not in {"127.0.0.1", "127.255.0.1", "::1",
                                                                     "::ffff:127.0.0.1"}])
def test_allowed_networks_let_nothing_else_through(ip: str) -> None:
    # Including 64:ff9b::7f00:1 and 2002:7f00:1::1: those reach 127.0.0.1 through a translator, not this machine.
    assert refusal(lambda: Policy(LOOPBACK).check_ip(ip)) == "webhook_url_forbidden"


def test_allowed_networks_must_be_networks() -> None:
    with pytest.raises(ValueError, match="'loopback'"):
        Policy(["127.0.0.0/8", "loopback"])


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data", "http://[::1]:8080/",
                                 "https://[::ffff:10.0.0.1]/"])
def test_check_literal_refuses_forbidden_ip_literals(url: str) -> None:
    assert refusal(lambda: Policy().check_literal(parse_url(url))) == "webhook_url_forbidden"


@pytest.mark.parametrize("url", ["http://8.8.8.8/", "https://localhost/", "https://metadata.google.internal/"])
def test_check_literal_leaves_names_for_delivery(url: str) -> None:
    Policy().check_literal(parse_url(url))


def test_resolve_refuses_localhost_unless_loopback_is_allowed() -> None:
    target = parse_url("http://localhost:8080/")
    assert refusal(lambda: run(Policy().resolve(target))) == "webhook_url_forbidden"
    assert localhost_ip() in run(Policy(LOOPBACK).resolve(target))


def test_resolve_of_an_unknown_name_is_unresolvable() -> None:
    target = parse_url("https://nonexistent.invalid/hook")
    assert refusal(lambda: run(Policy().resolve(target))) == "webhook_url_unresolvable"


def test_resolve_of_an_ip_literal_checks_it_without_dns() -> None:
    assert run(Policy().resolve(parse_url("http://[2606:4700::1111]/"))) == ["2606:4700::1111"]
    assert refusal(lambda: run(Policy().resolve(parse_url("http://10.1.2.3/")))) == "webhook_url_forbidden"


def _fake_dns(answers: dict[str, list[str]], calls: list[str] | None = None) -> Callable[..., Any]:
    """A stand-in for loop.getaddrinfo: names to addresses, in order, as getaddrinfo returns them."""
    async def getaddrinfo(host: str, port: int, **_: Any) -> list[tuple[Any, ...]]:
        if calls is not None:
            calls.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port))
                for ip in answers[host]]
    return getaddrinfo


def test_resolve_refuses_a_name_if_any_of_its_addresses_is_forbidden() -> None:
    async def go(policy: Policy) -> list[str]:
        asyncio.get_running_loop().getaddrinfo = _fake_dns(  # type: ignore[method-assign]
            {"mixed.example": ["8.8.8.8", "8.8.8.8", "1.1.1.1", "10.0.0.1"], "public.example": ["8.8.8.8", "8.8.8.8"],
             "empty.example": []})
        if policy.allowed_networks:
            return await policy.resolve(parse_url("http://mixed.example/"))
        with pytest.raises(EgressRefused) as info:
            await policy.resolve(parse_url("http://mixed.example/"))
        assert info.value.code == "webhook_url_forbidden"
        with pytest.raises(EgressRefused) as info:
            await policy.resolve(parse_url("http://empty.example/"))
        assert info.value.code == "webhook_url_unresolvable"
        return await policy.resolve(parse_url("http://public.example/"))

    assert run(go(Policy())) == ["8.8.8.8"]  # unique, in resolver order
    assert run(go(Policy(["10.0.0.0/8"]))) == ["8.8.8.8", "1.1.1.1", "10.0.0.1"]


# --- Retry-After -----------------------------------------------------------------------------------------------------

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("7", 7.0), (" 120 ", 120.0), ("0", 0.0), ("-1", None), ("1.5", None), ("soon", None), ("", None),
    ("²", None),
    (email.utils.format_datetime(NOW + datetime.timedelta(seconds=30), usegmt=True), 30.0),
    ("Thu, 01 Jan 2026 00:01:00 -0000", 60.0),
    (email.utils.format_datetime(NOW - datetime.timedelta(hours=1), usegmt=True), 0.0),
])
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now_s=NOW.timestamp()) == expected


# --- Sender: pinned delivery over HTTP -------------------------------------------------------------------------------

def test_post_is_pinned_to_the_checked_address_with_the_original_host_header() -> None:
    with serving(answer(204), host=localhost_ip()) as server:
        got = post(f"http://localhost:{server.port}/hook?x=1", body=b'{"type": "command.succeeded"}',
                   headers={"webhook-id": "msg_1", "Content-Type": "application/json", "Host": "evil.example"})
    assert (got.status, got.error, got.retry_after_s) == (204, "", None)
    assert got.elapsed_s >= 0
    [seen] = server.seen
    assert seen.path == "/hook?x=1"
    assert seen.headers.get_all("Host") == [f"localhost:{server.port}"]  # the caller's Host is never sent
    assert seen.headers["webhook-id"] == "msg_1"
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == b'{"type": "command.succeeded"}'


def test_post_to_a_name_only_the_policy_resolves_shows_the_http_client_never_resolves_it() -> None:
    """hook.example exists only in the fake resolver the policy uses: if aiohttp resolved it again, nothing would
    answer. Resolutions are cached for resolve_ttl_s; 0 resolves every time."""
    async def go(server: _Server, ttl_s: float) -> tuple[list[Answer], list[str]]:
        calls: list[str] = []
        asyncio.get_running_loop().getaddrinfo = _fake_dns(  # type: ignore[method-assign]
            {"hook.example": ["127.0.0.1"]}, calls)
        sender = Sender(Policy(LOOPBACK), resolve_ttl_s=ttl_s)
        try:
            target = parse_url(f"http://hook.example:{server.port}/")
            return [await sender.post(target, b"", {}) for _ in range(2)], calls
        finally:
            await sender.aclose()

    with serving(answer(200)) as server:
        answers, calls = run(go(server, 30.0))
        assert [a.status for a in answers] == [200, 200] and calls == ["hook.example"]
        assert {s.headers["Host"] for s in server.seen} == {f"hook.example:{server.port}"}
        answers, calls = run(go(server, 0.0))
        assert [a.status for a in answers] == [200, 200] and calls == ["hook.example", "hook.example"]


def test_post_reuses_the_connection_to_a_pinned_origin() -> None:
    async def go(port: int) -> list[Answer]:
        sender = Sender(Policy(LOOPBACK))
        try:
            return [await sender.post(parse_url(f"http://127.0.0.1:{port}/"), b"x", {}) for _ in range(3)]
        finally:
            await sender.aclose()

    with serving(answer(200, body=b"ok")) as server:
        assert [a.status for a in run(go(server.port))] == [200, 200, 200]
    assert server.connections == 1 and len({s.client for s in server.seen}) == 1


def test_a_redirect_is_returned_not_followed() -> None:
    with serving(lambda h: answer(301, {"Location": f"http://127.0.0.1:{h.server.port}/elsewhere"})(h)) as server:
        got = post(f"http://127.0.0.1:{server.port}/hook")
    assert (got.status, got.error) == (301, "")
    assert [s.path for s in server.seen] == ["/hook"]


def test_retry_after_is_read_from_a_429() -> None:
    with serving(answer(429, {"Retry-After": "7"})) as server:
        got = post(f"http://127.0.0.1:{server.port}/")
    assert (got.status, got.retry_after_s, got.error) == (429, 7.0, "")


def test_a_huge_answer_is_not_read_to_the_end() -> None:
    """The server promises 1 MiB, sends 128 KiB and stalls: only a reader that stops early gets the status."""
    release = threading.Event()

    def huge(handler: _Handler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(1024 * 1024))
        handler.end_headers()
        with contextlib.suppress(OSError):
            handler.wfile.write(b"x" * (128 * 1024))
            handler.wfile.flush()
        release.wait(30)

    try:
        with serving(huge) as server:
            got = post(f"http://127.0.0.1:{server.port}/", timeout_s=10)
    finally:
        release.set()
    assert (got.status, got.error) == (200, "")


def test_a_server_slower_than_timeout_s_is_a_timeout() -> None:
    release = threading.Event()

    def slow(handler: _Handler) -> None:
        release.wait(30)  # until the test has its answer (bounded, so a failing test cannot hang the server)
        answer(200)(handler)

    try:
        with serving(slow) as server:
            got = post(f"http://127.0.0.1:{server.port}/", timeout_s=0.2)
            assert (got.status, got.error) == (None, "timeout")
            assert len(server.seen) == 1  # it did reach the server; the answer never came back in time
    finally:
        release.set()


def test_nothing_is_sent_to_a_forbidden_address() -> None:
    with serving(answer(200), host=localhost_ip()) as server:
        for url in [f"http://localhost:{server.port}/", f"http://{localhost_ip()}:{server.port}/"]:
            got = post(url, allowed=())
            assert (got.status, got.retry_after_s, got.error) == (None, None, "forbidden_address")
    assert server.connections == 0 and server.seen == []


def test_an_unresolvable_host_is_an_answer_not_an_exception() -> None:
    got = post("http://nonexistent.invalid/hook")
    assert (got.status, got.error) == (None, "unresolvable")


def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        got = post(f"http://127.0.0.1:{s.getsockname()[1]}/")
    assert (got.status, got.error) == (None, "connect_error")


def test_a_forgotten_name_finishes_its_delivery_first() -> None:
    """max_clients=1: a second name pushes the first out of the remembered addresses while the first's POST is
    still in flight."""
    received, release = threading.Event(), threading.Event()

    def slow(handler: _Handler) -> None:
        received.set()
        release.wait(30)
        answer(200)(handler)

    async def go(port: int) -> tuple[Answer, Answer]:
        sender = Sender(Policy(LOOPBACK), max_clients=1)
        try:
            ip = localhost_ip()
            first = asyncio.create_task(sender.post(parse_url(f"http://{ip if ':' not in ip else f'[{ip}]'}:{port}/a"),
                                                    b"", {}))
            assert await asyncio.to_thread(received.wait, 30)
            server.respond = answer(200)
            second = await sender.post(parse_url(f"http://localhost:{port}/b"), b"", {})  # pushes the first out
            release.set()
            return await first, second
        finally:
            await sender.aclose()

    try:
        with serving(slow, host=localhost_ip()) as server:
            first, second = run(go(server.port))
    finally:
        release.set()
    assert (first.status, second.status) == (200, 200)


# --- Sender: pinned delivery over HTTPS ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    ca_key: ec.EllipticCurvePrivateKey

    def leaf(self, directory: Path, name: str) -> ssl.SSLContext:
        """A server context whose certificate, signed by this CA, names ``name`` (and nothing else)."""
        key = ec.generate_private_key(ec.SECP256R1())
        ca = x509.load_pem_x509_certificate(self.ca_pem)
        cert = (_builder(name, key.public_key(), issuer=ca.subject)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.ca_key, hashes.SHA256()))
        cert_file, key_file = directory / f"{name}.pem", directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context

    def client(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def _builder(name: str, public_key: Any, *, issuer: x509.Name) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer).public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1)))


@pytest.fixture(scope="module")
def pki() -> Pki:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "callq test CA")])
    ca = (_builder("callq test CA", key.public_key(), issuer=subject)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(key, hashes.SHA256()))
    return Pki(ca.public_bytes(serialization.Encoding.PEM), key)


def test_https_is_pinned_yet_sends_sni_and_checks_the_certificate_for_the_host_name(pki: Pki,
                                                                                     tmp_path: Path) -> None:
    server_tls = pki.leaf(tmp_path, "localhost")
    sni: list[str | None] = []

    def record_sni(_sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        sni.append(name)

    server_tls.sni_callback = record_sni
    with serving(answer(200), host=localhost_ip(), tls=server_tls) as server:
        got = post(f"https://localhost:{server.port}/hook", verify=pki.client())
    assert (got.status, got.error) == (200, "")
    assert sni == ["localhost"]
    assert [s.headers["Host"] for s in server.seen] == [f"localhost:{server.port}"]


def test_https_with_a_certificate_for_another_name_fails(pki: Pki, tmp_path: Path) -> None:
    with serving(answer(200), host=localhost_ip(), tls=pki.leaf(tmp_path, "other.example")) as server:
        got = post(f"https://localhost:{server.port}/hook", verify=pki.client())
    assert (got.status, got.error) == (None, "tls_error")
    assert server.seen == []


def test_https_to_an_untrusted_ca_fails(pki: Pki, tmp_path: Path) -> None:
    with serving(answer(200), host=localhost_ip(), tls=pki.leaf(tmp_path, "localhost")) as server:
        got = post(f"https://localhost:{server.port}/hook")  # the default CA bundle does not know the test CA
    assert (got.status, got.error) == (None, "tls_error")
    assert server.seen == []
