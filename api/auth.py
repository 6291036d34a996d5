"""Who is calling (API keys) and which request this is (Idempotency-Key)."""

from __future__ import annotations

import hashlib
import re

from starlette.requests import Request

from workers.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing, Unauthorized

# RFC 8941 sf-string ("...") or a bare token; printable ASCII, no spaces, at most 255 characters.
_IDEM = re.compile(r'^"?([!#-~]{1,255})"?$')


class ApiKeys:
    """API keys held only as SHA-256 digests, so a memory dump or repr never shows one."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._by_digest = {hashlib.sha256(key.encode()).hexdigest(): name for name, key in keys.items()}

    def client_for(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
        name = self._by_digest.get(hashlib.sha256(token.strip().encode()).hexdigest())
        if name is None:
            raise Unauthorized("The API key is not valid.")
        return name


def idempotency_key(request: Request) -> str:
    raw = request.headers.get("idempotency-key")
    if raw is None or raw.strip() == "":
        raise IdempotencyKeyMissing("This request needs an Idempotency-Key header (a UUID is a good choice).")
    match = _IDEM.match(raw.strip())
    if match is None or match.group(1).endswith('"'):
        raise IdempotencyKeyInvalid("Idempotency-Key must be 1-255 printable ASCII characters without spaces.")
    return match.group(1)
