"""The callback verifier's signing keys: a cold-start burst of callbacks fetches them once (single-flight)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from typing import Any

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from api.callbacks import AcsTokenVerifier
from workers.errors import Unauthorized
from workers.settings import Settings

ISSUER = "https://acscallautomation.communication.azure.com"
AUDIENCE = "11111111-2222-4333-8444-555555555555"
OPENID_URL = "https://acs.test/calling/.well-known/acsopenidconfiguration"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


class CountingKeyServer:
    """The OpenID and JWKS endpoints, counting fetches; the JWKS answer waits for ``release``."""

    def __init__(self, *, fail: bool = False) -> None:
        self.fetches: Counter[str] = Counter()
        self.release = asyncio.Event()
        self._fail = fail

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.fetches[request.url.path] += 1
        if request.url.path.endswith("acsopenidconfiguration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": "https://acs.test/calling/keys"})
        await self.release.wait()  # every caller of the burst has arrived by now (see _burst)
        if self._fail:
            return httpx.Response(503)
        jwk = {**json.loads(RSAAlgorithm.to_jwk(KEY.public_key())), "kid": "k1", "alg": "RS256", "use": "sig"}
        return httpx.Response(200, json={"keys": [jwk]})


def _token(n: int) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300, "jti": str(n)}
    return jwt.encode(claims, KEY, algorithm="RS256", headers={"kid": "k1"})


async def _burst(server: CountingKeyServer, callers: int) -> list[dict[str, Any] | BaseException | None]:
    settings = Settings(acs_resource_id=AUDIENCE, acs_openid_url=OPENID_URL)
    async with httpx.AsyncClient(transport=httpx.MockTransport(server)) as http:
        verifier = AcsTokenVerifier(settings, http)

        async def release() -> None:
            # gather runs its awaitables as tasks in order, each up to its first wait: by the time this one runs,
            # every verify has either entered the JWKS fetch or is waiting on the one under way.
            server.release.set()

        results = await asyncio.gather(*(verifier.verify(_token(n)) for n in range(callers)), release(),
                                       return_exceptions=True)
        return results[:-1]


def test_a_cold_start_burst_fetches_the_signing_keys_once() -> None:
    server = CountingKeyServer()
    results = asyncio.run(_burst(server, callers=25))
    assert all(isinstance(r, dict) and r["aud"] == AUDIENCE for r in results), results
    assert server.fetches == {"/calling/.well-known/acsopenidconfiguration": 1, "/calling/keys": 1}


def test_a_failed_refresh_is_shared_by_the_burst_too() -> None:
    server = CountingKeyServer(fail=True)
    results = asyncio.run(_burst(server, callers=10))
    assert all(isinstance(r, Unauthorized) for r in results), results
    assert server.fetches["/calling/keys"] == 1
