"""Signing keys from an OpenID document, and tokens already verified: shared by every JWT verifier in the API.

Keys are cached; a token signed with an unknown ``kid`` triggers one refresh (key rotation), at most every
``REFRESH_MIN_S`` so forged kids cannot make us hammer the JWKS endpoint; the floor counts failed attempts too,
so an endpoint that is down is not asked again by every request either. A refresh is single-flight: requests
arriving while one is under way (the burst after a cold start) wait for it instead of fetching again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt

log = logging.getLogger("callq.api.jwks")
REFRESH_MIN_S = 5.0  # an unknown kid refreshes the keys at most this often (rotation vs. forged-kid floods)
KEYS_TTL_S = 3600.0
VERIFIED_CACHE = 1024  # distinct tokens remembered as verified (senders reuse one token for many requests)


class SigningKeys:
    """The RS256 keys published at an OpenID document's ``jwks_uri``, by ``kid``."""

    def __init__(self, openid_url: str, http: httpx.AsyncClient, *, refresh_min_s: float = REFRESH_MIN_S,
                 ttl_s: float = KEYS_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._openid_url = openid_url
        self._http = http
        self._refresh_min_s = refresh_min_s
        self._ttl_s = ttl_s
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self.issuer = ""  # the document's ``issuer`` (ACS checks it; Entra's is per tenant, see eventgrid_auth)
        self._fetched_at: float | None = None  # last success
        self._tried_at: float | None = None  # last attempt, successful or not
        self.failing = False  # the last attempt failed: an unknown kid may be a rotation we could not see
        self._refreshing: asyncio.Task[None] | None = None

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key named ``kid``, refreshing first when it is unknown (or the keys are old); None when unknown."""
        now = self._clock()
        tried_long_ago = self._tried_at is None or now - self._tried_at > self._refresh_min_s
        stale = self._fetched_at is None or now - self._fetched_at > self._ttl_s
        # A refresh under way is joined even inside the floor: it is the one this request would have started.
        if (kid not in self._keys or stale) and (tried_long_ago or self._refreshing is not None):
            try:
                await self._refresh_once()
            except (httpx.HTTPError, KeyError, TypeError, ValueError, jwt.PyJWKError) as exc:
                log.warning("could not fetch signing keys from %s: %s", self._openid_url, exc)
        return self._keys.get(kid)

    async def _refresh_once(self) -> None:
        """Refresh the keys, or join the refresh already under way, so a burst of requests fetches them once."""
        if self._refreshing is None:
            self._tried_at = self._clock()
            self._refreshing = asyncio.create_task(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)
        # Shielded: a caller that goes away (its client disconnected) must not cancel the others' refresh.
        await asyncio.shield(self._refreshing)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        self.failing = task.cancelled() or task.exception() is not None  # also marks the exception retrieved

    async def _refresh(self) -> None:
        config = (await self._http.get(self._openid_url)).raise_for_status().json()
        jwks = (await self._http.get(config["jwks_uri"])).raise_for_status().json()
        self._keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id}
        self.issuer = str(config.get("issuer", ""))
        self._fetched_at = self._clock()


def rs256_kid(token: str) -> str | None:
    """The ``kid`` in a JWT's header when the header names RS256; None for anything else (not a JWT, another
    algorithm, no kid), which no caller accepts: "none" and HMAC algorithms would let a sender sign for itself."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return None
    kid = header.get("kid")
    return kid if header.get("alg") == "RS256" and isinstance(kid, str) and kid else None


class VerifiedTokens:
    """Tokens whose signature and claims checked out, by their exact text, each until its ``exp``.

    A sender signs a token and reuses it for many requests; checking the RSA signature again on each would only
    re-derive the same answer. Only verified tokens go in, so nothing forged gets in through the cache, and a
    token stops being accepted at its expiry exactly as before.
    """

    def __init__(self, *, size: int = VERIFIED_CACHE) -> None:
        self._size = size
        self._tokens: dict[str, tuple[float, dict[str, Any]]] = {}  # token → (exp, claims)

    async def claims(self, token: str, *, now: float,
                     verify: Callable[[str], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """The claims of ``token``: remembered from before (until its exp), or ``verify``'s, then remembered."""
        known = self._tokens.get(token)
        if known is not None and known[0] > now:
            return known[1]
        claims = await verify(token)  # raises for a token that fails: nothing is remembered
        self._put(token, claims, now=now)
        return claims

    def _put(self, token: str, claims: dict[str, Any], *, now: float) -> None:
        if len(self._tokens) >= self._size:
            self._tokens = {t: v for t, v in self._tokens.items() if v[0] > now}
            while len(self._tokens) >= self._size:
                del self._tokens[next(iter(self._tokens))]  # oldest first
        self._tokens[token] = (float(claims["exp"]), claims)
