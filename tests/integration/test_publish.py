"""The API's hand-built broker message is exactly what kombu would push, and a real worker runs it."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import redis

from tasks.app import create_celery, task_name
from tasks.publish import build_message, task_message
from tests import records
from tests.conftest import wait_until
from workers import keys, ledger, scripts
from workers.command import Status
from workers.settings import Settings


def test_message_matches_what_kombu_pushes(stack_settings: Settings) -> None:
    app = create_celery(stack_settings)
    r = redis.Redis.from_url(stack_settings.redis_url, decode_responses=True)
    task_id = str(uuid.uuid4())
    app.send_task(task_name("connect"), args=["cmd_x"], task_id=task_id)
    theirs = json.loads(r.rpop("callq"))
    ours = json.loads(task_message(app, task_name("connect"), task_id, ["cmd_x"], queue="callq"))
    assert set(ours) == set(theirs)
    assert ours["content-type"] == theirs["content-type"] and ours["content-encoding"] == theirs["content-encoding"]
    assert ours["body"] == theirs["body"]
    volatile = {"delivery_tag", "reply_to"}  # reply_to is the sender's result queue; results are ignored
    assert {k: v for k, v in ours["properties"].items() if k not in volatile} == \
        {k: v for k, v in theirs["properties"].items() if k not in volatile}
    assert {k: v for k, v in ours["headers"].items() if k != "origin"} == \
        {k: v for k, v in theirs["headers"].items() if k != "origin"}
    app.close()


def test_a_real_worker_consumes_the_accepted_message(stack_settings: Settings, start_worker: Callable) -> None:  # type: ignore[type-arg]
    """ACS is unreachable here, so the command fails with acs_error — which proves the worker ran it."""
    start_worker(extra_env={"CALLQ_ACS_ENDPOINT": "http://127.0.0.1:9", "CALLQ_MAX_ATTEMPTS": "2"})
    app = create_celery(stack_settings)
    r = redis.Redis.from_url(stack_settings.redis_url, decode_responses=True)
    cid = "cmd_" + uuid.uuid4().hex
    record = records.new_command(command_id=cid, client="alice", type_="connect", params={"room_id": "r1"},
                                idempotency_key="k1", room_id="r1")
    message = task_message(app, task_name("connect"), cid, [cid], queue="callq")
    outcome = scripts.run(r, ledger.accept(
        idempotency_key=keys.idempotency_key("alice", "k1"), fingerprint="fp", command=record, queue="callq",
        message=message, response_json="{}", idempotency_ttl_s=60, command_ttl_s=60, window=16,
        now_ms=int(time.time() * 1000)))
    assert not outcome.replayed
    final = wait_until(lambda: r.hget(keys.command_key(cid), "status") in Status.TERMINAL and
                       r.hgetall(keys.command_key(cid)), timeout_s=30, what="command to be run")
    assert final["status"] == "failed"
    assert json.loads(final["error"])["code"] == "acs_error"
    assert final["attempts"] == "2"  # connection refused never reached ACS, so it was safely retried once
    app.close()


def test_the_cached_message_is_the_one_celery_would_build(stack_settings: Settings) -> None:
    app = create_celery(stack_settings)
    for type_ in ("connect", "hang_up"):
        for _ in range(3):  # the first builds the template, the others fill it in
            cid, task_id = "cmd_" + uuid.uuid4().hex, str(uuid.uuid4())
            fast = json.loads(task_message(app, task_name(type_), task_id, [cid], queue="callq"))
            full = json.loads(build_message(app, task_name(type_), task_id, [cid], queue="callq"))
            assert fast["properties"].pop("delivery_tag") != full["properties"].pop("delivery_tag")
            assert fast == full
    odd = json.loads(task_message(app, task_name("connect"), "id with spaces", ["a'b\"c"], queue="callq"))
    assert odd["headers"]["id"] == "id with spaces"  # not templated: built in full
    assert json.loads(base64.b64decode(odd["body"]))[0] == ["a'b\"c"]
    app.close()
