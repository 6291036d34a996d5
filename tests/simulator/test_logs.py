"""The simulator's JSON log lines (``CALLQ_LOG_FORMAT=json``): uvicorn's loggers go through its own formatter."""

from __future__ import annotations

import json
import logging

import uvicorn.config
from simharness import KEY

from simulator.logs import JsonFormatter, log_config
from simulator.settings import Settings

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJhY3MiLCJhdWQiOiJ4In0.c2lnbmF0dXJlLWJ5dGVz"


def test_an_access_line_is_one_object_with_method_path_status_and_no_secret() -> None:
    path = f"/calling/callConnections/cc-1?token=cb-token-123&key={KEY}&jwt={JWT}"
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5", "GET", path, "1.1", 401), None)
    line = JsonFormatter(secrets=[KEY]).format(record)
    doc = json.loads(line)
    assert (doc["process"], doc["logger"], doc["level"]) == ("simulator", "uvicorn.access", "info")
    assert (doc["http_method"], doc["status"]) == ("GET", 401)
    assert doc["path"].startswith("/calling/callConnections/cc-1?token=***")
    for secret in ("cb-token-123", KEY, JWT):
        assert secret not in line


def test_text_mode_keeps_uvicorns_own_log_config() -> None:
    assert log_config(Settings(access_key=KEY)) is uvicorn.config.LOGGING_CONFIG
    json_config = log_config(Settings(access_key=KEY, log_format="json"))
    assert {"uvicorn", "uvicorn.error", "uvicorn.access"} <= json_config["loggers"].keys()


def test_event_grid_url_secret_is_scrubbed() -> None:
    settings = Settings(access_key=KEY, log_format="json", eventgrid_url="http://h/eg?clientSecret=hunter22")
    formatter = log_config(settings)["formatters"]["json"]
    line = JsonFormatter(secrets=formatter["secrets"]).format(
        logging.LogRecord("simulator", logging.INFO, __file__, 1, "posting to http://h/eg?clientSecret=hunter22",
                          None, None))
    assert "hunter22" not in line
