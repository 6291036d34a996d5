"""Callback JWTs: an RSA key pair made at start, RS256 tokens, and the OpenID/JWKS documents."""

from __future__ import annotations

import base64
import hashlib
import json
import time

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

TOKEN_LIFETIME_S = 300  # ACS: "the JWT lives 5 minutes"


class CallbackSigner:
    """Mints one RS256 token per callback POST, verifiable through the served JWKS."""

    def __init__(self, *, issuer: str, audience: str, jwks_uri: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_uri = jwks_uri
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        self.kid = thumbprint(self._jwk)
        self._jwk.update({"kid": self.kid, "use": "sig", "alg": "RS256"})
        self._minted: tuple[int, str] = (-1, "")

    def token(self, now_s: float | None = None) -> str:
        """A fresh token: ``iss``, ``aud`` = resource id, ``iat``/``nbf`` = now, ``exp`` = now + 5 min.

        The claims have whole seconds and RS256 (PKCS #1 v1.5) signs deterministically, so every token minted in
        one second is the same string: it is signed once per second (an RSA signature costs ~1 ms, and under load
        the simulator POSTs callbacks far more often than that).
        """
        now = int(time.time() if now_s is None else now_s)
        if self._minted[0] != now:
            claims = {"iss": self.issuer, "aud": self.audience, "iat": now, "nbf": now, "exp": now + TOKEN_LIFETIME_S}
            self._minted = (now, jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self.kid}))
        return self._minted[1]

    def jwks(self) -> dict[str, object]:
        """The JWKS document served at ``/calling/keys``."""
        return {"keys": [dict(self._jwk)]}

    def openid_configuration(self) -> dict[str, object]:
        """The document served at ``/calling/.well-known/acsopenidconfiguration``."""
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "id_token_signing_alg_values_supported": ["RS256"],
        }


def thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 thumbprint of an RSA JWK: stable for the key, so a kid never collides across restarts by accident."""
    canonical = json.dumps({"e": jwk["e"], "kty": jwk["kty"], "n": jwk["n"]}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
