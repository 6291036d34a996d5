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
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_RESOURCE_ID = "00000000-0000-4000-8000-00000000ca11"
DEFAULT_ISSUER = "https://acscallautomation.communication.azure.com"


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
    # Not read from the environment: tuning that only tests and benchmarks change.
    max_clock_skew_s: float = 900.0
    callback_timeout_s: float = 5.0
    callback_attempts: int = 4
    callback_backoff_s: float = 0.05

    def __post_init__(self) -> None:
        _check_access_key(self.access_key)
        if not self.public_url:
            object.__setattr__(self, "public_url", f"http://{self.host}:{self.port}")
        object.__setattr__(self, "public_url", self.public_url.rstrip("/"))

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


def _port(raw: str) -> int:
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(f"CALLQ_SIM_PORT must be a port number 0-65535, got {raw!r}")
    return port
