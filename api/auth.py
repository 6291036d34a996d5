"""Who is calling (API keys, or the operator page's session cookie) and which request this is (Idempotency-Key)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time

from starlette.requests import Request

from workers.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing, Unauthorized

# RFC 8941 sf-string ("...") or a bare token; printable ASCII, no spaces, at most 255 characters.
IDEMPOTENCY_KEY = re.compile(r'^"?([!#-~]{1,255})"?$')
SESSION_COOKIE = "callq_session"
SAFE_METHODS = frozenset({"GET", "HEAD"})


class ApiKeys:
    """API keys held only as SHA-256 digests, so a memory dump or repr never shows one."""

    def __init__(self, keys: dict[str, str]) -> None:
        self._by_digest = {hashlib.sha256(key.encode()).hexdigest(): name for name, key in keys.items()}
        self._digest_of = {name: digest for digest, name in self._by_digest.items()}

    def client_for(self, request: Request) -> str:
        """The client named by the Authorization header, or (for reads only) by a session cookie."""
        if "authorization" not in request.headers and request.method in SAFE_METHODS and (
                SESSION_COOKIE in request.cookies):
            # Cookies ride along on requests other sites make, so they never authorise a change (no CSRF);
            # reads are also guarded by SameSite=Strict. EventSource cannot send headers: this is its way in.
            name = self.session_client(request.cookies[SESSION_COOKIE])
            if name is None:
                raise Unauthorized("The session has expired or is not valid; log in again at /ui.")
            return name
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
        name = self._by_digest.get(hashlib.sha256(token.strip().encode()).hexdigest())
        if name is None:
            raise Unauthorized("The API key is not valid.")
        return name

    def name_for_key(self, key: str) -> str | None:
        """The client whose API key this is (the login form), or None."""
        return self._by_digest.get(hashlib.sha256(key.strip().encode()).hexdigest())

    def _sign(self, client: str, expires: int) -> str:
        # Keyed by the client's key digest: rotating or removing a key ends its sessions, and no key is stored.
        mac = hmac.new(bytes.fromhex(self._digest_of[client]), f"{client}|{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")

    def session_for(self, client: str, ttl_s: int, *, now: float | None = None) -> str:
        """A cookie value naming ``client`` until ``ttl_s`` from now: name, expiry and a MAC; no key inside."""
        expires = int((time.time() if now is None else now) + ttl_s)
        name = base64.urlsafe_b64encode(client.encode()).decode().rstrip("=")
        return f"{name}.{expires}.{self._sign(client, expires)}"

    def session_client(self, token: str, *, now: float | None = None) -> str | None:
        """The client a session cookie names, or None when it is forged, expired or its key is gone."""
        try:
            name, expires_raw, mac = token.split(".")
            client = base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()
            expires = int(expires_raw)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        if client not in self._digest_of or expires < (time.time() if now is None else now):
            return None
        return client if hmac.compare_digest(mac, self._sign(client, expires)) else None


def idempotency_key(request: Request) -> str:
    raw = request.headers.get("idempotency-key")
    if raw is None or raw.strip() == "":
        raise IdempotencyKeyMissing("This request needs an Idempotency-Key header (a UUID is a good choice).")
    match = IDEMPOTENCY_KEY.match(raw.strip())
    if match is None or match.group(1).endswith('"'):
        raise IdempotencyKeyInvalid("Idempotency-Key must be 1-255 printable ASCII characters without spaces.")
    return match.group(1)
