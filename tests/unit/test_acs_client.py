"""workers.acs.create_client: the environment's proxy and CA settings are read once, and still honoured."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.exceptions import ResourceNotFoundError

from workers.acs import create_client
from workers.settings import Settings


class _Proxy(BaseHTTPRequestHandler):
    """A forward proxy that answers every request itself with ACS's 404, remembering the request line."""

    seen: list[str] = []

    def do_GET(self) -> None:  # http.server calls do_<METHOD>
        self.seen.append(self.requestline)
        body = b'{"error": {"code": "8522", "message": "Call not found."}}'
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass  # quiet


@pytest.fixture
def proxy() -> Iterator[str]:
    _Proxy.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _transport(settings: Settings, endpoint: str):  # type: ignore[no-untyped-def]
    client = create_client(dataclasses.replace(settings, acs_endpoint=endpoint, acs_access_key="a2V5"))
    return client, client._client._client._pipeline._transport  # the SDK's own attribute path


def test_requests_does_not_re_read_the_environment_per_call(settings: Settings,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/corp.pem")
    _, transport = _transport(settings, "https://res.communication.azure.com")
    transport.open()
    assert transport.session.trust_env is False
    assert transport.session.proxies["https"] == "http://proxy.example:3128"
    assert transport.connection_config.verify == "/etc/ssl/certs/corp.pem"
    assert transport.connection_config.timeout == settings.acs_timeout_s

    _, bypassed = _transport(settings, "https://acs.internal.example")
    bypassed.open()
    assert not any(k in bypassed.session.proxies for k in ("http", "https"))  # NO_PROXY matched the endpoint


def test_an_environment_proxy_carries_the_sdks_requests(settings: Settings, proxy: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client, _ = _transport(settings, "http://acs.invalid")
    with pytest.raises(ResourceNotFoundError):
        client.get_call_connection("cc-1").get_call_properties()
    assert len(_Proxy.seen) == 1
    assert _Proxy.seen[0].startswith("GET http://acs.invalid/calling/callConnections/cc-1?")  # absolute form: proxied
