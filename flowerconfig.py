"""Flower runs this file (its default ``--conf``) from the working directory before it starts: a guard, not settings.

Flower's HTTP API can revoke and run tasks and is open by default (CVE-2022-30034). ``callq up``, compose.yaml and
the Kubernetes manifests always pass credentials; this stops a hand-run ``celery -A tasks.app flower`` from the
checkout (or the image, whose working directory is the checkout) from serving it open.
"""

import os
import sys

_auth_args = any(a.startswith(("--basic-auth", "--basic_auth", "--auth")) for a in sys.argv)
if not (os.environ.get("FLOWER_BASIC_AUTH") or os.environ.get("FLOWER_AUTH") or _auth_args):
    raise SystemExit("callq: refusing to start Flower without authentication: set FLOWER_BASIC_AUTH=user:password "
                     "(callq up and compose.yaml do this from CALLQ_FLOWER_USER / CALLQ_FLOWER_PASSWORD)")
if os.environ.get("FLOWER_UNAUTHENTICATED_API", "").lower() in ("1", "true", "yes", "on"):
    raise SystemExit("callq: refusing to start Flower with FLOWER_UNAUTHENTICATED_API: its API would be open")
