"""ACS's callbacks: verify the JWT on every POST, then record and correlate the events.

Keys come from the OpenID configuration (real ACS's, or the simulator's at the same path) through
:class:`api.jwks.SigningKeys` (cached, refreshed single-flight on an unknown ``kid`` at most every
``REFRESH_MIN_S``); a token that verified is remembered until its ``exp`` (:class:`api.jwks.VerifiedTokens`).
"""

from __future__ import annotations

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

from api.jwks import REFRESH_MIN_S, SigningKeys, VerifiedTokens, rs256_kid
from api.metrics import callbacks_ingested
from tasks.app import task_name
from tasks.publish import task_message
from workers import correlation, ledger
from workers.errors import InvalidCommand, Unauthorized
from workers.settings import Settings

log = logging.getLogger("callq.api.callbacks")
MAX_EVENTS_BODY = 1_048_576


class AcsTokenVerifier:
    """Verifies ACS callback JWTs (RS256, issuer from the OpenID document, audience = resource id)."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, *, refresh_min_s: float = REFRESH_MIN_S) -> None:
        self._settings = settings
        self._keys = SigningKeys(settings.openid_url, http, refresh_min_s=refresh_min_s)
        self._verified = VerifiedTokens()

    async def verify(self, token: str) -> dict[str, Any]:
        return await self._verified.claims(token, now=time.time(), verify=self._verify)

    async def _verify(self, token: str) -> dict[str, Any]:
        kid = rs256_kid(token)
        if kid is None:
            raise Unauthorized("The callback token is malformed, or not signed with RS256 by a named key (kid).")
        key = await self._keys.key(kid)
        if key is None:
            raise Unauthorized("The callback token is signed with an unknown key.")
        try:
            return jwt.decode(token, key=key.key, algorithms=["RS256"], audience=self._settings.acs_resource_id,
                              issuer=self._keys.issuer, options={"require": ["exp", "iss", "aud"]})
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
