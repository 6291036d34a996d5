"""Log lines: JSON or text, with the command they concern, and never a secret."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping

import pytest

from workers import logs
from workers.settings import Settings

API_KEY = "api-key-0123456789abcdef"
ACS_KEY = "YWNzLWFjY2Vzcy1rZXktZm9yLWxvZy10ZXN0cw=="
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhY3MiLCJhdWQiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"


class Captured:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys

    def getvalue(self) -> str:
        return self._capsys.readouterr().err  # the handler writes to whatever sys.stderr is at the time


@pytest.fixture
def captured(capsys: pytest.CaptureFixture[str]) -> Iterator[Captured]:
    """logs.setup() may be called by the test; the process's logging is restored afterwards."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    saved_uvicorn = {n: (list((lg := logging.getLogger(n)).handlers), lg.propagate, lg.level) for n in logs._FOREIGN}
    yield Captured(capsys)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    for name, (handlers, propagate, level) in saved_uvicorn.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate
        logging.getLogger(name).setLevel(level)


def _settings(fmt: str) -> Settings:
    return Settings(api_keys={"ops": API_KEY}, acs_access_key=ACS_KEY, flower_password="flower-pw-123456",
                    callback_token="callback-token-123", metrics_token="metrics-token-1234", log_format=fmt)


def test_json_lines_carry_the_command_context(captured: Captured) -> None:
    logs.setup(_settings("json"), process="worker")
    log = logging.getLogger("callq.test")
    token = logs.bind(command_id="cmd_1", call_connection_id="cc-1", task="callq.play")
    try:
        log.info("sent %s", "play", extra={"attempt": 2})
    finally:
        logs.unbind(token)
    log.warning("outside any command")
    first, second = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["msg"] == "sent play" and first["level"] == "info" and first["process"] == "worker"
    assert (first["command_id"], first["call_connection_id"], first["attempt"]) == ("cmd_1", "cc-1", 2)
    assert first["operation_context"] == "cmd_1"  # every command sends its id as operationContext
    assert "command_id" not in second


def test_text_lines_are_for_people(captured: Captured) -> None:
    logs.setup(_settings("text"), process="api")
    logging.getLogger("callq.test").info("accepted", extra={"command_id": "cmd_9"})
    line = captured.getvalue().strip()
    assert " INFO    callq.test: accepted  [command_id=cmd_9]" in line and not line.startswith("{")


def test_no_secret_survives_formatting_even_in_a_traceback(captured: Captured) -> None:
    logs.setup(_settings("json"), process="api")
    log = logging.getLogger("callq.test")
    log.info("key %s acs %s flower %s", API_KEY, ACS_KEY, "flower-pw-123456")
    log.info("conn endpoint=https://x.communication.azure.com/;accesskey=c29tZS1vdGhlci1rZXk=")
    log.info("header Authorization: Bearer some-opaque-token and jwt %s", JWT)
    log.info("GET /v1/acs/events?token=callback-token-123&x=1 and redis://:hunter2-password@redis:6379/0")
    try:
        raise ValueError(f"bad token {JWT} metrics-token-1234")
    except ValueError:
        log.exception("failed")
    out = captured.getvalue()
    for secret in (API_KEY, ACS_KEY, "flower-pw-123456", "c29tZS1vdGhlci1rZXk=", "some-opaque-token", JWT,
                   "callback-token-123", "hunter2-password", "metrics-token-1234"):
        assert secret not in out, secret
    assert len(out.splitlines()) == 5  # a traceback stays inside its JSON line


def test_secrets_passed_to_setup_are_scrubbed_too(captured: Captured) -> None:
    # Flower's basic-auth passwords: in Kubernetes only FLOWER_BASIC_AUTH holds them, not CALLQ_FLOWER_PASSWORD.
    logs.setup(_settings("json"), process="flower", secrets=["basic-auth-pw-0123", ""])
    logging.getLogger("flower.command").info("auth admin:%s", "basic-auth-pw-0123")
    doc = json.loads(captured.getvalue())
    assert doc["msg"] == "auth admin:***" and doc["process"] == "flower"


def test_setup_replaces_its_handler_and_takes_over_uvicorn(captured: Captured) -> None:
    logs.setup(_settings("text"), process="api")
    logs.setup(_settings("json"), process="api")
    assert [h.get_name() for h in logging.getLogger().handlers].count("callq") == 1
    access = logging.getLogger("uvicorn.access")
    assert access.propagate and not access.handlers
    access.setLevel(logging.INFO)  # as uvicorn sets it (an in-process server earlier in the run may have raised it)
    access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/healthz", "1.1", 200)
    doc = json.loads(captured.getvalue())
    assert (doc["http_method"], doc["path"], doc["status"]) == ("GET", "/healthz", 200)


# JSON escapes these characters; a secret holding one must still be scrubbed (before encoding, not after).
ESCAPED_SECRETS = {
    "quote": 'api-key-with-"quote"-0123',
    "backslash": "api-key-with-\\backslash-0123",
    "non_ascii": "api-key-mit-ümlaut-ключ-0123",
}


def _log_a_secret(captured: Captured, secret: str, log_format: str) -> str:
    """A line naming the secret (message and context), then an exception naming it; what was written."""
    logs.setup(_settings(log_format).with_(api_keys={"ops": secret}), process="api")
    log = logging.getLogger("callq.test")
    log.info("key %s", secret, extra={"command_id": f"cmd-{secret}"})
    try:
        raise ValueError(f"bad key {secret}")
    except ValueError:
        log.exception("failed")
    return captured.getvalue()


@pytest.mark.parametrize("secret", ESCAPED_SECRETS.values(), ids=ESCAPED_SECRETS.keys())
def test_a_secret_json_would_escape_is_scrubbed_in_json_lines(captured: Captured, secret: str) -> None:
    out = _log_a_secret(captured, secret, "json")
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["msg"] == "key ***" and first["command_id"] == "cmd-***"
    assert "bad key ***" in second["exc"]
    escaped = json.dumps(secret)[1:-1]  # the secret as it would appear escaped inside a JSON string
    assert escaped not in out and secret not in out
    assert all(secret not in str(value) for doc in (first, second) for value in doc.values())


@pytest.mark.parametrize("secret", ESCAPED_SECRETS.values(), ids=ESCAPED_SECRETS.keys())
def test_a_secret_json_would_escape_is_scrubbed_in_text_lines(captured: Captured, secret: str) -> None:
    out = _log_a_secret(captured, secret, "text")
    assert secret not in out
    assert "key ***  [command_id=cmd-***]" in out and "bad key ***" in out


def test_celery_signal_handlers_read_the_environment_once(captured: Captured, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import observe
    from workers import settings as settings_module

    reads: list[Mapping[str, str] | None] = []

    def from_env(cls: type[Settings], env: Mapping[str, str] | None = None) -> Settings:
        reads.append(env)
        return _settings("json")

    monkeypatch.setattr(Settings, "from_env", classmethod(from_env))
    settings_module.process_settings.cache_clear()
    try:
        observe._setup_logging_early()
        observe._setup_logging(loglevel="INFO")
        observe._log_shutdown(how="Warm", sig="SIGTERM")
        assert settings_module.process_settings() is settings_module.process_settings()
    finally:
        settings_module.process_settings.cache_clear()
    assert len(reads) == 1
    assert json.loads(captured.getvalue().splitlines()[-1])["msg"] == "worker: Warm shutdown (SIGTERM)"
