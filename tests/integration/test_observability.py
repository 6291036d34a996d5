"""Observability on the real stack (``callq up``): no secret in any log line, error body, task argument, broker
message or Flower page; metrics carry every process's figures; logs are JSON with the command they concern."""

from __future__ import annotations

import base64
import json
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import redis
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from callq import _components
from callq._health import probe
from tests.conftest import wait_until
from tests.integration.stackutil import ROOT, Output, RunningStack, free_ports, running_stack, stack_env
from workers.operations import OPERATIONS
from workers.settings import Settings

pytestmark = pytest.mark.integration
JSON_MODE_PROCESSES = ("api", "worker", "beat", "flower", "simulator")
LINE_FIELDS = {"ts", "level", "logger", "process", "pid", "msg"}
JWT_SHAPE = re.compile(r"eyJ[\w-]{5,}\.eyJ[\w-]{5,}\.[\w-]+")
BASE64_BLOB = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


class RedisMonitor:
    """Everything every client sends to Redis (MONITOR), collected on a thread until stopped."""

    def __init__(self, port: int) -> None:
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._sock.settimeout(None)
        self._sock.sendall(b"MONITOR\r\n")
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := self._safe_recv():
            self._chunks.append(chunk)

    def _safe_recv(self) -> bytes:
        try:
            return self._sock.recv(65536)
        except OSError:
            return b""

    def stop(self) -> str:
        self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._sock.close()
        return b"".join(self._chunks).decode("utf-8", errors="replace")


def _with_decoded_blobs(text: str) -> str:
    """``text`` plus every base64 blob in it decoded: kombu base64-encodes task message bodies."""
    decoded = []
    for blob in BASE64_BLOB.findall(text):
        try:
            decoded.append(base64.b64decode(blob + "=" * (-len(blob) % 4)).decode("utf-8", errors="ignore"))
        except ValueError:
            continue
    return text + "\n" + "\n".join(decoded)


def _value(client: redis.Redis, key: str, kind: str) -> Any:
    if kind == "string":
        return client.get(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind == "list":
        return client.lrange(key, 0, -1)
    if kind == "set":
        return client.smembers(key)
    if kind == "zset":
        return client.zrange(key, 0, -1)
    return client.xrange(key) if kind == "stream" else None


def _keyspace(client: redis.Redis) -> str:
    """Every key and value in Redis, as text."""
    return "\n".join(f"{key} {(kind := client.type(key))} {_value(client, key, kind)!r}"
                     for key in client.scan_iter(count=1000))


def _forged_jwt() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    claims = {"iss": "https://acscallautomation.communication.azure.com", "aud": "x", "exp": int(time.time()) + 600}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "forged-kid"})


def _json_lines(process: str, lines: list[str]) -> list[dict[str, Any]]:
    """Each non-empty line as a JSON object from ``process``; fails on the first line that is not one."""
    docs = []
    for line in filter(str.strip, lines):
        try:
            doc = json.loads(line)
        except ValueError:
            raise AssertionError(f"{process} wrote a line that is not JSON: {line!r}") from None
        assert isinstance(doc, dict) and LINE_FIELDS <= doc.keys() and doc["process"] == process, line
        docs.append(doc)
    return docs


def _errors(stack: RunningStack, http: httpx.Client, api_key: str, cc: str, forged: str) -> list[str]:
    """Drive the error paths a leak would most likely hide in; returns the response bodies."""
    api, bodies = stack.api_url, []
    for resp in (
        http.post(f"{api}/v1/rooms/r1/connect", headers={"Authorization": "Bearer wrong-key-0123456789abc",
                                                          "Idempotency-Key": "k1"}),
        http.post(f"{api}/v1/calls/{cc}/play", headers={"Authorization": f"Bearer {api_key}",
                                                        "Idempotency-Key": "k2", "Content-Type": "application/json"},
                  content=b"{not json"),
        http.post(f"{api}/v1/calls/{cc}/dtmf", headers={"Authorization": f"Bearer {api_key}", "Idempotency-Key": "k3"},
                  json={"tones": "x" * 40}),
        http.get(f"{api}/v1/commands/cmd_nope", headers={"Authorization": f"Bearer {api_key}"}),
        http.post(f"{api}/v1/acs/events", json=[{"id": "e1", "type": "x"}],
                  headers={"Authorization": f"Bearer {forged}"}),
        http.post(f"{api}/v1/acs/events?token=wrong", json=[{"id": "e2"}]),
        http.get(f"{api}/metrics", headers={"Authorization": f"Bearer {forged}"}),
    ):
        assert resp.status_code >= 400, resp.text
        bodies.append(resp.text)
    return bodies


def _flower(stack: RunningStack, http: httpx.Client) -> list[str]:
    """Flower's task list and each task's page, its workers page, as an authenticated operator sees them."""
    auth = stack.flower_auth
    tasks = wait_until(lambda: (t := http.get(f"{stack.flower_url}/api/tasks", auth=auth).json()) and len(t) >= 10
                       and t, timeout_s=30, what="Flower to see the demo's tasks")
    command_tasks = {f"callq.{t}" for t in OPERATIONS} | {"callq.reconcile"}
    for task in tasks.values():
        assert task["kwargs"] == "{}", task
        if task["name"] in command_tasks:  # a command's task carries its id and nothing else
            # Only ids (a command's, or a schedule's with its occurrence time and wake token): never a payload.
            assert re.fullmatch(r"\['cmd_[0-9a-f]{32}'\]|\[('rs_[0-9a-f]{28}'(, \d+(, ('[0-9a-f]{32}'|None))?)?)?\]",
                                task["args"]), task
        else:  # other tasks (schedules, automation runs, beat's sweep) carry ids, numbers and wake tokens only
            assert re.fullmatch(r"\(\)|\[(('[\w-]+'|\d+|None)(, )?)*\]", task["args"]), task
    broker_page = http.get(f"{stack.flower_url}/broker", auth=auth)
    # Flower reads the queues through the broker URL's scheme: callq's transport keeps it `redis://`.
    assert broker_page.status_code == 200 and "callq.steps" in broker_page.text, broker_page.text[-2000:]
    pages = [json.dumps(tasks), http.get(f"{stack.flower_url}/workers", auth=auth).text, broker_page.text]
    pages += [http.get(f"{stack.flower_url}/task/{task_id}", auth=auth).text for task_id in list(tasks)[:40]]
    return pages


def _metrics(stack: RunningStack, http: httpx.Client, token: str) -> dict[tuple[str, str], float]:
    text = http.get(f"{stack.api_url}/metrics", headers={"Authorization": f"Bearer {token}"}).text
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())))
            found[key] = found.get(key, 0.0) + s.value
    return found


def _total(found: dict[tuple[str, str], float], name: str, where: str = "") -> float:
    return sum(v for (n, labels), v in found.items() if n == name and where in labels)


def _demo_counted(found: dict[tuple[str, str], float]) -> dict[tuple[str, str], float] | None:
    """The scrape once the worker's flusher (about once a second) has written what it saw of the demo."""
    done = all(_total(found, name) >= 10 for name in (
        "callq_commands_succeeded_total", "callq_command_accept_to_sent_seconds_count",
        "callq_command_sent_to_resolved_seconds_count"))
    return found if done else None


@pytest.mark.timeout(300)
def test_no_secret_reaches_logs_errors_tasks_the_broker_or_flower(tmp_path: Path) -> None:
    ports = free_ports()
    api_key = f"leak-{secrets.token_hex(16)}"
    acs_key = base64.b64encode(secrets.token_bytes(32)).decode()
    connection_string = f"endpoint=http://127.0.0.1:{ports['CALLQ_SIM_PORT']};accesskey={acs_key}"
    flower_password, callback_token, metrics_token = (secrets.token_hex(12) for _ in range(3))
    extra = {**{k: str(v) for k, v in ports.items()}, "CALLQ_API_KEYS": f"ops:{api_key}",
             "CALLQ_ACS_CONNECTION_STRING": connection_string, "CALLQ_FLOWER_PASSWORD": flower_password,
             "CALLQ_CALLBACK_TOKEN": callback_token, "CALLQ_METRICS_TOKEN": metrics_token, "CALLQ_LOG_FORMAT": "json"}
    forged = _forged_jwt()
    secret_values = {"API key": api_key, "ACS access key": acs_key, "connection string": connection_string,
                     "Flower password": flower_password, "callback token": callback_token,
                     "metrics token": metrics_token, "forged JWT": forged}
    seen: dict[str, str] = {}

    with running_stack(tmp_path / "callq", extra_env=extra) as stack, httpx.Client(timeout=30) as http:
        monitor = RedisMonitor(ports["CALLQ_REDIS_PORT"])
        demo = stack.run_callq("demo")
        assert demo.returncode == 0, demo.stdout + demo.stderr
        cc = re.search(r"call ([0-9a-f-]{36})", demo.stdout).group(1)  # type: ignore[union-attr]
        seen["error bodies"] = "\n".join(_errors(stack, http, api_key, cc, forged))
        login = http.post(f"{stack.api_url}/ui/login", data={"api_key": api_key})
        assert login.status_code == 303
        seen["operator pages"] = "\n".join(http.get(f"{stack.api_url}{path}").text
                                           for path in ("/ui", f"/ui/calls/{cc}", "/ui/fragments/overview"))
        seen["flower"] = "\n".join(_flower(stack, http))
        found = wait_until(lambda: _demo_counted(_metrics(stack, http, metrics_token)), timeout_s=15,
                           what="the demo's figures from the API and the worker in /metrics")
        scrape = {"Authorization": f"Bearer {metrics_token}"}
        seen["metrics"] = http.get(f"{stack.api_url}/metrics", headers=scrape).text
        seen["redis keyspace"] = _with_decoded_blobs(_keyspace(redis.Redis.from_url(stack.redis_url,
                                                                                   decode_responses=True)))
        seen["redis commands (MONITOR)"] = _with_decoded_blobs(monitor.stop())
        seen["demo output"] = demo.stdout + demo.stderr
        assert stack.stop() == 0
    seen["every process's output"] = stack.output.text(last=100_000)

    for where, text in seen.items():
        for what, value in secret_values.items():
            assert value not in text, f"the {what} appears in {where}"
        assert not JWT_SHAPE.search(text), f"a JWT appears in {where}: {JWT_SHAPE.search(text)}"
    assert "cmd_" in seen["redis commands (MONITOR)"] and "callq.connect" in seen["redis commands (MONITOR)"]

    # The figures came from every process: accepted by the API, sent by the worker, resolved by callbacks.
    assert _total(found, "callq_commands_accepted_total", "type=connect") == 1
    assert _total(found, "callq_command_accept_to_sent_seconds_count") >= 10
    assert _total(found, "callq_command_sent_to_resolved_seconds_count") >= 10
    assert _total(found, "callq_callback_events_total", "type=CallConnected") >= 1
    assert _total(found, "callq_callback_auth_failures_total") == 2
    assert _total(found, "callq_acs_responses_total", "status=202") >= 1
    assert _total(found, "callq_workers_alive") == 1

    # Every line of every callq process (not redis-server's, not the supervisor's own) is JSON, from start-up
    # (no Celery banner) to shutdown; the API's and the worker's name the command (and call) each is about.
    by_process: dict[str, list[str]] = {name: [] for name in JSON_MODE_PROCESSES}
    for line in stack.output.lines:
        if (m := re.match(rf"^({'|'.join(JSON_MODE_PROCESSES)})\s+\| (.*)$", line)) is not None:
            by_process[m.group(1)].append(m.group(2))
    docs = [doc for name, lines in by_process.items() for doc in _json_lines(name, lines)]
    assert {d["process"] for d in docs} == set(JSON_MODE_PROCESSES)
    assert any(d["process"] == "worker" and "Warm shutdown" in d["msg"] for d in docs)
    sent = [d for d in docs if d["process"] == "worker" and d["msg"].endswith("sent to ACS")]
    assert sent and all(d["command_id"] == d["operation_context"] for d in sent)
    assert any(d.get("call_connection_id") == cc for d in sent)
    assert any(d["process"] == "api" and "accepted" in d["msg"] and d.get("command_id") for d in docs)


def _wait_healthy(component: _components.Component, proc: subprocess.Popen[str], output: Output) -> None:
    wait_until(lambda: proc.poll() is not None or probe(component.health, lambda _: False), timeout_s=60,
               what=f"{component.name} to answer its health check")
    assert proc.poll() is None, f"{component.name} exited:\n{output.text()}"


@pytest.mark.timeout(120)
def test_flower_and_simulator_write_only_json_lines_and_no_secret(redis_url: str, tmp_path: Path) -> None:
    flower_password, callback_token, api_key = secrets.token_hex(12), secrets.token_hex(12), secrets.token_hex(16)
    acs_key = base64.b64encode(secrets.token_bytes(32)).decode()
    forged = _forged_jwt()
    env = stack_env(tmp_path, free_ports(), {
        "CALLQ_REDIS_URL": redis_url, "CALLQ_LOG_FORMAT": "json", "CALLQ_ACS_ACCESS_KEY": acs_key,
        "CALLQ_API_KEYS": f"ops:{api_key}", "CALLQ_FLOWER_PASSWORD": flower_password,
        "CALLQ_CALLBACK_TOKEN": callback_token})
    settings = Settings.from_env(env)
    # The command lines callq up runs. Flower gets its password only as FLOWER_BASIC_AUTH, as in Kubernetes.
    sim, flower = _components.simulator(settings, sys.executable), _components.flower(settings, sys.executable)
    flower_env = {k: v for k, v in env.items() if k != "CALLQ_FLOWER_PASSWORD"}
    procs = {c.name: subprocess.Popen(c.argv, cwd=ROOT, env={**base, **c.env}, stdin=subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c, base in ((sim, env), (flower, flower_env))}
    outputs = {name: Output(proc) for name, proc in procs.items()}
    try:
        for c in (sim, flower):
            _wait_healthy(c, procs[c.name], outputs[c.name])
        with httpx.Client(timeout=30) as http:
            assert http.post(f"{sim.url}/_sim/rooms", json={}).status_code == 201
            # uvicorn logs the query string: the token, the key and the JWT in it must come out scrubbed.
            leaky = f"{sim.url}/calling/callConnections/cc-1?token={callback_token}&key={acs_key}&jwt={forged}"
            assert http.get(leaky, headers={"Authorization": f"Bearer {forged}"}).status_code == 401
            assert http.get(f"{flower.url}/api/tasks", auth=(settings.flower_user, flower_password)).status_code == 200
            assert http.get(f"{flower.url}/api/tasks", auth=(settings.flower_user, "wrong-password")).status_code == 401
        assert outputs["simulator"].wait_for("/calling/callConnections/cc-1", timeout_s=30)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            proc.wait(timeout=30)
        for output in outputs.values():
            output.join()

    text = "\n".join(output.text(last=100_000) for output in outputs.values())
    for what, value in {"Flower password": flower_password, "callback token": callback_token, "ACS key": acs_key,
                        "API key": api_key, "forged JWT": forged}.items():
        assert value not in text, f"the {what} appears in the output"
    assert not JWT_SHAPE.search(text), JWT_SHAPE.search(text)
    sim_docs = _json_lines("simulator", outputs["simulator"].lines)
    flower_docs = _json_lines("flower", outputs["flower"].lines)
    access = {(d["http_method"], d["path"].split("?")[0], d["status"]) for d in sim_docs if "http_method" in d}
    assert {("POST", "/_sim/rooms", 201), ("GET", "/calling/callConnections/cc-1", 401)} <= access
    assert any("Application startup complete" in d["msg"] for d in sim_docs)
    assert any(d["msg"].startswith("Visit me at") for d in flower_docs)
    assert any("shutting down" in d["msg"] for d in flower_docs)  # its SIGTERM line: JSON to the last


def test_flower_refuses_to_start_without_authentication(tmp_path: Path) -> None:
    env = stack_env(tmp_path, free_ports(), {"CALLQ_REDIS_URL": "redis://127.0.0.1:1/0"})
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "tasks.app", "flower", "--port=1"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0
    assert "refusing to start Flower without authentication" in result.stderr
