"""ACS's callbacks: verify the JWT on every POST, then record and correlate the events.

Keys come from the OpenID configuration (real ACS's, or the simulator's at the same path) and are
cached; a token signed with an unknown ``kid`` triggers one refresh (key rotation), at most every
``REFRESH_MIN_S`` so forged kids cannot make us hammer the JWKS endpoint. A refresh is single-flight: callbacks
arriving while one is under way (the burst after a cold start) wait for it instead of fetching again.

A token that verified is remembered (its exact text, until its ``exp``): ACS signs a token and reuses it for
many callbacks, and checking the RSA signature again on each would only re-derive the same answer. An
unverified or failed token is never remembered, so nothing forged gets in through the cache; a token
stops being accepted at its expiry exactly as before.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from typing import Any

import httpx
import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.metrics import callbacks_ingested
from tasks.app import task_name
from tasks.publish import task_message
from workers import correlation, ledger
from workers.errors import InvalidCommand, Unauthorized
from workers.settings import Settings

log = logging.getLogger("callq.api.callbacks")
REFRESH_MIN_S = 5.0  # an unknown kid refreshes the keys at most this often (rotation vs. forged-kid floods)
KEYS_TTL_S = 3600.0
VERIFIED_CACHE = 1024  # distinct tokens remembered as verified (ACS reuses one token for many callbacks)
MAX_EVENTS_BODY = 1_048_576


class AcsTokenVerifier:
    """Verifies ACS callback JWTs (RS256, issuer from the OpenID document, audience = resource id)."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, *, refresh_min_s: float = REFRESH_MIN_S) -> None:
        self._settings = settings
        self._refresh_min_s = refresh_min_s
        self._http = http
        self._keys: dict[str, jwt.PyJWK] = {}
        self._issuer = ""
        self._fetched_at = 0.0
        self._verified: dict[str, tuple[float, dict[str, Any]]] = {}  # token → (exp, claims)
        self._refreshing: asyncio.Task[None] | None = None

    async def _refresh_once(self) -> None:
        """Refresh the keys, or join the refresh already under way, so a burst of callbacks fetches them once."""
        if self._refreshing is None:
            self._refreshing = asyncio.create_task(self._refresh())
            self._refreshing.add_done_callback(self._refreshed)
        # Shielded: a caller that goes away (its client disconnected) must not cancel the others' refresh.
        await asyncio.shield(self._refreshing)

    def _refreshed(self, task: asyncio.Task[None]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved even when every waiter went away, so asyncio does not report it as lost

    async def _refresh(self) -> None:
        config = (await self._http.get(self._settings.openid_url)).raise_for_status().json()
        jwks = (await self._http.get(config["jwks_uri"])).raise_for_status().json()
        self._keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id}
        self._issuer = config["issuer"]
        self._fetched_at = time.monotonic()

    async def _key(self, kid: str) -> jwt.PyJWK:
        age = time.monotonic() - self._fetched_at
        if (kid not in self._keys and age > self._refresh_min_s) or age > KEYS_TTL_S:
            try:
                await self._refresh_once()
            except (httpx.HTTPError, KeyError, ValueError, jwt.PyJWKError) as exc:
                log.warning("could not fetch ACS signing keys from %s: %s", self._settings.openid_url, exc)
        if kid not in self._keys:
            raise Unauthorized("The callback token is signed with an unknown key.")
        return self._keys[kid]

    async def verify(self, token: str) -> dict[str, Any]:
        known = self._verified.get(token)
        if known is not None and known[0] > time.time():
            return known[1]
        claims = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE:
            now = time.time()
            self._verified = {t: v for t, v in self._verified.items() if v[0] > now}
            while len(self._verified) >= VERIFIED_CACHE:
                del self._verified[next(iter(self._verified))]  # oldest first
        self._verified[token] = (float(claims["exp"]), claims)
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise Unauthorized("The callback token is malformed.") from None
        if header.get("alg") != "RS256":
            raise Unauthorized("The callback token must be signed with RS256.")
        key = await self._key(str(header.get("kid", "")))
        try:
            return jwt.decode(token, key=key.key, algorithms=["RS256"], audience=self._settings.acs_resource_id,
                              issuer=self._issuer, options={"require": ["exp", "iss", "aud"]})
        except jwt.InvalidTokenError as exc:
            raise Unauthorized(f"The callback token is not valid: {type(exc).__name__}.") from None


def _check_query_token(request: Request, settings: Settings) -> None:
    if settings.callback_token and not hmac.compare_digest(request.query_params.get("token", ""),
                                                           settings.callback_token):
        raise Unauthorized("The callback URL token is missing or wrong.")


async def acs_events(request: Request) -> Response:
    """``POST /v1/acs/events``: CloudEvents arrays from ACS (and the Event Grid validation handshake)."""
    state = request.state
    settings: Settings = state.settings
    _check_query_token(request, settings)
    body = await request.body()
    if len(body) > MAX_EVENTS_BODY:
        raise InvalidCommand("Callback body too large.", code="body_too_large")
    try:
        events = json.loads(body)
    except ValueError:
        raise InvalidCommand("Callback body is not JSON.", code="invalid_json") from None
    events = events if isinstance(events, list) else [events]
    if not all(isinstance(e, dict) for e in events):
        raise InvalidCommand("Callback body must be a JSON array of CloudEvents.", code="invalid_event")
    validation = next((e for e in events if e.get("eventType", e.get("type")) ==
                       "Microsoft.EventGrid.SubscriptionValidationEvent"), None)
    if validation is not None:
        # Event Grid's handshake carries no ACS token; the URL token (when configured) guards it.
        return JSONResponse({"validationResponse": (validation.get("data") or {}).get("validationCode")})
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("ACS callbacks must carry 'Authorization: Bearer <jwt>'.")
    await state.verifier.verify(token.strip())
    report = await correlation.ingest(state.scripts, events, dedup_ttl_s=settings.event_dedup_ttl_s,
                                      ttl_s=settings.command_ttl_s, retention_s=settings.event_retention_s)
    callbacks_ingested(report)  # outcomes, latency, duplicates for /metrics
    for lane in report.lanes:
        await kick(request, lane)
    return Response(f'{{"stored":{report.stored},"duplicates":{report.duplicates}}}', media_type="application/json")


async def kick(request: Request, lane: str) -> None:
    """A resolved command may be what the call's parked commands were waiting for: queue their tasks now."""
    state = request.state
    settings: Settings = state.settings
    kicked = await state.scripts.run(ledger.kick(lane, now_ms=int(time.time() * 1000), queue=settings.queue,
                                                 window=settings.dispatch_window))
    for nxt in kicked:  # parked after their message ran: they need a new one
        message = task_message(state.celery, task_name(nxt.type), str(uuid.uuid4()), [nxt.command_id],
                               queue=settings.queue)
        await state.scripts.run(ledger.enqueue(client=nxt.client, command_id=nxt.command_id, message=message,
                                               queue=settings.queue, window=settings.dispatch_window))
