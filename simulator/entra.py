"""Entra ID stand-in for Event Grid's secure webhook delivery: v2 app tokens and their OpenID/JWKS documents.

Event Grid, given a subscription's tenant and audience (``azureActiveDirectoryTenantId`` /
``…ApplicationIdOrUri``), sends ``Authorization: Bearer <token>`` that Entra issued to Event Grid's own app for the
webhook's app. The simulator signs those tokens itself with a key of its own (not the callback key: a different
issuer), and serves the documents a verifier fetches under ``{public_url}/entra/{tenant}/…`` — the same paths as
``https://login.microsoftonline.com/{tenant}/…``, so a receiver only swaps the authority's base URL.
"""

from __future__ import annotations

import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from .signing import thumbprint

EVENT_GRID_APP_ID = "4962773b-9cdb-44cf-a8bf-237846a00ab7"  # Event Grid's first-party app, the token's caller
EVENT_GRID_ROLE = "AzureEventGridSecureWebhookSubscriber"
# The object id of Event Grid's service principal in a tenant: fixed here (real tenants each have their own).
EVENT_GRID_OBJECT_ID = "5a1f8d3c-1e55-4d1b-8e39-4a0c6f6f2e11"
TOKEN_LIFETIME_S = 3600
RENEW_BEFORE_S = 300  # like a token cache: reuse a token until it has five minutes left


def issuer(tenant: str) -> str:
    """The v2 issuer Entra puts in ``iss`` for ``tenant``."""
    return f"https://login.microsoftonline.com/{tenant}/v2.0"


class EntraSigner:
    """One RSA key for every tenant; tokens cached per (tenant, audience)."""

    def __init__(self, public_url: str) -> None:
        self.public_url = public_url.rstrip("/")
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        self.kid = thumbprint(self._jwk)
        self._jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        self._tokens: dict[tuple[str, str], tuple[int, str]] = {}  # (tenant, audience) -> (exp, token)

    def token(self, tenant: str, audience: str, now_s: float | None = None) -> str:
        """An app token as Event Grid gets it from Entra v2 for ``audience`` in ``tenant``."""
        now = int(time.time() if now_s is None else now_s)
        cached = self._tokens.get((tenant, audience))
        if cached is not None and cached[0] - now > RENEW_BEFORE_S:
            return cached[1]
        claims = {
            "aud": audience,
            "iss": issuer(tenant),
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_S,
            "azp": EVENT_GRID_APP_ID,
            "azpacr": "2",
            "appid": EVENT_GRID_APP_ID,  # v1's name for azp; verifiers written for either find it
            "oid": EVENT_GRID_OBJECT_ID,
            "sub": EVENT_GRID_OBJECT_ID,
            "roles": [EVENT_GRID_ROLE],
            "tid": tenant,
            "ver": "2.0",
        }
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid})
        self._tokens[(tenant, audience)] = (now + TOKEN_LIFETIME_S, token)
        return token

    def jwks(self) -> dict[str, object]:
        """The key set at ``{public_url}/entra/{tenant}/discovery/v2.0/keys``."""
        return {"keys": [dict(self._jwk)]}

    def openid_configuration(self, tenant: str) -> dict[str, object]:
        """The document at ``{public_url}/entra/{tenant}/v2.0/.well-known/openid-configuration``."""
        base = f"{self.public_url}/entra/{tenant}"
        return {
            "issuer": issuer(tenant),
            "jwks_uri": f"{base}/discovery/v2.0/keys",
            "token_endpoint": f"{base}/oauth2/v2.0/token",
            "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }
