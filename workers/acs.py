"""The ACS Call Automation client as callq uses it: the real SDK, stable repeatability, errors mapped to ours.

The SDK mints a fresh ``Repeatability-Request-ID`` inside every method call, so a retried task would
be executed by ACS as a new request. :class:`StableRepeatability` is an SDK pipeline policy that
rewrites both repeatability headers from the command being run (a context variable set by the
runtime), so every attempt of one command carries the same id and ACS executes it once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import datetime
from email.utils import format_datetime

from azure.communication.callautomation import CallAutomationClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.core.pipeline import PipelineContext, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.core.pipeline.transport import RequestsTransport
from requests import Session
from requests.utils import get_environ_proxies

from workers.errors import AcsError, ConfigError
from workers.ratelimit import RateLimiter, RateLimitPolicy
from workers.retry import retry_after_s
from workers.settings import Settings

_NAMESPACE = uuid.UUID("6f1c3a52-8a1e-4c55-9d0e-ca11ca11ca11")
_current: contextvars.ContextVar[tuple[str, datetime] | None] = contextvars.ContextVar("callq_command", default=None)


def repeatability_id(command_id: str) -> str:
    """The Repeatability-Request-ID for a command: a UUID derived from its id, the same on every attempt."""
    return str(uuid.uuid5(_NAMESPACE, command_id))


@contextlib.contextmanager
def command_scope(command_id: str, created_at: datetime) -> Iterator[None]:
    """Make SDK requests sent inside this block carry the command's stable repeatability headers."""
    token = _current.set((command_id, created_at))
    try:
        yield
    finally:
        _current.reset(token)


class StableRepeatability(SansIOHTTPPolicy):  # type: ignore[type-arg]  # azure-core generics: any transport
    """Replace the SDK's per-call random repeatability headers with ones derived from the command."""

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]  # any transport
        current = _current.get()
        headers = request.http_request.headers
        if current is None or "Repeatability-Request-ID" not in headers:
            return
        command_id, created_at = current
        headers["Repeatability-Request-ID"] = repeatability_id(command_id)
        headers["Repeatability-First-Sent"] = format_datetime(created_at, usegmt=True)


class EndpointTransport(RequestsTransport):  # type: ignore[misc]  # azure-core types its base as Any
    """The SDK's requests transport, with the environment's proxy and CA settings read once, not per request.

    With ``trust_env`` requests re-reads every proxy variable and ``~/.netrc`` on each call (~15 % of a send's
    CPU, measured with cProfile against the simulator). The client only ever talks to one endpoint, so the
    answer is fixed: the proxies for it (``NO_PROXY`` honoured) and the CA bundle are resolved at start-up.
    Credentials from ``~/.netrc`` are not applied, which is right: requests would put them in place of the
    HMAC ``Authorization`` header ACS needs.
    """

    def __init__(self, endpoint: str, **kwargs: object) -> None:
        ca_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        super().__init__(use_env_settings=False, **({"connection_verify": ca_bundle} if ca_bundle else {}), **kwargs)
        self.proxies = get_environ_proxies(endpoint)

    def _init_session(self, session: Session) -> None:
        super()._init_session(session)
        session.proxies.update(self.proxies)


class _SdkOwnKeyword(logging.Filter):
    """Drop the warning SDK 1.6 logs on every transcription start, update and connect with transcription options:
    it passes ``speech_recognition_model_endpoint_id`` to generated models that call the field something else
    (callq never sets it), so the warning says nothing about the request."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("speech_recognition_model_endpoint_id is not a known attribute")


_SDK_OWN_KEYWORD = _SdkOwnKeyword()


def create_client(settings: Settings, limiter: RateLimiter | None = None) -> CallAutomationClient:
    """One SDK client per worker process. Built from endpoint + key so plain-HTTP simulator URLs work.

    ``from_connection_string`` would force https; the endpoint must have no trailing slash because the
    SDK signs the host string as configured. SDK-level retries are off: the runtime decides what is safe
    to repeat. With a ``limiter`` every request pays the shared ACS budget first.
    """
    # azure-core logs every request and response at INFO; callq logs commands itself.
    logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)
    logging.getLogger("azure.communication.callautomation._generated._utils.serialization").addFilter(
        _SDK_OWN_KEYWORD)  # the same object each time: added once
    if not settings.acs_access_key:
        raise ConfigError("CALLQ_ACS_ACCESS_KEY (or CALLQ_ACS_CONNECTION_STRING) must be set to reach ACS")
    endpoint = settings.acs_endpoint.rstrip("/")
    return CallAutomationClient(
        endpoint,
        AzureKeyCredential(settings.acs_access_key),
        transport=EndpointTransport(endpoint, connection_timeout=settings.acs_timeout_s,
                                    read_timeout=settings.acs_timeout_s),
        per_call_policies=[StableRepeatability()],
        per_retry_policies=[RateLimitPolicy(limiter, settings.rate_wait_max_s)] if limiter else [],
        retry_total=0,
        connection_timeout=settings.acs_timeout_s,
        read_timeout=settings.acs_timeout_s,
    )


def _retry_after(exc: HttpResponseError) -> float | None:
    response = exc.response
    if response is None:
        return None
    return retry_after_s(PipelineResponse(response.request, response, PipelineContext(None)))


def to_acs_error(exc: Exception) -> AcsError:
    """Translate an SDK exception into an AcsError carrying ACS's status, code and subcode.

    ``retryable`` says the failure is transient (429, 5xx, timeout, connection). Whether repeating is
    *safe* is the runtime's decision: it depends on whether the operation carries repeatability headers.
    """
    if isinstance(exc, ServiceRequestError):
        # The request never got a response; for connection refused it provably did not reach ACS.
        return AcsError(f"ACS unreachable: {type(exc).__name__}", retryable=True, may_have_executed=False)
    if isinstance(exc, ServiceResponseError):
        return AcsError(f"ACS connection dropped before a response: {type(exc).__name__}", retryable=True)
    if isinstance(exc, HttpResponseError):
        status = exc.status_code
        err = exc.error
        code = str(err.code) if err is not None and err.code is not None else None
        message = err.message if err is not None and err.message else (exc.reason or "ACS error")
        subcode: int | None = None
        if code and code.isdigit():
            subcode = int(code)
        transient = status is not None and (status == 429 or status == 408 or status >= 500)
        return AcsError(
            f"ACS answered {status}: {message}", status=status, acs_code=code, acs_subcode=subcode,
            retry_after_s=_retry_after(exc), retryable=transient,
            may_have_executed=status != 429,  # a throttled request was refused, not executed
        )
    return AcsError(f"ACS request failed: {type(exc).__name__}", retryable=False)
