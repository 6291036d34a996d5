"""Simulator settings: read once from the environment, then passed in.

Environment variables (all optional except the access key):

- ``CALLQ_SIM_HOST`` (default ``127.0.0.1``): interface to listen on.
- ``CALLQ_SIM_PORT`` (default ``8089``): port to listen on.
- ``CALLQ_ACS_ACCESS_KEY`` (required): base64 HMAC key shared with callq; requests must be signed with it.
- ``CALLQ_ACS_RESOURCE_ID`` (default ``00000000-0000-4000-8000-00000000ca11``): ``aud`` of callback JWTs.
- ``CALLQ_SIM_PUBLIC_URL`` (default ``http://{host}:{port}``): base URL put in the OpenID ``jwks_uri``.
- ``CALLQ_SIM_ISSUER`` (default ``https://acscallautomation.communication.azure.com``): ``iss`` of callback JWTs.
- ``CALLQ_LOG_FORMAT`` (default ``text``): ``text`` (uvicorn's own lines) or ``json`` (one object per line); the
  variable callq's processes read too, so ``callq up`` and compose switch every process at once.
- ``CALLQ_SIM_RECORDING_FILE_DELAY_S`` (default ``5``): seconds from a recording's stop to its
  ``RecordingFileStatusUpdated`` (ACS: "typically a few minutes").
- ``CALLQ_SIM_FFMPEG`` (default ``ffmpeg``): the encoder of mp3 / mp4 recording files (``simulator.encoder``).

Event Grid (one webhook subscription made at start, named ``callq``; more through ``/_sim/eventgrid``):

- ``CALLQ_SIM_EVENTGRID_URL`` (default: none): the webhook endpoint; may carry a secret query parameter.
- ``CALLQ_SIM_EVENTGRID_SCHEMA`` (default ``EventGridSchema``): or ``CloudEventSchemaV1_0``.
- ``CALLQ_SIM_EVENTGRID_TENANT_ID`` + ``CALLQ_SIM_EVENTGRID_AUDIENCE`` (default: none): both set → every delivery
  carries an Entra-style bearer token for that tenant and audience; one without the other is an error.
- ``CALLQ_SIM_EVENTGRID_MAX_EVENTS_PER_BATCH`` (default ``1``, at most 5000): events per POST.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

DEFAULT_RESOURCE_ID = "00000000-0000-4000-8000-00000000ca11"
DEFAULT_ISSUER = "https://acscallautomation.communication.azure.com"
EVENTGRID_SCHEMAS = ("EventGridSchema", "CloudEventSchemaV1_0")
MAX_EVENTS_PER_BATCH = 5000


class ConfigError(ValueError):
    """Raised when a setting is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the simulator needs to start; tests build it directly."""

    access_key: str = field(default="", repr=False)  # never printed, never logged
    host: str = "127.0.0.1"
    port: int = 8089
    resource_id: str = DEFAULT_RESOURCE_ID
    public_url: str = ""  # empty: derived from host and port
    issuer: str = DEFAULT_ISSUER
    log_format: str = "text"
    recording_file_delay_s: float = 5.0
    ffmpeg: str = "ffmpeg"  # encodes mp3 / mp4 recording files (simulator.encoder): a name on PATH or a path
    eventgrid_url: str = field(default="", repr=False)  # may carry a secret query parameter
    eventgrid_schema: str = "EventGridSchema"
    eventgrid_tenant_id: str = ""
    eventgrid_audience: str = ""
    eventgrid_max_events_per_batch: int = 1
    # Not read from the environment: tuning that only tests and benchmarks change.
    max_clock_skew_s: float = 900.0
    callback_timeout_s: float = 5.0
    callback_attempts: int = 4
    callback_backoff_s: float = 0.05
    eventgrid_retry_scale: float = 1.0  # multiplies Event Grid's retry schedule (tests: 0.001)
    eventgrid_timeout_s: float = 30.0  # Event Grid waits 30 s for an answer
    # The ACS resource the Event Grid ``topic`` names.
    azure_subscription_id: str = "00000000-0000-4000-8000-0000000000a5"
    resource_group: str = "callq-sim"
    resource_name: str = "callq-sim"

    def __post_init__(self) -> None:
        _check_access_key(self.access_key)
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://{self.host}:{self.port}")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))
        _check_eventgrid(self)

    @property
    def topic(self) -> str:
        """The ACS resource as Event Grid's ``topic`` (and CloudEvents ``source``) names it."""
        return (f"/subscriptions/{self.azure_subscription_id}/resourcegroups/{self.resource_group}"
                f"/providers/microsoft.communication/communicationservices/{self.resource_name}")

    @property
    def key_bytes(self) -> bytes:
        """The decoded HMAC key."""
        return base64.b64decode(self.access_key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        """Build settings from ``CALLQ_*`` variables; raises ConfigError naming a bad variable."""
        host = env.get("CALLQ_SIM_HOST", cls.host) or cls.host
        port = _port(env.get("CALLQ_SIM_PORT", str(cls.port)))
        log_format = env.get("CALLQ_LOG_FORMAT", "") or cls.log_format
        if log_format not in ("text", "json"):
            raise ConfigError(f"CALLQ_LOG_FORMAT must be 'text' or 'json', got {log_format!r}")
        return cls(
            access_key=env.get("CALLQ_ACS_ACCESS_KEY", ""),
            host=host,
            port=port,
            resource_id=env.get("CALLQ_ACS_RESOURCE_ID", "") or DEFAULT_RESOURCE_ID,
            public_url=env.get("CALLQ_SIM_PUBLIC_URL", ""),
            issuer=env.get("CALLQ_SIM_ISSUER", "") or DEFAULT_ISSUER,
            log_format=log_format,
            recording_file_delay_s=_non_negative(env, "CALLQ_SIM_RECORDING_FILE_DELAY_S", cls.recording_file_delay_s),
            ffmpeg=env.get("CALLQ_SIM_FFMPEG", "") or cls.ffmpeg,
            eventgrid_url=env.get("CALLQ_SIM_EVENTGRID_URL", ""),
            eventgrid_schema=env.get("CALLQ_SIM_EVENTGRID_SCHEMA", "") or cls.eventgrid_schema,
            eventgrid_tenant_id=env.get("CALLQ_SIM_EVENTGRID_TENANT_ID", ""),
            eventgrid_audience=env.get("CALLQ_SIM_EVENTGRID_AUDIENCE", ""),
            eventgrid_max_events_per_batch=_batch_size(env.get("CALLQ_SIM_EVENTGRID_MAX_EVENTS_PER_BATCH", "") or "1"),
        )


def _check_access_key(key: str) -> None:
    if not key:
        raise ConfigError(
            "CALLQ_ACS_ACCESS_KEY is empty; set it to the base64 access key callq signs ACS requests with"
        )
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("CALLQ_ACS_ACCESS_KEY must be base64 (as in an ACS connection string)") from None


def _check_eventgrid(settings: Settings) -> None:
    url = settings.eventgrid_url
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("CALLQ_SIM_EVENTGRID_URL must be an http(s) URL, e.g. http://127.0.0.1:8000/v1/acs/eventgrid")
    if settings.eventgrid_schema not in EVENTGRID_SCHEMAS:
        raise ConfigError(f"CALLQ_SIM_EVENTGRID_SCHEMA must be one of {list(EVENTGRID_SCHEMAS)}, "
                          f"got {settings.eventgrid_schema!r}")
    if bool(settings.eventgrid_tenant_id) != bool(settings.eventgrid_audience):
        raise ConfigError("CALLQ_SIM_EVENTGRID_TENANT_ID and CALLQ_SIM_EVENTGRID_AUDIENCE go together: set both "
                          "(Entra tokens on deliveries) or neither")
    if not 1 <= settings.eventgrid_max_events_per_batch <= MAX_EVENTS_PER_BATCH:
        raise ConfigError(f"CALLQ_SIM_EVENTGRID_MAX_EVENTS_PER_BATCH must be 1-{MAX_EVENTS_PER_BATCH}, "
                          f"got {settings.eventgrid_max_events_per_batch}")


def _batch_size(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"CALLQ_SIM_EVENTGRID_MAX_EVENTS_PER_BATCH must be an integer 1-{MAX_EVENTS_PER_BATCH}, "
                          f"got {raw!r}") from None


def _non_negative(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{name} must be a number of seconds >= 0, got {raw!r}")
    return value


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"CALLQ_SIM_PORT must be a port number 0-65535, got {raw!r}")
    return port
