"""Dev credentials for the embedded stack: generate what settings leave empty, save them 0600, load them back.

``callq up`` fills every empty secret so a fresh checkout runs without configuration, and writes only the
generated ones to ``{data_dir}/credentials.json`` so ``callq demo`` (a separate process) can find the API key.
Secrets the operator configured stay in their environment and are never copied to disk.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from workers.settings import Settings

DEV_CLIENT = "dev"
CREDENTIALS_FILE = "credentials.json"


@dataclass(frozen=True)
class DevCredentials:
    """The secrets ``callq up`` generated (None: taken from settings instead)."""

    api_key: str | None = field(default=None, repr=False)
    flower_password: str | None = field(default=None, repr=False)
    acs_access_key: str | None = field(default=None, repr=False)


def generate(
    settings: Settings,
    *,
    token: Callable[[int], str] = secrets.token_urlsafe,
    random_bytes: Callable[[int], bytes] = secrets.token_bytes,
) -> DevCredentials:
    """New values for each secret that ``settings`` leaves empty."""
    return DevCredentials(
        api_key=None if settings.api_keys else token(24),
        flower_password=None if settings.flower_password else token(18),
        # ACS access keys are base64 of 32 random bytes; the simulator verifies HMACs made with the same key.
        acs_access_key=None if settings.acs_access_key else base64.b64encode(random_bytes(32)).decode("ascii"),
    )


def apply(settings: Settings, creds: DevCredentials) -> Settings:
    """``settings`` with its empty secrets filled from ``creds``; configured values always win."""
    changes: dict[str, object] = {}
    if not settings.api_keys and creds.api_key:
        changes["api_keys"] = {DEV_CLIENT: creds.api_key}
    if not settings.flower_password and creds.flower_password:
        changes["flower_password"] = creds.flower_password
    if not settings.acs_access_key and creds.acs_access_key:
        changes["acs_access_key"] = creds.acs_access_key
    return settings.with_(**changes) if changes else settings


def credential_env(settings: Settings) -> dict[str, str]:
    """The ``CALLQ_*`` variables that hand ``settings``' secrets to a child process."""
    env = {"CALLQ_API_KEYS": ",".join(f"{name}:{key}" for name, key in settings.api_keys.items())}
    if settings.flower_password:
        env["CALLQ_FLOWER_PASSWORD"] = settings.flower_password
    if settings.acs_access_key:
        env["CALLQ_ACS_ACCESS_KEY"] = settings.acs_access_key
    return env


def save(path: Path, creds: DevCredentials) -> None:
    """Write ``creds`` to ``path`` readable by the owner only, replacing any earlier file atomically."""
    body = {
        "api_keys": {DEV_CLIENT: creds.api_key} if creds.api_key else {},
        "flower_password": creds.flower_password,
        "acs_access_key": creds.acs_access_key,
    }
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a leftover tmp file keeps its old mode; O_CREAT's mode only applies to new files
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(body, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def load(path: Path) -> DevCredentials:
    """What :func:`save` wrote, or empty credentials when the file is missing or unreadable."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return DevCredentials()
    if not isinstance(body, dict):
        return DevCredentials()
    keys = body.get("api_keys")
    api_key = keys.get(DEV_CLIENT) if isinstance(keys, dict) else None
    return DevCredentials(
        api_key=_str_or_none(api_key),
        flower_password=_str_or_none(body.get("flower_password")),
        acs_access_key=_str_or_none(body.get("acs_access_key")),
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def pick_api_key(settings: Settings) -> str | None:
    """The key a local client should use: the ``dev`` client's if configured, else the first one."""
    return settings.api_keys.get(DEV_CLIENT) or next(iter(settings.api_keys.values()), None)
