"""The one table ``callq up`` prints once everything is healthy: what runs where, and the dev credentials."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from callq._components import Component
from callq._credentials import CREDENTIALS_FILE, DEV_CLIENT, DevCredentials
from workers import redis_clients
from workers.settings import Settings


def _credential_notes(settings: Settings, creds: DevCredentials) -> dict[str, str]:
    """Per-component credential text: generated secrets in full (the user needs them), configured ones by name only."""
    api = (f"API key for client {DEV_CLIENT!r}: {creds.api_key}" if creds.api_key
           else f"API keys from CALLQ_API_KEYS ({', '.join(settings.api_keys)})")
    flower = (f"user {settings.flower_user}, password {creds.flower_password}" if creds.flower_password
              else f"user {settings.flower_user}, password from CALLQ_FLOWER_PASSWORD")
    return {"api": api, "flower": flower}


def ready_table(
    settings: Settings, components: Sequence[Component], creds: DevCredentials, data_dir: Path, *, banner: str,
) -> str:
    """A plain-text table with a row per component: name, URL and notes (including credentials)."""
    notes = _credential_notes(settings, creds)
    rows = [("component", "url", "notes")]
    if settings.external_redis:
        where = "CALLQ_REDIS_SENTINELS" if settings.redis_sentinels else "CALLQ_REDIS_URL"
        rows.append(("redis", redis_clients.describe(settings), f"external ({where})"))
    for c in components:
        rows.append((c.name, c.url or "-", "; ".join(n for n in (c.note, notes.get(c.name, "")) if n)))
    up = len(rows) - 1
    api_url = next((c.url for c in components if c.name == "api"), "")
    if api_url:  # served by the API, not processes of their own
        rows.append(("ui", f"{api_url}/ui", "operator page: log in with the API key"))
        rows.append(("metrics", f"{api_url}/metrics", "Prometheus: Bearer API key (or CALLQ_METRICS_TOKEN)"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    lines = [rule]
    for n, row in enumerate(rows):
        lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append(rule)
    lines.append(rule)
    footer = f"credentials: {data_dir / CREDENTIALS_FILE} (mode 0600) · Ctrl-C stops everything"
    return "\n".join([f"{banner} — {up} components up", *lines, footer])
