"""workers.acs.create_client: the environment's proxy and CA settings are read once, and still honoured."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fakeredis
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.unit.conftest import acs_response
from workers.acs import create_client, to_acs_error
from workers.ratelimit import RateLimiter, RateLimitPolicy
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


@contextlib.contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A local HTTP server answering with ``handler``, on a free port, for the block's duration; its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def proxy() -> Iterator[str]:
    _Proxy.seen = []
    with serving(_Proxy) as url:
        yield url


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


def test_a_429_error_carries_the_wait_acs_asked_for_in_any_header_form() -> None:
    for headers, expected in [({"Retry-After": "3"}, 3.0), ({"retry-after-ms": "1500"}, 1.5),
                              ({"x-ms-retry-after-ms": "250"}, 0.25), ({}, None)]:
        response = acs_response(429, headers).http_response
        err = to_acs_error(HttpResponseError(response=response))
        assert (err.status, err.retry_after_s, err.retryable) == (429, expected, True)


class _PauseRecorder(RateLimiter):
    def __init__(self) -> None:
        super().__init__(fakeredis.FakeRedis(), "acs.test", rate_per_s=10, burst=1)
        self.paused: list[float] = []

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


def test_a_429_pauses_the_shared_budget_for_the_wait_in_any_header_form() -> None:
    limiter = _PauseRecorder()
    policy = RateLimitPolicy(limiter, max_wait_s=0.0)
    for headers in ({"Retry-After": "2"}, {"retry-after-ms": "1500"}, {"x-ms-retry-after-ms": "250"}, {},
                    {"Retry-After": "soon"}):
        policy.on_response(None, acs_response(429, headers))  # type: ignore[arg-type]  # the request is unused
    policy.on_response(None, acs_response(200, {"Retry-After": "9"}))  # type: ignore[arg-type]  # not throttled
    assert limiter.paused == [2.0, 1.5, 0.25, 1.0, 1.0]  # none named (or unreadable): pause one second


def test_the_sdks_warning_about_its_own_transcription_keyword_is_dropped_and_no_other(
        settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    from azure.communication.callautomation._generated.models import StartTranscriptionRequest

    create_client(settings.with_(acs_access_key="a2V5"))
    with caplog.at_level("WARNING"):
        StartTranscriptionRequest(locale="en-US", speech_recognition_model_endpoint_id=None)  # as SDK 1.6 builds it
        StartTranscriptionRequest(locale="en-US", not_a_field=1)
    assert [r.getMessage().split(" ")[0] for r in caplog.records] == ["not_a_field"]
