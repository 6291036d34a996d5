"""Sign ACS-style callback JWTs with our own RSA key, and serve its OpenID configuration and JWKS.

The ingest scenario points callq's ``CALLQ_ACS_OPENID_URL`` here, so the API verifies every callback POST
exactly as it verifies real ACS's (RS256, issuer, audience = resource id), against a key we hold.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bench.procs import HOST

ISSUER = "https://acscallautomation.communication.azure.com"
KID = "callq-bench"


class JwksServer:
    """``with JwksServer(audience) as keys: keys.openid_url, keys.token()``."""

    def __init__(self, audience: str) -> None:
        self.audience = audience
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        self._docs: dict[str, Any] = {"/keys": {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}}
        self._server = ThreadingHTTPServer((HOST, 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, name="bench-jwks", daemon=True)
        base = f"http://{HOST}:{self._server.server_address[1]}"
        self.openid_url = f"{base}/openid"
        self._docs["/openid"] = {"issuer": ISSUER, "jwks_uri": f"{base}/keys",
                                 "id_token_signing_alg_values_supported": ["RS256"]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        docs = self._docs

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                doc = docs.get(self.path)
                body = json.dumps(doc or {}).encode()
                self.send_response(200 if doc else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the suite prints its own progress
                pass

        return Handler

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def token(self, lifetime_s: int = 3600) -> str:
        """A callback token as ACS mints them (one per POST there; one for the whole run here)."""
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": self.audience, "iat": now, "nbf": now, "exp": now + lifetime_s}
        return jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": KID})
