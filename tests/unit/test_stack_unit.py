"""The pure parts of ``callq up``: port checks, credentials, command lines, log prefixes, the ready table, the CLI."""

from __future__ import annotations

import base64
import io
import os
import shutil
import socket
import stat
import sys
from pathlib import Path

import pytest

from callq import _components, _credentials, cli, stack
from callq._health import Port, StackError, check_ports, planned_ports, port_is_free
from callq._procs import Console, prefix
from callq._table import ready_table
from workers.errors import ConfigError
from workers.settings import Settings

PY = "/venv/bin/python"


def _all_free(host: str, port: int) -> bool:
    return True


# --- ports -----------------------------------------------------------------------------------------------------


def test_a_taken_port_is_named_with_its_setting() -> None:
    ports = planned_ports(Settings())
    with pytest.raises(StackError) as err:
        check_ports(ports, is_free=lambda host, port: port != 8000)
    assert str(err.value).startswith("port 8000 (CALLQ_API_PORT) is already in use")
    assert "5555" not in str(err.value)


def test_every_taken_port_is_named() -> None:
    with pytest.raises(StackError) as err:
        check_ports(planned_ports(Settings()), is_free=lambda host, port: False)
    for text in ("port 8000 (CALLQ_API_PORT)", "port 8089 (CALLQ_SIM_PORT)", "port 5555 (CALLQ_FLOWER_PORT)",
                 "port 6390 (CALLQ_REDIS_PORT)"):
        assert text in str(err.value)


def test_the_same_port_for_two_components_is_refused() -> None:
    with pytest.raises(StackError, match="CALLQ_FLOWER_PORT and CALLQ_API_PORT are both 8000"):
        check_ports([Port(8000, "CALLQ_API_PORT"), Port(8000, "CALLQ_FLOWER_PORT")], is_free=_all_free)


def test_an_external_redis_needs_no_local_port() -> None:
    settings = Settings.from_env({"CALLQ_REDIS_URL": "redis://cache.internal:6379/0"})
    assert "CALLQ_REDIS_PORT" not in {p.setting for p in planned_ports(settings)}
    assert "CALLQ_REDIS_PORT" in {p.setting for p in planned_ports(Settings())}


def test_port_is_free_sees_a_listening_socket() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert not port_is_free("127.0.0.1", port)
    assert port_is_free("127.0.0.1", port)


# --- credentials -----------------------------------------------------------------------------------------------


def test_empty_secrets_are_generated() -> None:
    creds = _credentials.generate(Settings())
    filled = _credentials.apply(Settings(), creds)
    assert filled.api_keys == {"dev": creds.api_key}
    assert creds.api_key is not None and len(creds.api_key) >= 16  # what CALLQ_API_KEYS demands
    assert filled.flower_password == creds.flower_password and filled.flower_password
    assert len(base64.b64decode(filled.acs_access_key, validate=True)) == 32


def test_configured_secrets_are_kept_and_not_regenerated() -> None:
    settings = Settings(api_keys={"ops": "k" * 20}, flower_password="pw", acs_access_key="a2V5")
    creds = _credentials.generate(settings)
    assert creds == _credentials.DevCredentials()
    assert _credentials.apply(settings, _credentials.generate(Settings())) == settings


def test_credentials_file_is_owner_only_even_over_a_looser_one(tmp_path: Path) -> None:
    path = tmp_path / "credentials.json"
    path.write_text("{}")
    path.chmod(0o644)
    creds = _credentials.generate(Settings())
    _credentials.save(path, creds)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _credentials.load(path) == creds


def test_a_missing_or_garbled_credentials_file_loads_as_empty(tmp_path: Path) -> None:
    assert _credentials.load(tmp_path / "nope.json") == _credentials.DevCredentials()
    (tmp_path / "bad.json").write_text("[1, 2")
    assert _credentials.load(tmp_path / "bad.json") == _credentials.DevCredentials()


def test_load_dev_api_key_prefers_configured_keys_then_the_saved_one(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    assert stack.load_dev_api_key(settings) is None
    _credentials.save(tmp_path / "credentials.json", _credentials.DevCredentials(api_key="saved-key-0123456789"))
    assert stack.load_dev_api_key(settings) == "saved-key-0123456789"
    assert stack.load_dev_api_key(settings.with_(api_keys={"ops": "o" * 20})) == "o" * 20
    assert stack.load_dev_api_key(settings.with_(api_keys={"ops": "o" * 20, "dev": "d" * 20})) == "d" * 20


def test_children_get_the_secrets_and_the_redis_url_in_their_environment() -> None:
    settings = _credentials.apply(Settings(), _credentials.generate(Settings()))
    env = stack._child_env({"PATH": "/bin", "CALLQ_API_KEYS": ""}, settings)
    assert env["PATH"] == "/bin"
    assert env["CALLQ_API_KEYS"] == f"dev:{settings.api_keys['dev']}"
    assert env["CALLQ_FLOWER_PASSWORD"] == settings.flower_password
    assert env["CALLQ_ACS_ACCESS_KEY"] == settings.acs_access_key
    assert env["CALLQ_REDIS_URL"] == "redis://127.0.0.1:6390/0"
    assert Settings.from_env(env).api_keys == settings.api_keys  # round-trips through the child's from_env


def test_a_relative_data_dir_is_anchored_at_the_project_root(tmp_path: Path) -> None:
    assert stack.resolve_data_dir(Settings()).data_dir == str(stack.project_root() / ".callq")
    assert stack.resolve_data_dir(Settings(data_dir=str(tmp_path))).data_dir == str(tmp_path)


# --- command lines ---------------------------------------------------------------------------------------------


def _secrets() -> Settings:
    return Settings(api_keys={"dev": "d" * 24}, flower_password="s3cret-pw", acs_access_key="a2V5",
                    api_port=18000, sim_port=18089, redis_port=16390, flower_port=15555,
                    redis_url="redis://127.0.0.1:16390/0", data_dir="/data", worker_concurrency=3, queue="q1")


def test_the_stack_starts_in_dependency_order() -> None:
    names = [c.name for c in _components.stack(_secrets(), python=PY, redis_server="/usr/bin/redis-server")]
    assert names == ["redis", "simulator", "api", "worker", "beat", "flower"]
    external = Settings.from_env({"CALLQ_REDIS_URL": "redis://elsewhere:6379/0", "CALLQ_FLOWER_PASSWORD": "x"})
    assert [c.name for c in _components.stack(external, python=PY, redis_server=None)][0] == "simulator"


def test_command_lines_are_built_from_settings() -> None:
    by_name = {c.name: c for c in _components.stack(_secrets(), python=PY, redis_server="/usr/bin/redis-server")}
    assert by_name["redis"].argv == (
        "/usr/bin/redis-server", "--port", "16390", "--bind", "127.0.0.1", "--dir", "/data/redis", "--appendonly",
        "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", "--save", "", "--daemonize", "no")
    assert by_name["api"].argv == (PY, "-m", "uvicorn", "--factory", "api.app:create_app", "--host", "127.0.0.1",
                                   "--port", "18000")
    assert by_name["simulator"].argv[-4:] == ("--host", "127.0.0.1", "--port", "18089")
    assert by_name["worker"].argv == (PY, "-m", "celery", "-A", "tasks.app", "worker", "-E", "-P", "threads",
                                      "-c", "3", "-Q", "q1,q1.steps", "-n", "worker1@%h", "--loglevel", "INFO")
    assert by_name["beat"].argv[-4:] == ("-S", "redbeat.RedBeatScheduler", "--loglevel", "INFO")
    assert by_name["flower"].argv[-2:] == ("--address=127.0.0.1", "--port=15555")


def test_json_mode_runs_celery_without_its_plain_text_banner() -> None:
    by_name = {c.name: c for c in _components.stack(_secrets().with_(log_format="json"), python=PY, redis_server=None)}
    assert by_name["worker"].argv[:7] == (PY, "-m", "celery", "-A", "tasks.app", "--quiet", "worker")
    assert by_name["beat"].argv[:7] == (PY, "-m", "celery", "-A", "tasks.app", "--quiet", "beat")
    assert "--quiet" not in by_name["flower"].argv  # Flower logs its banner: a JSON line already


def test_health_checks_point_at_each_component() -> None:
    by_name = {c.name: c for c in _components.stack(_secrets(), python=PY, redis_server="redis-server")}
    assert by_name["redis"].health == _components.RedisPing("redis://127.0.0.1:16390/0")
    assert by_name["simulator"].health == _components.HttpOk("http://127.0.0.1:18089/_sim/health")
    assert by_name["api"].health == _components.HttpOk("http://127.0.0.1:18000/healthz")
    assert by_name["worker"].health == _components.HttpOk("http://127.0.0.1:18000/readyz")
    assert isinstance(by_name["beat"].health, _components.LogLine)
    assert by_name["flower"].health == _components.HttpOk("http://127.0.0.1:15555/healthcheck")


def test_flower_gets_its_password_in_the_environment_never_in_argv() -> None:
    flower = _components.flower(_secrets(), PY)
    assert flower.env == {"FLOWER_BASIC_AUTH": "admin:s3cret-pw"}
    assert not any("s3cret-pw" in arg or "basic" in arg.lower() for arg in flower.argv)
    assert "s3cret-pw" not in repr(flower)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"flower_password": ""}, "CALLQ_FLOWER_PASSWORD must be set"),
     ({"flower_password": "a,b"}, "must not contain ','"),
     ({"flower_user": "ad:min"}, "CALLQ_FLOWER_USER")],
)
def test_flower_refuses_to_run_without_a_usable_password(changes: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _components.flower(_secrets().with_(**changes), PY)


def test_a_wildcard_bind_is_probed_on_loopback() -> None:
    api = _components.api(_secrets().with_(api_host="0.0.0.0"), PY)
    assert "--host" in api.argv and "0.0.0.0" in api.argv
    assert api.url == "http://127.0.0.1:18000"
    assert _components.local_host("::1") == "[::1]"


def test_redis_passwords_are_redacted_for_display() -> None:
    assert _components.redact_url("redis://:hunter2@db:6379/0") == "redis://:***@db:6379/0"
    assert _components.redact_url("redis://127.0.0.1:6390/0") == "redis://127.0.0.1:6390/0"


# --- output ----------------------------------------------------------------------------------------------------


def test_prefix_is_fixed_width_and_coloured_only_when_asked() -> None:
    assert prefix("api", 6) == "api    | "
    assert prefix("flower", 6) == "flower | "
    assert prefix("api", 6, "36") == "\x1b[36mapi    | \x1b[0m"


def test_console_prefixes_each_line_with_its_process() -> None:
    out = io.StringIO()
    console = Console(out, ["api", "simulator"], colour=False)
    console.line("api", "started")
    console.line("simulator", "ok")
    assert out.getvalue() == "api       | started\nsimulator | ok\n"


def test_ready_table_lists_every_component_url_and_generated_credentials() -> None:
    base = Settings(data_dir="/data")
    creds = _credentials.generate(base)
    settings = _credentials.apply(base, creds)
    components = _components.stack(settings, python=PY, redis_server="redis-server")
    table = ready_table(settings, components, creds, Path("/data"), banner=stack.READY_BANNER)
    assert table.startswith(stack.READY_BANNER)
    for c in components:
        assert f"| {c.name} " in table
    for url in ("http://127.0.0.1:8000", "http://127.0.0.1:8089", "http://127.0.0.1:5555", "redis://127.0.0.1:6390/0"):
        assert url in table
    assert creds.api_key in table and creds.flower_password in table  # type: ignore[operator]
    assert creds.acs_access_key not in table  # type: ignore[operator]


def test_ready_table_never_prints_configured_secrets() -> None:
    settings = Settings(api_keys={"ops": "k" * 20}, flower_password="configured-pw", acs_access_key="a2V5")
    components = _components.stack(settings, python=PY, redis_server="redis-server")
    table = ready_table(settings, components, _credentials.DevCredentials(), Path("/d"), banner="ready")
    assert "k" * 20 not in table and "configured-pw" not in table
    assert "from CALLQ_API_KEYS (ops)" in table


# --- CLI -------------------------------------------------------------------------------------------------------


def test_a_bad_setting_prints_one_line_and_exits_2(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALLQ_FLOWER_PORT", "lots")
    assert cli.main(["up"]) == 2
    err = capsys.readouterr().err
    assert err == "callq: CALLQ_FLOWER_PORT must be a whole number, got 'lots'\n"


def test_a_stack_error_exits_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(settings: Settings, **kwargs: object) -> int:
        raise StackError("port 8000 (CALLQ_API_PORT) is already in use")

    monkeypatch.setattr(stack, "up", refuse)
    assert cli.main(["up"]) == 1
    assert capsys.readouterr().err == "callq: port 8000 (CALLQ_API_PORT) is already in use\n"


def test_callq_flower_refuses_to_start_without_a_password(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def exec_nothing(*args: object) -> None:
        raise AssertionError("callq flower must refuse before replacing itself with Flower")

    monkeypatch.setattr(os, "execve", exec_nothing)
    monkeypatch.delenv("CALLQ_FLOWER_PASSWORD", raising=False)
    assert cli.main(["flower"]) == 2
    assert "CALLQ_FLOWER_PASSWORD must be set" in capsys.readouterr().err


def test_missing_redis_server_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(StackError, match="apt-get install redis-server, or run make up"):
        stack._find_redis_server()


def test_a_stale_pid_file_does_not_block_start_up(tmp_path: Path) -> None:
    pid_file = tmp_path / stack.PID_FILE
    pid_file.write_text(f"{2**22 + 1}\n")  # above Linux's largest pid_max: no such process
    stack._refuse_if_running(pid_file)
    pid_file.write_text("garbage")
    stack._refuse_if_running(pid_file)


def test_exit_codes_are_described_for_humans() -> None:
    assert stack.describe_exit(0) == "exit code 0"
    assert stack.describe_exit(3) == "exit code 3"
    assert stack.describe_exit(-9) == "ended by SIGKILL"


def test_a_component_that_keeps_dying_is_restarted_a_few_times_then_stops_the_stack(tmp_path: Path) -> None:
    out = io.StringIO()
    runner = stack._Runner(Console(out, ["crashy", "callq"], colour=False), dict(os.environ), stop_grace_s=1.0)
    go = tmp_path / "go"  # the first one lives until it was seen healthy; every later one dies at once
    script = "\n".join([
        "import os, time",
        "print('up', flush=True)",
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)",  # sleep-ok: the child polls for its go file
        "raise SystemExit(3)",
    ])
    crashy = _components.Component("crashy", (sys.executable, "-c", script), _components.LogLine("up"), restart=True)
    assert runner.start_healthy(crashy, deadline_s=30, stop=stack._StopRequest())
    go.touch()
    try:
        assert runner.supervise(stack._StopRequest()) == 1  # returns only because the restarts ran out
    finally:
        runner.stop_all(lambda: True)
    text = out.getvalue()
    assert [f"restarting it ({n} of {stack.RESTARTS_MAX}" in text for n in range(1, stack.RESTARTS_MAX + 1)] == \
        [True] * stack.RESTARTS_MAX
    assert text.count("callq: crashy stopped unexpectedly (exit code 3); its last") == 1
