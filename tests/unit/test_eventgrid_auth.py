"""Event Grid delivery auth: Entra ID bearer tokens against a tenant's OpenID document, and secret query tokens."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import Counter
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from jwt.utils import base64url_encode
from starlette.requests import Request

from api.eventgrid_auth import LEEWAY_S, Caller, EventGridVerifier
from api.jwks import REFRESH_MIN_S, SigningKeys
from workers.errors import CallqError, ConfigError, Unauthorized
from workers.settings import ENTRA_OPENID_URL, EVENTGRID_APP_ID, EVENTGRID_ROLE, Settings

TENANT = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
OTHER_TENANT = "99999999-8888-4777-8666-555555555555"
CLIENT_ID = "11111111-2222-4333-8444-555555555555"
APP_URI = "api://callq-eventgrid"
OPENID_URL = f"https://login.test/{TENANT}/v2.0/.well-known/openid-configuration"
JWKS_URL = f"https://login.test/{TENANT}/discovery/v2.0/keys"
V1_ISSUER = f"https://sts.windows.net/{TENANT}/"
V2_ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
NOW = 1_700_000_000.0
QUERY_TOKENS = ("query-token-new-0123456789", "query-token-old-0123456789")
KEYS = {kid: rsa.generate_private_key(public_exponent=65537, key_size=2048) for kid in ("k1", "k2", "k3")}


class Clock:
    """A clock the test moves by hand: no sleeps."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class KeyServer:
    """Entra's OpenID document and JWKS for the tenant, counting fetches; ``published`` are the kids it serves."""

    def __init__(self) -> None:
        self.published = ["k1"]
        self.fetches: Counter[str] = Counter()
        self.down = False

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.fetches[str(request.url)] += 1
        if self.down:
            return httpx.Response(503)
        if str(request.url) == OPENID_URL:
            return httpx.Response(200, json={"issuer": V2_ISSUER, "jwks_uri": JWKS_URL})
        keys = [{**json.loads(RSAAlgorithm.to_jwk(KEYS[kid].public_key())), "kid": kid, "use": "sig"}
                for kid in self.published]  # no "alg": Entra's JWKS omits it
        return httpx.Response(200, json={"keys": keys})

    @property
    def jwks_fetches(self) -> int:
        return self.fetches[JWKS_URL]


def entra_settings(**changes: Any) -> Settings:
    return Settings(eventgrid_tenant_id=TENANT, eventgrid_audience=(CLIENT_ID, APP_URI),
                    eventgrid_openid_url=OPENID_URL).with_(**changes)


class Rig:
    """A verifier with its key server and both clocks (wall for exp/nbf, monotonic for the refresh floor)."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.server = KeyServer()
        self.wall, self.mono = Clock(NOW), Clock(1000.0)
        http = httpx.AsyncClient(transport=httpx.MockTransport(self.server))
        keys = SigningKeys(OPENID_URL, http, clock=self.mono)
        self.verifier = EventGridVerifier(settings or entra_settings(), http, keys=keys, clock=self.wall)

    def verify(self, *, bearer: str | None = None, query: str | None = None, auth: str | None = None) -> Caller:
        headers = [(b"authorization", (auth or f"Bearer {bearer}").encode())] if bearer or auth else []
        scope = {"type": "http", "method": "POST", "path": "/v1/eventgrid/events", "headers": headers,
                 "query_string": urlencode({"token": query}).encode() if query is not None else b""}
        return asyncio.run(self.verifier.verify(Request(scope)))

    def refused(self, **kwargs: str) -> str:
        """The code of the refusal; its message never repeats what the caller sent as a credential."""
        with pytest.raises(Unauthorized) as caught:
            self.verify(**kwargs)
        for secret in (*(v for v in kwargs.values() if len(v) > 8), *QUERY_TOKENS):
            assert secret not in caught.value.message
        return caught.value.code


def v2_claims(**changes: Any) -> dict[str, Any]:
    claims = {"aud": CLIENT_ID, "iss": V2_ISSUER, "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 3600,
              "azp": EVENTGRID_APP_ID, "azpacr": "2", "roles": [EVENTGRID_ROLE], "tid": TENANT,
              "sub": "eg-sp", "oid": "eg-sp", "ver": "2.0", **changes}
    return {k: v for k, v in claims.items() if v is not None}


def v1_claims(**changes: Any) -> dict[str, Any]:
    claims = {"aud": APP_URI, "iss": V1_ISSUER, "iat": NOW - 10, "nbf": NOW - 10, "exp": NOW + 3600,
              "appid": EVENTGRID_APP_ID, "appidacr": "2", "roles": [EVENTGRID_ROLE], "tid": TENANT,
              "sub": "eg-sp", "oid": "eg-sp", "ver": "1.0", **changes}
    return {k: v for k, v in claims.items() if v is not None}


def token(claims: dict[str, Any] | None = None, kid: str = "k1") -> str:
    return jwt.encode(claims or v2_claims(), KEYS[kid], algorithm="RS256", headers={"kid": kid, "typ": "JWT"})


# --- Entra ID -------------------------------------------------------------------------------------------------


def test_a_valid_v2_token_passes() -> None:
    caller = Rig().verify(bearer=token())
    assert caller.method == "entra" and caller.claims["azp"] == EVENTGRID_APP_ID


def test_a_valid_v1_token_for_the_app_id_uri_passes() -> None:
    caller = Rig().verify(bearer=token(v1_claims()))
    assert caller.method == "entra" and caller.claims["appid"] == EVENTGRID_APP_ID


def test_a_v1_token_for_the_client_id_passes_too() -> None:
    assert Rig().verify(bearer=token(v1_claims(aud=CLIENT_ID))).method == "entra"


def test_the_keys_come_from_the_openid_document_the_settings_name() -> None:
    server = KeyServer()
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    verifier = EventGridVerifier(entra_settings(), http, clock=lambda: NOW)
    request = Request({"type": "http", "method": "POST", "path": "/", "query_string": b"",
                       "headers": [(b"authorization", f"Bearer {token()}".encode())]})
    assert asyncio.run(verifier.verify(request)).method == "entra"
    assert server.fetches == {OPENID_URL: 1, JWKS_URL: 1}


@pytest.mark.parametrize(("claims", "code"), [
    (v2_claims(aud="22222222-2222-4222-8222-222222222222"), "wrong_audience"),
    (v1_claims(aud="api://someone-else"), "wrong_audience"),
    (v2_claims(iss=f"https://login.microsoftonline.com/{OTHER_TENANT}/v2.0"), "wrong_tenant"),
    (v1_claims(iss=f"https://sts.windows.net/{OTHER_TENANT}/"), "wrong_tenant"),
    (v2_claims(tid=OTHER_TENANT), "wrong_tenant"),
    (v2_claims(iss="https://evil.example.com/"), "wrong_issuer"),
    (v2_claims(iss=f"https://login.microsoftonline.com/{TENANT}/"), "wrong_issuer"),  # v1 path on the v2 host
    (v2_claims(exp=NOW - LEEWAY_S - 1), "expired_token"),
    (v2_claims(nbf=NOW + LEEWAY_S + 1), "token_not_yet_valid"),
    (v2_claims(exp=None), "invalid_token"),
    (v2_claims(exp="tomorrow"), "invalid_token"),
    (v2_claims(aud=None), "invalid_token"),
    (v2_claims(iss=None), "invalid_token"),
    (v2_claims(azp="33333333-3333-4333-8333-333333333333"), "wrong_app"),
    (v1_claims(appid="33333333-3333-4333-8333-333333333333"), "wrong_app"),
    (v2_claims(azp=None), "wrong_app"),
    (v2_claims(roles=None), "missing_role"),
    (v2_claims(roles=["SomethingElse"]), "missing_role"),
    (v2_claims(roles=EVENTGRID_ROLE), "missing_role"),  # a string, not a list: "in" would match substrings
], ids=["aud-v2", "aud-v1", "tenant-v2", "tenant-v1", "tid", "issuer", "issuer-shape", "expired", "not-yet-valid",
        "no-exp", "exp-text", "no-aud", "no-iss", "azp", "appid", "no-azp", "no-roles", "other-role", "roles-text"])
def test_a_token_failing_a_check_is_refused_with_its_code(claims: dict[str, Any], code: str) -> None:
    assert Rig().refused(bearer=token(claims)) == code


def test_times_within_the_leeway_pass() -> None:
    rig = Rig()
    assert rig.verify(bearer=token(v2_claims(exp=NOW - LEEWAY_S + 1))).method == "entra"
    assert rig.verify(bearer=token(v2_claims(nbf=NOW + LEEWAY_S - 1))).method == "entra"


def test_empty_app_id_and_role_settings_skip_those_checks() -> None:
    rig = Rig(entra_settings(eventgrid_app_id="", eventgrid_role=""))
    assert rig.verify(bearer=token(v2_claims(azp="someone", roles=None))).method == "entra"


def test_the_app_id_compares_without_case() -> None:
    assert Rig().verify(bearer=token(v2_claims(azp=EVENTGRID_APP_ID.upper()))).method == "entra"


@pytest.mark.parametrize(("kwargs", "code"), [
    ({}, "missing_token"),
    ({"auth": "Basic dXNlcjpwYXNz"}, "missing_token"),
    ({"auth": "Bearer "}, "missing_token"),
    ({"bearer": "not-a-jwt"}, "invalid_token"),
    ({"bearer": "a.b.c"}, "invalid_token"),
], ids=["none", "basic", "empty-bearer", "garbage", "three-garbage-parts"])
def test_a_missing_or_malformed_token_is_refused(kwargs: dict[str, str], code: str) -> None:
    assert Rig().refused(**kwargs) == code


def test_only_rs256_is_accepted() -> None:
    rig = Rig()
    public_pem = KEYS["k1"].public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
    forged = [
        jwt.encode(v2_claims(), "a-shared-secret-of-32-bytes-long!", algorithm="HS256", headers={"kid": "k1"}),
        _forged("HS256", v2_claims(), hmac_key=public_pem),  # the confusion attack: HMAC keyed with the public key
        _forged("none", v2_claims()),
        jwt.encode(v2_claims(), KEYS["k1"], algorithm="RS384", headers={"kid": "k1"}),
        jwt.encode(v2_claims(), KEYS["k1"], algorithm="PS256", headers={"kid": "k1"}),
    ]
    for forgery in forged:
        assert rig.refused(bearer=forgery) == "invalid_token"
    assert rig.server.jwks_fetches == 0  # refused on the header: no key was needed to say no


def _forged(alg: str, claims: dict[str, Any], *, hmac_key: bytes | None = None) -> str:
    """A token PyJWT will not write for us: ``alg`` in its header, signed by HMAC-SHA256 with ``hmac_key`` or not
    at all."""
    def part(value: dict[str, Any]) -> str:
        return base64url_encode(json.dumps(value).encode()).decode()

    signing_input = f"{part({'alg': alg, 'typ': 'JWT', 'kid': 'k1'})}.{part(claims)}"
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest() if hmac_key else b""
    return f"{signing_input}.{base64url_encode(signature).decode()}"


def test_a_token_signed_by_another_key_under_a_published_kid_is_refused() -> None:
    forged = jwt.encode(v2_claims(), KEYS["k2"], algorithm="RS256", headers={"kid": "k1"})
    assert Rig().refused(bearer=forged) == "invalid_token"


def test_a_token_without_kid_is_refused() -> None:
    unnamed = jwt.encode(v2_claims(), KEYS["k1"], algorithm="RS256")
    assert Rig().refused(bearer=unnamed) == "invalid_token"


def test_an_unknown_kid_refreshes_once_then_not_again_within_the_floor() -> None:
    rig = Rig()
    rig.verify(bearer=token())  # cold start: the first fetch
    assert rig.server.jwks_fetches == 1
    assert rig.refused(bearer=token(kid="k2")) == "unknown_key"  # right after it: the keys are as fresh as can be
    assert rig.server.jwks_fetches == 1
    rig.mono.now += REFRESH_MIN_S + 1
    assert rig.refused(bearer=token(kid="k2")) == "unknown_key"  # not published: one refresh, then refused
    assert rig.server.jwks_fetches == 2
    rig.mono.now += REFRESH_MIN_S / 2
    assert rig.refused(bearer=token(kid="k3")) == "unknown_key"  # another forged kid inside the floor: no fetch
    assert rig.server.jwks_fetches == 2
    rig.mono.now += REFRESH_MIN_S
    assert rig.refused(bearer=token(kid="k3")) == "unknown_key"
    assert rig.server.jwks_fetches == 3


def test_a_rotated_key_is_fetched_when_first_seen() -> None:
    rig = Rig()
    rig.verify(bearer=token())
    rig.server.published = ["k1", "k2"]  # Entra publishes a new key and starts signing with it
    rig.mono.now += REFRESH_MIN_S + 1
    assert rig.verify(bearer=token(kid="k2")).method == "entra"
    assert rig.server.jwks_fetches == 2


def test_unreachable_keys_are_a_retryable_503_not_a_401() -> None:
    rig = Rig()
    rig.server.down = True
    with pytest.raises(CallqError) as caught:
        rig.verify(bearer=token())
    assert not isinstance(caught.value, Unauthorized) and caught.value.code == "signing_keys_unavailable"
    with pytest.raises(CallqError):
        rig.verify(bearer=token())  # inside the floor: not asked again
    assert rig.server.fetches[OPENID_URL] == 1
    rig.server.down = False
    rig.mono.now += REFRESH_MIN_S + 1
    assert rig.verify(bearer=token()).method == "entra"


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    rig = Rig()
    decoded: list[str] = []
    real_decode = jwt.decode

    def spy(tok: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(tok)
        return real_decode(tok, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", spy)
    tok = token(v2_claims(exp=NOW + 600))
    for _ in range(3):
        rig.verify(bearer=tok)
    assert decoded == [tok]  # the signature was checked once
    rig.wall.now = NOW + 600 + LEEWAY_S + 1
    assert rig.refused(bearer=tok) == "expired_token"  # past exp the cache no longer vouches for it
    assert decoded == [tok, tok]


def test_a_refused_token_is_not_remembered() -> None:
    rig = Rig()
    rig.verify(bearer=token())
    early = token(kid="k2")  # signed with a key Entra has not published yet
    rig.mono.now += REFRESH_MIN_S + 1
    assert rig.refused(bearer=early) == "unknown_key"
    rig.server.published.append("k2")
    rig.mono.now += REFRESH_MIN_S + 1
    assert rig.verify(bearer=early).method == "entra"  # judged again, not answered from a cache of refusals


# --- Query token ----------------------------------------------------------------------------------------------


def query_settings(**changes: Any) -> Settings:
    return Settings(eventgrid_query_tokens=QUERY_TOKENS).with_(**changes)


def test_the_right_query_token_passes() -> None:
    assert Rig(query_settings()).verify(query=QUERY_TOKENS[0]) == Caller("query_token")


def test_during_a_rotation_old_and_new_query_tokens_both_pass() -> None:
    rig = Rig(query_settings())
    assert [rig.verify(query=t).method for t in QUERY_TOKENS] == ["query_token", "query_token"]
    assert rig.refused(query="query-token-older-012345678") == "bad_query_token"


@pytest.mark.parametrize(("query", "code"), [
    ("query-token-wrong-0123456789", "bad_query_token"),
    (QUERY_TOKENS[0][:-1], "bad_query_token"),
    (QUERY_TOKENS[0] + "x", "bad_query_token"),
    ("", "bad_query_token"),
    ("jetón-ñ-0123456789abcdef", "bad_query_token"),  # not ASCII: compared as bytes, no TypeError
    (None, "missing_token"),
], ids=["wrong", "prefix", "longer", "empty", "non-ascii", "missing"])
def test_a_wrong_or_missing_query_token_is_refused(query: str | None, code: str) -> None:
    kwargs = {} if query is None else {"query": query}
    assert Rig(query_settings()).refused(**kwargs) == code


def test_with_only_query_tokens_a_bearer_token_is_not_enough() -> None:
    assert Rig(query_settings()).refused(bearer=token()) == "missing_token"


def test_with_only_entra_a_query_token_is_not_enough() -> None:
    assert Rig().refused(query=QUERY_TOKENS[0]) == "missing_token"


# --- Both, neither ---------------------------------------------------------------------------------------------


def test_with_both_configured_each_is_enough_on_its_own() -> None:
    rig = Rig(entra_settings(eventgrid_query_tokens=QUERY_TOKENS))
    assert rig.verify(query=QUERY_TOKENS[1]).method == "query_token"
    assert rig.verify(bearer=token()).method == "entra"
    assert rig.verify(query=QUERY_TOKENS[1], bearer=token(v2_claims(aud="x"))).method == "query_token"
    assert rig.verify(query="query-token-wrong-0123456789", bearer=token()).method == "entra"


def test_with_both_configured_a_delivery_failing_both_names_the_token_failure() -> None:
    rig = Rig(entra_settings(eventgrid_query_tokens=QUERY_TOKENS))
    assert rig.refused(query="query-token-wrong-0123456789", bearer=token(v2_claims(aud="x"))) == "wrong_audience"
    assert rig.refused(query="query-token-wrong-0123456789") == "bad_query_token"
    with pytest.raises(Unauthorized) as caught:
        rig.verify()
    assert caught.value.code == "missing_token"
    assert "Bearer" in caught.value.message and "?token=" in caught.value.message


def test_with_nothing_configured_every_delivery_is_refused() -> None:
    rig = Rig(Settings())
    assert rig.refused() == "eventgrid_not_configured"
    assert rig.refused(bearer=token(), query=QUERY_TOKENS[0]) == "eventgrid_not_configured"
    assert rig.server.fetches == {}


def test_an_entra_tenant_without_audience_built_directly_counts_as_not_configured() -> None:
    assert Rig(Settings(eventgrid_tenant_id=TENANT)).refused(bearer=token()) == "eventgrid_not_configured"


# --- Settings --------------------------------------------------------------------------------------------------


def test_eventgrid_settings_default_to_nothing_configured() -> None:
    s = Settings.from_env({})
    assert not s.eventgrid_entra and s.eventgrid_query_tokens == ()
    assert (s.eventgrid_app_id, s.eventgrid_role) == (EVENTGRID_APP_ID, EVENTGRID_ROLE)


def test_eventgrid_settings_are_read_from_the_environment() -> None:
    s = Settings.from_env({"CALLQ_EVENTGRID_TENANT_ID": TENANT.upper(),
                           "CALLQ_EVENTGRID_AUDIENCE": f" {CLIENT_ID} , {APP_URI},{CLIENT_ID}",
                           "CALLQ_EVENTGRID_QUERY_TOKENS": f"{QUERY_TOKENS[0]}, {QUERY_TOKENS[1]},",
                           "CALLQ_EVENTGRID_APP_ID": "", "CALLQ_EVENTGRID_ROLE": ""})
    assert s.eventgrid_entra and s.eventgrid_tenant_id == TENANT  # Entra spells tenant ids lower-case
    assert s.eventgrid_audience == (CLIENT_ID, APP_URI)
    assert s.eventgrid_query_tokens == QUERY_TOKENS
    assert (s.eventgrid_app_id, s.eventgrid_role) == ("", "")  # set but empty: not checked
    assert s.eventgrid_discovery_url == ENTRA_OPENID_URL.format(tenant=TENANT)
    assert QUERY_TOKENS[0] not in repr(s)


def test_the_openid_url_setting_points_at_the_simulator() -> None:
    url = f"http://127.0.0.1:8089/entra/{TENANT}/v2.0/.well-known/openid-configuration"
    s = Settings.from_env({"CALLQ_EVENTGRID_TENANT_ID": TENANT, "CALLQ_EVENTGRID_AUDIENCE": CLIENT_ID,
                           "CALLQ_EVENTGRID_OPENID_URL": url})
    assert s.eventgrid_discovery_url == url


@pytest.mark.parametrize(("env", "names"), [
    ({"CALLQ_EVENTGRID_TENANT_ID": TENANT}, "CALLQ_EVENTGRID_AUDIENCE"),
    ({"CALLQ_EVENTGRID_AUDIENCE": CLIENT_ID}, "CALLQ_EVENTGRID_TENANT_ID"),
    ({"CALLQ_EVENTGRID_OPENID_URL": OPENID_URL}, "CALLQ_EVENTGRID_TENANT_ID"),
    ({"CALLQ_EVENTGRID_TENANT_ID": "contoso.onmicrosoft.com", "CALLQ_EVENTGRID_AUDIENCE": CLIENT_ID},
     "CALLQ_EVENTGRID_TENANT_ID"),
    ({"CALLQ_EVENTGRID_TENANT_ID": TENANT, "CALLQ_EVENTGRID_AUDIENCE": CLIENT_ID,
      "CALLQ_EVENTGRID_OPENID_URL": "ftp://x/"}, "CALLQ_EVENTGRID_OPENID_URL"),
], ids=["tenant-alone", "audience-alone", "url-alone", "tenant-not-guid", "url-scheme"])
def test_a_half_configured_entra_is_a_config_error_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


@pytest.mark.parametrize("raw", ["short-secret", "has space in it 0123456789", "amp&ersand-0123456789abc"])
def test_a_weak_or_url_unsafe_query_token_is_a_config_error_that_hides_it(raw: str) -> None:
    with pytest.raises(ConfigError, match="CALLQ_EVENTGRID_QUERY_TOKENS entry 2") as caught:
        Settings.from_env({"CALLQ_EVENTGRID_QUERY_TOKENS": f"{QUERY_TOKENS[0]},{raw}"})
    assert raw not in str(caught.value)
