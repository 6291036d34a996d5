"""The simulator's log lines as JSON (``CALLQ_LOG_FORMAT=json``): uvicorn's ``log_config`` and its formatter.

The simulator shares no code with callq, so this is its own small formatter, not callq's: one object per line with
``ts``, ``level``, ``logger``, ``process`` (``simulator``), ``pid``, ``msg`` (access lines add ``http_method``,
``path``, ``status``). Secrets are scrubbed: the access key, and anything shaped like a JWT (the callback tokens it
signs), a bearer token or a ``?token=`` query (callq's callback URLs carry its callback token).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import uvicorn.config

from .settings import Settings

_PATTERNS = (
    (re.compile(r"eyJ[\w-]{6,}\.[\w-]{6,}\.[\w-]*"), "***jwt***"),
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1***"),
    (re.compile(r"(?i)([?&](?:token|sig|code)=)[^&\s\"']+"), r"\1***"),
)


def _access_fields(record: logging.LogRecord) -> dict[str, Any]:
    """A uvicorn access line's method, path and status (its args: client, method, path, HTTP version, status)."""
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        return {"http_method": record.args[1], "path": record.args[2], "status": record.args[4]}
    return {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, secrets replaced by ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)  # a longer one may contain another

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "process": "simulator", "pid": record.process,
            "msg": record.getMessage(), **_access_fields(record),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return self._scrub(json.dumps(doc, default=str))

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text


def _url_secrets(settings: Settings) -> list[str]:
    # The Event Grid endpoint may carry a secret query parameter under any name, not only token/sig/code.
    return [value for _, value in parse_qsl(urlsplit(settings.eventgrid_url).query) if len(value) >= 4]


def log_config(settings: Settings) -> dict[str, Any]:
    """uvicorn's ``log_config`` for these settings: its own default for text, every logger through JSON for json."""
    if settings.log_format != "json":
        return uvicorn.config.LOGGING_CONFIG
    json_lines = {"handlers": ["json"], "level": "INFO", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "secrets": [settings.access_key, *_url_secrets(settings)]}},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {"uvicorn": json_lines, "uvicorn.error": {"level": "INFO"}, "uvicorn.access": json_lines,
                    "simulator": json_lines},
        # Libraries only above INFO: httpx would log every callback POST, whose URL carries callq's token.
        "root": {"handlers": ["json"], "level": "WARNING"},
    }
