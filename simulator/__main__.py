"""``python -m simulator``: serve the ACS simulator with settings from the environment."""

from __future__ import annotations

import sys

from .app import run
from .settings import ConfigError, Settings


def main() -> int:
    """Start the simulator; exit 2 with the reason when the configuration is unusable."""
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"callq simulator: {exc}", file=sys.stderr)
        return 2
    run(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
