"""CALLQ_REDIS_MIN_REPLICAS, for real: a primary and a replica (redis-server), the API, a worker, the simulator.

"The replica does not confirm" is a replica stopped with SIGSTOP: connected, so Redis counts it, but silent, so
``WAIT`` runs out its timeout (the test sets 200 ms) — what a lagging or partitioned replica looks like.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
import signal
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from tests.sentinel import SentinelSet, start_pair
from workers import keys, ledger, scripts
from workers.replication import NotReplicated, Replication
from workers.runtime import RetryLater, Runtime
from workers.scripts import AutoPipeline
from workers.settings import Settings

TIMEOUT_MS = 200


@pytest.fixture
def pair() -> Iterator[SentinelSet]:
    s = start_pair()
    yield s
    s.close()


@contextmanager
def replica_silent(pair: SentinelSet) -> Iterator[None]:
    proc = pair.procs[pair.replica_port]
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


def _url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


@pytest.fixture
def stack_env(stack_env: dict[str, str], pair: SentinelSet, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"CALLQ_REDIS_URL": _url(pair.primary_port), "CALLQ_REDIS_MIN_REPLICAS": "1",
           "CALLQ_REDIS_REPLICATION_TIMEOUT_MS": str(TIMEOUT_MS)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return {**stack_env, **env}


def test_confirm_covers_writes_made_on_other_connections_and_says_how_many_replicas_fell_short(
        pair: SentinelSet) -> None:
    primary = pair.client(pair.primary_port)
    other = redis.Redis(port=pair.primary_port, decode_responses=True)  # its own pool: another connection
    other.set("written-elsewhere", "1")
    Replication(1, 5000).confirm(primary)
    assert pair.client(pair.replica_port).get("written-elsewhere") == "1"
    with pytest.raises(NotReplicated) as short:
        Replication(2, TIMEOUT_MS).confirm(primary)
    assert (short.value.reached, short.value.wanted) == (1, 2)
    Replication(0, TIMEOUT_MS).confirm(redis.Redis(port=1))  # disabled: not even a connection is made
    other.close()


def test_the_script_pipeline_answers_a_batch_once_replicated_also_after_a_script_flush(pair: SentinelSet) -> None:
    async def batch(min_replicas: int) -> list[object]:
        r = aioredis.Redis(port=pair.primary_port, decode_responses=True)
        try:
            pipe = AutoPipeline(r, Replication(min_replicas, TIMEOUT_MS))
            calls = [pipe.run(ledger.enqueue(client=f"c{i}", command_id="", message=f"m{i}", queue="q", window=100))
                     for i in range(3)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            await r.aclose()

    pair.client(pair.primary_port).script_flush()  # every call answers NOSCRIPT first and is re-run
    assert asyncio.run(batch(1)) == [1, 1, 1]
    assert sorted(pair.client(pair.replica_port).lrange("q", 0, -1)) == ["m0", "m1", "m2"]
    answers = asyncio.run(batch(2))  # one replica cannot confirm for two: every caller hears it
    assert [type(a) for a in answers] == [NotReplicated] * 3


def test_a_command_is_acknowledged_only_once_the_replica_has_it_and_a_retry_after_503_makes_one_command(
        pair: SentinelSet, simulator: ThreadServer, api: httpx.Client,
        start_worker: Callable) -> None:  # type: ignore[type-arg]
    start_worker(extra_env={"CALLQ_REDIS_MIN_REPLICAS": "1"})
    replica = pair.client(pair.replica_port)
    first = post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")
    assert first.status_code == 202, first.text
    assert replica.hget(keys.command_key(first.json()["id"]), "type") == "connect"  # there before the 202
    assert wait(api, first.json()["id"])["status"] == "succeeded"

    key, room = str(uuid.uuid4()), sim_room_call(simulator)
    with replica_silent(pair):
        refused = post(api, f"/v1/rooms/{room}/connect", key=key)
        automation = api.put("/v1/automation", json={"on_call_started": [{"type": "connect", "body": {}}]})
        ready = api.get("/readyz").json()
    assert refused.status_code == 503, refused.text
    assert refused.json()["error"]["code"] == "not_replicated" and refused.headers["retry-after"] == "1"
    # A write outside the script pipeline (the client's default automation) is held to the same rule.
    assert automation.status_code == 503 and automation.json()["error"]["code"] == "not_replicated"
    assert ready["checks"]["replicas"] == "ok"  # connected and online: it is the confirmation that fell short

    retried = post(api, f"/v1/rooms/{room}/connect", key=key)
    assert retried.status_code == 202, retried.text
    made = [cid for cid in pair.client(pair.primary_port).scan_iter(f"{keys.COMMAND_PREFIX}*")
            if pair.client(pair.primary_port).hget(cid, "idempotency_key") == key]
    assert made == [keys.command_key(retried.json()["id"])]  # the 503's write and the retry: one command
    assert wait(api, retried.json()["id"])["status"] == "succeeded"


def test_readyz_is_not_ready_without_the_replicas_it_needs(pair: SentinelSet, api: httpx.Client,
                                                           start_worker: Callable) -> None:  # type: ignore[type-arg]
    start_worker()
    pair.stop(pair.replica_port)
    body = api.get("/readyz")
    assert body.status_code == 503
    assert body.json()["checks"]["replicas"] == "0 online, 1 required"


class NoAcs:
    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"nothing may reach ACS while the claim is unconfirmed (called {name})")


class Scheduler:
    def message(self, command_type: str, command_id: str) -> str:
        return f"msg:{command_type}:{command_id}"

    def command(self, command_type: str, command_id: str, countdown_s: float) -> None:
        raise AssertionError("the task layer re-publishes a RetryLater")

    def check(self, command_id: str, countdown_s: float) -> None:
        raise AssertionError("nothing was sent, so nothing waits")


def test_a_worker_sends_nothing_on_a_claim_the_replica_did_not_confirm_and_hands_the_claim_back(
        pair: SentinelSet, simulator: ThreadServer, api: httpx.Client) -> None:
    accepted = post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect")
    assert accepted.status_code == 202, accepted.text
    cid = accepted.json()["id"]
    primary = pair.client(pair.primary_port)
    runtime = Runtime(Settings(redis_min_replicas=1, redis_replication_timeout_ms=TIMEOUT_MS), primary,
                      client=NoAcs(), scheduler=Scheduler(), rng=random.Random(1))  # type: ignore[arg-type]
    with replica_silent(pair), pytest.raises(RetryLater):
        contextvars.copy_context().run(runtime.run, cid)  # its log context stays there, as in a worker's task
    record = primary.hgetall(keys.command_key(cid))
    assert (record["status"], record.get("attempts", "0"), record["lease_until"]) == ("queued", "0", "0")
    # Handed back as unsent: the next claim is a first attempt, not a crashed one that ACS must be asked about.
    claim = scripts.run(primary, ledger.claim(cid, lease_ms=1000, budget_keys=runtime.limiter.script_keys,
                                              budget_args=runtime.limiter.script_args, now_ms=1, queue="callq",
                                              window=8))
    assert (claim.kind, claim.crashed, claim.attempt) == ("claimed", False, 1)
