"""The kombu and Celery minors whose internals callq uses; a process refuses to start on any other.

``tasks/broker.py`` subclasses kombu's Redis transport (``Channel.conn_or_acquire``, ``_create_client``,
``_disconnect_pools``), and ``tasks/publish.py`` builds task messages with Celery's ``app.amqp.as_task_v2``.
Neither is a public API: both change between minors (kombu 5.7 rewrote much of the Redis transport), and
``tasks/app.py``'s ``unacked_restore_interval``/``unacked_restore_throttle`` exist only from kombu 5.7.0 (older
kombu ignores them silently and restores a dead worker's messages only every ~100 s). pyproject.toml pins the
same ranges; this check stops a hand-built environment from running untested code.
"""

from __future__ import annotations

import importlib
import re

from workers.errors import ConfigError

# distribution: (tested minor, what callq uses of it)
TESTED: dict[str, tuple[tuple[int, int], str]] = {
    "kombu": ((5, 7), "its Redis transport internals are used by tasks/broker.py"),
    "celery": ((5, 7), "its message builder is used by tasks/publish.py"),
}


def minor(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``5.7.0`` or ``5.7.0rc1``; None when it has none."""
    match = re.match(r"(\d+)\.(\d+)", version)
    return (int(match[1]), int(match[2])) if match else None


def require_tested(name: str) -> None:
    """Raise ConfigError unless the installed ``name`` (``kombu`` or ``celery``) is in its tested minor."""
    (major, low), why = TESTED[name]
    found = str(getattr(importlib.import_module(name), "__version__", "unknown"))
    if minor(found) != (major, low):
        raise ConfigError(f"callq needs {name} >={major}.{low},<{major}.{low + 1} ({why}); found {found}",
                          code="unsupported_dependency")
