"""Who may post Event Grid deliveries: an Entra ID bearer token, or a secret query token (Event Grid's two options).

Each option that is configured is enough on its own: a delivery passes when its ``?token=`` matches one of
``CALLQ_EVENTGRID_QUERY_TOKENS`` or its ``Authorization: Bearer`` token passes every Entra check. With neither
configured, every delivery is refused (``eventgrid_not_configured``): an unauthenticated endpoint would let anyone
start a room's automations.

Entra checks, as Event Grid's secure webhook delivery sends tokens: RS256 only, signed by a key the tenant's
OpenID document publishes (:class:`api.jwks.SigningKeys`: cached, refreshed single-flight on an unknown ``kid`` at
most every ``REFRESH_MIN_S``); ``iss`` the tenant's v1 or v2 issuer (``tid`` too, when present); ``aud`` one of
the configured audiences; ``exp``/``nbf`` within ``LEEWAY_S``; ``azp`` (v2) or ``appid`` (v1) the configured caller
(Event Grid's app); ``roles`` holding the configured role. A verified token is remembered until its ``exp``.

A refusal is ``Unauthorized`` (401) with a stable code; messages never hold a token. Event Grid does not retry a
401, so the one failure that is ours, signing keys that cannot be fetched while a token names a key we have not
seen, is a 503 (``signing_keys_unavailable``) instead: Event Grid retries it.
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import httpx
import jwt
from starlette.requests import HTTPConnection

from api.jwks import SigningKeys, VerifiedTokens, rs256_kid
from workers.errors import CallqError, Unauthorized
from workers.settings import Settings

if TYPE_CHECKING:
    from jwt.types import Options  # PyJWT 2.10+; only mypy reads it

QUERY_PARAM = "token"  # the subscription's endpoint URL ends in ?token=<one of CALLQ_EVENTGRID_QUERY_TOKENS>
LEEWAY_S = 60.0  # clock skew allowed on exp and nbf
# exp and nbf are checked by _check_time against the injected clock; iss by _check_issuer (two forms, two codes).
_DECODE_OPTIONS: Options = {"require": ["exp", "iss", "aud"], "verify_exp": False, "verify_nbf": False,
                            "verify_iat": False, "verify_iss": False}
_ENTRA_ISSUER = re.compile(r"https://(sts\.windows\.net/[0-9a-f-]{36}/|login\.microsoftonline\.com/[0-9a-f-]{36}/v2\.0)")


@dataclass(frozen=True)
class Caller:
    """How a delivery proved it comes from Event Grid: the option it passed, and (Entra) the token's claims."""

    method: Literal["entra", "query_token"]
    claims: dict[str, Any] = field(default_factory=dict, repr=False)


def _refused(code: str, message: str) -> Unauthorized:
    return Unauthorized(message, code=code)


def _bearer(connection: HTTPConnection) -> str:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class EventGridVerifier:
    """Verifies that a delivery comes from Event Grid, by the options the settings configure."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient, *, keys: SigningKeys | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._keys = keys if keys is not None else SigningKeys(settings.eventgrid_discovery_url, http)
        self._clock = clock
        self._verified = VerifiedTokens()
        tenant = settings.eventgrid_tenant_id
        self._issuers = frozenset({f"https://sts.windows.net/{tenant}/",  # v1 tokens
                                   f"https://login.microsoftonline.com/{tenant}/v2.0"})
        self._query_tokens = tuple(t.encode() for t in settings.eventgrid_query_tokens)

    async def verify(self, connection: HTTPConnection) -> Caller:
        """Accept the delivery if any configured option passes; else raise Unauthorized with a stable code."""
        entra, by_query = self._settings.eventgrid_entra, bool(self._query_tokens)
        if not entra and not by_query:
            raise _refused("eventgrid_not_configured", "callq refuses Event Grid deliveries until one of their "
                           "authentications is configured: CALLQ_EVENTGRID_TENANT_ID with CALLQ_EVENTGRID_AUDIENCE, "
                           "or CALLQ_EVENTGRID_QUERY_TOKENS.")
        query = connection.query_params.get(QUERY_PARAM) if by_query else None
        if query is not None and self._query_token_matches(query):
            return Caller("query_token")  # cheapest first: no signature to check
        bearer = _bearer(connection) if entra else ""
        if bearer:
            return Caller("entra", await self.verify_token(bearer))
        if query is not None:
            raise _refused("bad_query_token", f"The {QUERY_PARAM!r} query parameter is not one callq accepts.")
        ways = [w for w, on in (("'Authorization: Bearer <Entra ID token>'", entra),
                                (f"'?{QUERY_PARAM}=<secret>' on the URL", by_query)) if on]
        raise _refused("missing_token", f"Event Grid deliveries must carry {' or '.join(ways)}.")

    def _query_token_matches(self, given: str) -> bool:
        candidate = given.encode()
        # Compared with every configured token, no early exit: the time taken says nothing of which one matched.
        return sum(hmac.compare_digest(candidate, token) for token in self._query_tokens) > 0

    async def verify_token(self, token: str) -> dict[str, Any]:
        """The claims of an Entra token that passes every check; raises naming the first check it fails."""
        now = self._clock()

        async def verify(token: str) -> dict[str, Any]:
            claims = await self._signed_claims(token)
            self._check_time(claims, now)
            self._check_issuer(claims)
            self._check_caller(claims)
            return claims

        return await self._verified.claims(token, now=now, verify=verify)

    async def _signed_claims(self, token: str) -> dict[str, Any]:
        """The token's claims once its signature and audience check out (times and the rest: see the callers)."""
        kid = rs256_kid(token)
        if kid is None:
            raise _refused("invalid_token", "The bearer token is not a JWT signed with RS256 by a named key (kid).")
        key = await self._keys.key(kid)
        if key is None and self._keys.failing:
            raise CallqError("Entra's signing keys cannot be fetched right now; the delivery may be retried.",
                             code="signing_keys_unavailable")
        if key is None:
            raise _refused("unknown_key", "The bearer token is not signed by a key the tenant publishes.")
        try:
            return jwt.decode(token, key=key.key, algorithms=["RS256"],
                              audience=list(self._settings.eventgrid_audience), options=_DECODE_OPTIONS)
        except jwt.InvalidAudienceError:
            raise _refused("wrong_audience", "The bearer token is for another audience than this app.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise _refused("invalid_token", f"The bearer token has no {exc.claim!r} claim.") from None
        except jwt.PyJWTError as exc:
            raise _refused("invalid_token", f"The bearer token is not valid: {type(exc).__name__}.") from None

    def _check_time(self, claims: dict[str, Any], now: float) -> None:
        exp, nbf = claims["exp"], claims.get("nbf")
        if not _number(exp) or (nbf is not None and not _number(nbf)):
            raise _refused("invalid_token", "The bearer token's exp and nbf must be numbers.")
        if now > exp + LEEWAY_S:
            raise _refused("expired_token", "The bearer token has expired.")
        if nbf is not None and now < nbf - LEEWAY_S:
            raise _refused("token_not_yet_valid", "The bearer token is not valid yet (nbf).")

    def _check_issuer(self, claims: dict[str, Any]) -> None:
        iss, tid = claims["iss"], claims.get("tid")
        if iss not in self._issuers:
            if isinstance(iss, str) and _ENTRA_ISSUER.fullmatch(iss):
                raise _refused("wrong_tenant", "The bearer token was issued by another Entra tenant.")
            raise _refused("wrong_issuer", "The bearer token was not issued by Entra ID for the configured tenant.")
        if tid is not None and tid != self._settings.eventgrid_tenant_id:
            raise _refused("wrong_tenant", "The bearer token was issued for another Entra tenant.")

    def _check_caller(self, claims: dict[str, Any]) -> None:
        app_id, role = self._settings.eventgrid_app_id, self._settings.eventgrid_role
        caller = claims.get("azp", claims.get("appid"))  # v2 names the calling app azp, v1 appid
        if app_id and (not isinstance(caller, str) or caller.lower() != app_id):
            raise _refused("wrong_app", "The bearer token was not issued to Event Grid's app (azp/appid).")
        roles = claims.get("roles")
        if role and (not isinstance(roles, list) or role not in roles):
            raise _refused("missing_role", f"The bearer token lacks the app role {role!r}.")
