"""Settings parsing (bad values name the variable, never a secret) and the retry policy maths."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from tests.unit.conftest import acs_response
from workers.errors import AcsError, ConfigError
from workers.retry import backoff_s, retry_after_s, retry_delay_s, should_retry
from workers.settings import REAL_ACS_OPENID_URL, Settings


def test_defaults_run_the_embedded_stack() -> None:
    s = Settings.from_env({})
    assert (s.api_port, s.sim_port, s.redis_port, s.flower_port) == (8000, 8089, 6390, 5555)
    assert s.redis_url == "redis://127.0.0.1:6390/0" and not s.external_redis
    assert s.acs_endpoint == "http://127.0.0.1:8089"
    assert s.callback_url == "http://127.0.0.1:8000/v1/acs/events"
    assert s.openid_url == "http://127.0.0.1:8089/calling/.well-known/acsopenidconfiguration"


def test_ports_flow_into_derived_urls() -> None:
    s = Settings.from_env({"CALLQ_API_PORT": "9000", "CALLQ_SIM_PORT": "9089", "CALLQ_REDIS_PORT": "7000"})
    assert s.public_url == "http://127.0.0.1:9000" and s.acs_endpoint == "http://127.0.0.1:9089"
    assert s.redis_url == "redis://127.0.0.1:7000/0"


def test_connection_string_points_at_real_acs_without_a_trailing_slash() -> None:
    s = Settings.from_env({"CALLQ_ACS_CONNECTION_STRING": "endpoint=https://x.communication.azure.com/;accesskey=a2V5"})
    assert s.acs_endpoint == "https://x.communication.azure.com" and s.acs_access_key == "a2V5"
    assert s.openid_url == REAL_ACS_OPENID_URL and s.uses_real_acs


def test_secrets_are_not_in_repr() -> None:
    s = Settings.from_env({"CALLQ_API_KEYS": "web:supersecretkey-000000", "CALLQ_ACS_ACCESS_KEY": "c2VjcmV0LWtleQ==",
                           "CALLQ_FLOWER_PASSWORD": "flowerpw-secret"})
    assert "supersecretkey" not in repr(s) and "c2VjcmV0" not in repr(s) and "flowerpw" not in repr(s)


@pytest.mark.parametrize(("env", "needle"), [
    ({"CALLQ_API_PORT": "eighty"}, "CALLQ_API_PORT must be a whole number, got 'eighty'"),
    ({"CALLQ_API_PORT": "70000"}, "CALLQ_API_PORT must be between"),
    ({"CALLQ_RETRY_BASE_SECONDS": "-1"}, "CALLQ_RETRY_BASE_SECONDS must be a positive number"),
    ({"CALLQ_REDIS_URL": "http://x"}, "CALLQ_REDIS_URL must be a redis://"),
    ({"CALLQ_API_KEYS": "nocolon"}, "CALLQ_API_KEYS entry 1 must look like name:key"),
    ({"CALLQ_API_KEYS": "web:short"}, "at least 16 characters"),
    ({"CALLQ_ACS_CONNECTION_STRING": "endpoint=https://x"}, "must contain endpoint=...;accesskey=..."),
    ({"CALLQ_LOG_FORMAT": "xml"}, "CALLQ_LOG_FORMAT must be 'text' or 'json'"),
])
def test_bad_values_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(".", r"\.")):
        Settings.from_env(env)


def test_short_api_key_error_does_not_echo_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"CALLQ_API_KEYS": "web:tinysecret"})
    assert "tinysecret" not in str(info.value)


def test_backoff_is_full_jitter_under_the_cap() -> None:
    rng = random.Random(7)
    delays = [backoff_s(a, base_s=0.5, cap_s=4.0, rng=rng) for a in range(10) for _ in range(20)]
    assert all(0.0 <= d <= 4.0 for d in delays)
    assert max(delays) > 2.0  # the cap is reachable, not just the base


def test_retry_after_from_acs_wins_over_backoff() -> None:
    err = AcsError("throttled", status=429, retry_after_s=2.0, retryable=True)
    assert retry_delay_s(err, 1, base_s=0.1, cap_s=1.0, rng=random.Random(1)) == 2.0


@pytest.mark.parametrize(("err", "repeatable", "expected"), [
    (AcsError("503", status=503, retryable=True), True, True),       # same repeatability id: safe
    (AcsError("503", status=503, retryable=True), False, False),     # may have executed: not safe
    (AcsError("refused", retryable=True, may_have_executed=False), False, True),  # ACS provably did not act
    (AcsError("404", status=404, retryable=False), True, False),     # other 4xx: never
])
def test_only_safe_transient_failures_are_retried(err: AcsError, repeatable: bool, expected: bool) -> None:
    assert should_retry(err, repeatable=repeatable, attempt=1, max_attempts=5) is expected


def test_attempts_are_bounded() -> None:
    err = AcsError("503", status=503, retryable=True)
    assert not should_retry(err, repeatable=True, attempt=5, max_attempts=5)


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "7"}, 7.0),
    ({"Retry-After": "0.5"}, 0.5),
    ({"retry-after-ms": "1500"}, 1.5),
    ({"x-ms-retry-after-ms": "250"}, 0.25),
    ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # a date in the past: go now
    ({"Retry-After": "soon"}, None),  # neither seconds nor a date
    ({"Retry-After": "inf"}, None),
    ({}, None),
], ids=["seconds", "fraction", "retry-after-ms", "x-ms-retry-after-ms", "past-date", "garbage", "inf", "absent"])
def test_retry_after_is_read_in_every_form_azure_core_knows(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_s(acs_response(429, headers)) == expected


def test_retry_after_as_an_http_date_is_the_time_until_it() -> None:
    when = datetime.now(UTC) + timedelta(hours=1)
    seconds = retry_after_s(acs_response(429, {"Retry-After": format_datetime(when, usegmt=True)}))
    assert seconds is not None and 3500 < seconds <= 3600  # whole seconds in the header; the clock moved on a bit


def test_event_streams_have_a_redis_pool_size_of_their_own() -> None:
    assert Settings.from_env({}).redis_stream_max_connections == 1000
    s = Settings.from_env({"CALLQ_REDIS_MAX_CONNECTIONS": "50", "CALLQ_REDIS_STREAM_MAX_CONNECTIONS": "300"})
    assert (s.redis_max_connections, s.redis_stream_max_connections) == (50, 300)
    with pytest.raises(ConfigError, match="CALLQ_REDIS_STREAM_MAX_CONNECTIONS"):
        Settings.from_env({"CALLQ_REDIS_STREAM_MAX_CONNECTIONS": "many"})
