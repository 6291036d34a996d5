"""Flower runs this file (its default ``--conf``) from the working directory before it starts: a guard, then logs.

Flower's HTTP API can revoke and run tasks and is open by default (CVE-2022-30034). ``callq up``, compose.yaml and
the Kubernetes manifests always pass credentials; this stops a hand-run ``celery -A tasks.app flower`` from the
checkout (or the image, whose working directory is the checkout) from serving it open.

Flower never sends Celery's ``setup_logging`` signal, so its lines are set up here like every other callq process's:
one format (``CALLQ_LOG_FORMAT``), ``process`` ``flower``, secrets (also the basic-auth passwords) scrubbed.
"""

import os
import sys

_auth_args = [a for a in sys.argv if a.startswith(("--basic-auth", "--basic_auth", "--auth"))]
if not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH") or _auth_args):
    raise SystemExit("callq: refusing to start Flower without authentication: set FLOWER_BASIC_AUTH=user:password "
                     "(callq up and compose.yaml do this from CALLQ_FLOWER_USER / CALLQ_FLOWER_PASSWORD)")
if os.environ.get("FLOWER_UNAUTHENTICATED_API", "").lower() in ("1", "true", "yes", "on"):
    raise SystemExit("callq: refusing to start Flower with FLOWER_UNAUTHENTICATED_API: its API would be open")


def _flower_secrets() -> list[str]:
    """Basic-auth passwords (``user:pw,user2:pw2`` in the environment or ``--basic-auth=``) and Flower's own secrets."""
    pairs = [os.environ.get("FLOWER_BASIC_AUTH", "")]
    pairs += [a.partition("=")[2] for a in _auth_args if a.startswith(("--basic-auth=", "--basic_auth="))]
    passwords = [pair.partition(":")[2] for value in pairs for pair in value.split(",")]
    return [*passwords, os.environ.get("FLOWER_COOKIE_SECRET", ""), os.environ.get("FLOWER_OAUTH2_SECRET", "")]


def _setup_logging() -> None:
    # Imported here: Flower applies every top-level name of this file that matches one of its options (``logging``).
    import logging

    from workers import logs  # importable: celery loaded tasks.app from this directory before Flower read this file
    from workers.settings import process_settings

    # Flower parsed its command line before reading this file, and tornado then gave the root logger its own
    # plain-text handler; without removing it every line would be written twice, once unscrubbed.
    logging.getLogger().handlers.clear()
    logs.setup(process_settings(), process="flower", secrets=_flower_secrets())


_setup_logging()
