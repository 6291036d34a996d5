"""Logging for every callq process: one line per record, text for people or JSON for machines, secrets scrubbed.

``setup(settings, process=...)`` is called by the API (its factory and lifespan), by Celery's ``setup_logging``
signal in workers and beat (``tasks/observe.py``) and by Flower's config file (``flowerconfig.py``). Records carry
the command they concern: ``command_id``, ``call_connection_id``, ``operation_context`` and ``attempt`` come from
``extra=`` or from the context bound with :func:`bind` (the Celery task sets it for the task's thread; the runtime
refines it per command).

Secrets never reach a line: the formatter replaces every configured secret (API keys, the ACS access key, the
Flower password, the callback and metrics tokens; in Flower also its basic-auth passwords) and anything shaped like
a JWT, a bearer token, an ACS ``accesskey=`` or a password in a Redis URL — defence in depth behind code that does
not log them in the first place.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from workers.settings import Settings

CONTEXT_FIELDS = ("command_id", "call_connection_id", "operation_context", "attempt", "task")
_context: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("callq_log_context", default=None)
_HANDLER_NAME = "callq"
# uvicorn installs its own handlers; its records should go through ours (one format, scrubbed) instead.
_FOREIGN = ("uvicorn", "uvicorn.error", "uvicorn.access")

_PATTERNS = (
    (re.compile(r"eyJ[\w-]{6,}\.[\w-]{6,}\.[\w-]*"), "***jwt***"),  # a JWT (header and payload are base64url JSON)
    (re.compile(r"(?i)(bearer\s+)[^\s\"',]+"), r"\1***"),
    (re.compile(r"(?i)(accesskey=)[^;\s\"']+"), r"\1***"),
    (re.compile(r"(?i)([?&](?:token|sig|code)=)[^&\s\"']+"), r"\1***"),
    (re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),
)
# Every pattern above needs one of these in the lower-cased text to match.
_HINTS = ("eyj", "bearer", "accesskey=", "token=", "sig=", "code=", "redis")


def bind(**fields: Any) -> contextvars.Token[dict[str, Any] | None]:
    """Add fields to this thread's (or task's) log context; None or '' leaves a field as it was."""
    return _context.set({**(_context.get() or {}), **{k: v for k, v in fields.items() if v not in (None, "")}})


def unbind(token: contextvars.Token[dict[str, Any] | None]) -> None:
    """Restore the context as it was before the :func:`bind` that returned ``token``."""
    _context.reset(token)


class Scrubber:
    """Replaces secrets in text: known values first, then secret-shaped strings."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a secret containing another is replaced whole; short values would match by chance.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 8}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        lowered = text.lower()
        if any(hint in lowered for hint in _HINTS):  # most lines hold none: skip the regular expressions
            for pattern, replacement in _PATTERNS:
                text = pattern.sub(replacement, text)
        return text


def secrets_of(settings: Settings) -> list[str]:
    return [*settings.api_keys.values(), settings.acs_access_key, settings.flower_password, settings.callback_token,
            settings.metrics_token]


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record's command context: explicit ``extra=`` wins over the bound context."""
    found = {k: v for k, v in (_context.get() or {}).items() if k in CONTEXT_FIELDS}
    found |= {k: getattr(record, k) for k in CONTEXT_FIELDS if getattr(record, k, None) not in (None, "")}
    if "command_id" in found:
        found.setdefault("operation_context", found["command_id"])  # every command sends its id as operationContext
    return found


def _message(record: logging.LogRecord) -> str:
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, _, status = record.args
        return f"{method} {path} {status} ({client})"
    return record.getMessage()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, process, msg, the command context, exc."""

    def __init__(self, process: str, scrub: Scrubber) -> None:
        super().__init__()
        self._process = process
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name, "process": self._process, "pid": record.process,
            "msg": _message(record), **_fields(record),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            doc |= {"http_method": record.args[1], "path": record.args[2], "status": record.args[4]}
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        # Scrub each value before encoding: JSON escapes a secret holding '"', '\\' or non-ASCII, and the escaped
        # text no longer contains the secret the scrubber looks for.
        return json.dumps({k: self._scrubbed(v) for k, v in doc.items()})

    def _scrubbed(self, value: Any) -> Any:
        """``value`` with secrets replaced, JSON-ready (anything else becomes its ``str``, as before)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, dict):
            return {str(k): self._scrubbed(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrubbed(v) for v in value]
        return self._scrub(value if isinstance(value, str) else str(value))


class TextFormatter(logging.Formatter):
    """``12:03:04.120 INFO  callq.runtime: message  [command_id=… attempt=2]`` (callq up prefixes the process)."""

    def __init__(self, scrub: Scrubber) -> None:
        super().__init__()
        self._scrub = scrub

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        context = " ".join(f"{k}={v}" for k, v in _fields(record).items() if k != "operation_context")
        line = f"{ts} {record.levelname:<7} {record.name}: {_message(record)}" + (f"  [{context}]" if context else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return self._scrub(line)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]  # typeshed: generic over the stream
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it; a stale one may be closed)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.set_name(_HANDLER_NAME)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup(settings: Settings, *, process: str, level: int | str | None = None, secrets: Iterable[str] = ()) -> None:
    """Route every log record of this process through one callq handler. Safe to call again (replaces it).

    ``secrets``: values to scrub besides the configured ones (Flower's basic-auth passwords).
    """
    scrub = Scrubber([*secrets_of(settings), *secrets])
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(process, scrub) if settings.log_format == "json" else TextFormatter(scrub))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level if level is None else level)
    # A library's warning would otherwise be printed as bare text, the one non-JSON line in a json-mode process.
    logging.captureWarnings(True)
    for name in _FOREIGN:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
    # httpx logs every request at INFO (the API's JWKS fetches): noise, and URLs are where tokens hide.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, root.level))
