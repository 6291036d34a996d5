"""Metrics on fakeredis: what each process records reaches Redis, and /metrics renders everyone's figures."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from api import metrics as metrics_api
from api import prometheus
from api.app import create_app
from tests.conftest import TEST_API_KEY
from workers import keys, ledger, metrics, scripts, webhooks
from workers.command import Status
from workers.delivery import Deliverer
from workers.sender import Answer
from workers.settings import Settings

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}


@pytest.fixture(autouse=True)
def fresh_recorder() -> Iterator[None]:
    metrics.RECORDER.drain()  # other tests record into the process's buffer without flushing it anywhere
    yield
    metrics.RECORDER.drain()


def _client(settings: Settings, server: fakeredis.FakeServer) -> TestClient:
    return TestClient(create_app(settings, redis=fakeredis.FakeAsyncRedis(server=server, decode_responses=True)))


@pytest.fixture
def client(settings: Settings, server: fakeredis.FakeServer) -> Iterator[TestClient]:
    with _client(settings, server) as c:
        yield c


def samples(client: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = client.get("/metrics", headers=AUTH)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    found = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def test_metrics_need_the_metrics_token_or_an_api_key(settings: Settings, server: fakeredis.FakeServer) -> None:
    with _client(settings.with_(metrics_token="scrape-token-0123456789"), server) as c:
        assert c.get("/metrics").status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert c.get("/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"}).status_code == 200
        assert c.get("/metrics", headers=AUTH).status_code == 200
        body = c.get("/metrics").json()
        assert body["error"]["code"] == "unauthorized" and "scrape-token" not in json.dumps(body)


def test_accepted_replayed_and_rejected_commands_are_counted(client: TestClient) -> None:
    for _ in range(2):  # the second is an idempotent replay: not a second acceptance
        assert client.post("/v1/rooms/r1/connect", headers={**AUTH, "Idempotency-Key": "k1"}).status_code == 202
    bad = client.post("/v1/calls/nope/hang-up", headers={**AUTH, "Idempotency-Key": "k2"}, json={})
    assert bad.status_code == 404
    assert client.post("/v1/rooms/r1/connect", headers={"Idempotency-Key": "k3"}).status_code == 401
    found = samples(client)
    assert found[("callq_commands_accepted_total", (("type", "connect"),))] == 1
    assert found[("callq_commands_rejected_total", (("code", "call_not_found"), ("type", "hang_up")))] == 1
    assert found[("callq_commands_rejected_total", (("code", "unauthorized"), ("type", "connect")))] == 1
    assert found[("callq_api_auth_failures_total", ())] == 1
    assert found[("callq_queue_depth", (("queue", "callq"),))] == 1
    route = (("method", "POST"), ("route", "/v1/rooms/{room_id}/connect"), ("status", "202"))
    assert found[("callq_http_requests_total", route)] == 2


def test_figures_from_other_processes_are_rendered_with_cumulative_buckets(
        client: TestClient, sync_redis: fakeredis.FakeRedis) -> None:
    worker = metrics.Recorder()  # another process's buffer, flushed by its own flusher
    worker.observe("callq_command_accept_to_sent_seconds", 0.02, "play")
    worker.observe("callq_command_accept_to_sent_seconds", 0.3, "play")
    worker.observe("callq_command_accept_to_sent_seconds", 999.0, "play")
    worker.inc("callq_acs_responses", "429", by=3)
    worker.inc("callq_rate_limit_wait_seconds", by=0.25)
    metrics.flush(sync_redis, worker)
    assert not worker.drain()
    found = samples(client)
    bucket = "callq_command_accept_to_sent_seconds_bucket"
    assert found[(bucket, (("le", "0.025"), ("type", "play")))] == 1
    assert found[(bucket, (("le", "0.25"), ("type", "play")))] == 1
    assert found[(bucket, (("le", "0.5"), ("type", "play")))] == 2
    assert found[(bucket, (("le", "300.0"), ("type", "play")))] == 2
    assert found[(bucket, (("le", "+Inf"), ("type", "play")))] == 3
    assert found[("callq_command_accept_to_sent_seconds_count", (("type", "play"),))] == 3
    assert found[("callq_command_accept_to_sent_seconds_sum", (("type", "play"),))] == pytest.approx(999.32)
    assert found[("callq_acs_responses_total", (("status", "429"),))] == 3
    assert found[("callq_rate_limit_wait_seconds_total", ())] == pytest.approx(0.25)
    assert {name for name, _ in found} <= prometheus.exposed_names()


def test_a_finished_command_counts_its_outcome_latency_and_leaves_the_waiting_set(
        sync_redis: fakeredis.FakeRedis) -> None:
    cid = "cmd_1"
    sync_redis.hset(keys.command_key(cid), mapping={
        "id": cid, "type": "play", "status": "waiting", "created_at": "2026-01-01T00:00:00.000Z",
        "sent_at": "2026-01-01T00:00:00.100Z", "call_connection_id": "cc-1"})
    sync_redis.zadd(keys.WAIT_DEADLINES, {cid: int(time.time() * 1000) + 60_000})  # as sent.lua lists it
    moved = scripts.run(sync_redis, ledger.transition(cid, Status.FAILED, {"error": {"code": "acs_failed"}}))
    assert moved.finished is not None  # the transition hands back what the count needs: no second read
    metrics.finished(cid, {**moved.finished, "resolved_at": "2026-01-01T00:00:01.600Z"})
    metrics.flush(sync_redis)
    assert sync_redis.zscore(keys.WAIT_DEADLINES, cid) is None
    assert sync_redis.hget(metrics.PREFIX + "callq_commands_failed", '["play","acs_failed"]') == "1"
    hist = sync_redis.hgetall(metrics.PREFIX + "callq_command_sent_to_resolved_seconds")
    assert float(hist['["play","failed"]#sum']) == pytest.approx(1.5)
    assert sync_redis.zscore(metrics.ATTENTION_KEY, cid) is not None
    assert sync_redis.zscore(metrics.CALLS_KEY, "cc-1") is not None


def test_a_failed_flush_keeps_the_figures_for_the_next_one(sync_redis: fakeredis.FakeRedis) -> None:
    recorder = metrics.Recorder()
    recorder.inc("callq_callback_duplicates", by=2)
    down = fakeredis.FakeServer()
    down.connected = False  # fakeredis then refuses every command, as a Redis outage would
    with pytest.raises(redis.ConnectionError):
        metrics.flush(fakeredis.FakeRedis(server=down, decode_responses=True), recorder)
    metrics.flush(sync_redis, recorder)
    assert sync_redis.hget(metrics.PREFIX + "callq_callback_duplicates", "[]") == "2"


def test_callback_events_count_types_orphans_duplicates_and_auth_failures(
        client: TestClient, sync_redis: fakeredis.FakeRedis) -> None:
    assert client.post("/v1/acs/events", json=[{"id": "e1", "type": "x"}]).status_code == 401
    metrics.event("CallConnected", "cc-1", orphan=False)
    metrics.event("PlayCompleted", "cc-unknown", orphan=True)
    found = samples(client)
    assert found[("callq_callback_auth_failures_total", ())] == 1
    assert found[("callq_callback_events_total", (("type", "CallConnected"),))] == 1
    assert found[("callq_callback_orphans_total", (("type", "PlayCompleted"),))] == 1
    assert sync_redis.zscore(metrics.CALLS_KEY, "cc-1") is not None
    assert sync_redis.zscore(metrics.CALLS_KEY, "cc-unknown") is None  # orphans never reach the operator page


def test_gauges_read_the_queue_waits_workers_and_the_acs_pause(
        client: TestClient, sync_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    now_ms = int(time.time() * 1000)
    sync_redis.zadd(keys.WAIT_DEADLINES, {"a": now_ms + 10_000, "b": now_ms - 5 * 60_000})
    sync_redis.zadd(keys.WORKERS_ZSET, {"w1": time.time()})
    sync_redis.set(prometheus.pause_key(settings.acs_endpoint), str(now_ms + 30_000))
    found = samples(client)
    assert found[("callq_commands_waiting", ())] == 2
    assert found[("callq_commands_waiting_overdue", ())] == 1
    assert found[("callq_workers_alive", ())] == 1
    assert 0 < found[("callq_acs_pause_seconds", ())] <= 30


class _Answering:
    """A Sender that answers each POST with the next of these statuses (None: no answer, a timeout)."""

    def __init__(self, *statuses: int | None) -> None:
        self._statuses = list(statuses)

    async def post(self, target: Any, body: bytes, headers: Any) -> Answer:
        status = self._statuses.pop(0)
        return Answer(status, None, "" if status is not None else "timeout", 0.0)


def test_each_webhook_attempt_counts_its_outcome(client: TestClient, settings: Settings, server: fakeredis.FakeServer,
                                                 sync_redis: fakeredis.FakeRedis) -> None:
    ep = webhooks.new_endpoint_id()
    scripts.run(sync_redis, webhooks.save(client="alice", endpoint_id=ep, mode="create", max_endpoints=20, fields={
        "url": "https://hooks.example.com/", "events": "*", "enabled": "1", "secret": webhooks.new_secret(),
        "created_ms": "1", "retention": "3600"}))
    for i, cc in enumerate(["cc-1", "cc-2", "cc-3", "cc-4", "cc-5"]):
        sync_redis.hset(keys.command_key(f"cmd_{i}"), mapping={"id": f"cmd_{i}", "type": "play", "status": "waiting",
                                                               "client": "alice", "call_connection_id": cc})
        scripts.run(sync_redis, ledger.transition(f"cmd_{i}", Status.SUCCEEDED, {}))
    # The fourth has had its one retry already: another failure spends its schedule.
    fourth = sync_redis.lindex(keys.webhook_lane_key(ep, "cc-4"), 0)
    sync_redis.hset(keys.webhook_message_key(fourth), "round", "1")
    now = int(time.time() * 1000)
    claims = sorted(scripts.run(sync_redis, webhooks.claim(now_ms=now, lease_ms=60_000, most=5, token="t")),
                    key=lambda c: c.lane)
    assert len(claims) == 5 and claims[3].message_id == fourth
    # The last claim lapsed and another deliverer took its message: recording this attempt finds it stale.
    sync_redis.hset(keys.webhook_message_key(claims[-1].message_id), "claim", "another-deliverer")
    deliverer = Deliverer(settings.with_(webhook_retry_schedule=(5.0,)),
                          fakeredis.FakeAsyncRedis(server=server, decode_responses=True),
                          _Answering(200, 500, 410, None, 200), rng=random.Random(1))  # type: ignore[arg-type]

    async def attempts() -> None:
        for c in claims:
            await deliverer.attempt(c)

    asyncio.run(attempts())
    found = samples(client)
    counts = {outcome: found.get(("callq_webhook_deliveries_total", (("outcome", outcome),)))
              for outcome in ("succeeded", "retry", "gone", "failed", "stale")}
    assert counts == {"succeeded": 1, "retry": 1, "gone": 1, "failed": 1, "stale": 1}


def test_webhook_endpoints_are_counted_by_state(client: TestClient, sync_redis: fakeredis.FakeRedis) -> None:
    for i, (client_, state) in enumerate([("alice", "healthy"), ("alice", "failing"), ("bob", "failing"),
                                          ("bob", "disabled"), ("carol", "failing")]):  # carol has no API key
        ep = f"we_{i}"
        sync_redis.hset(keys.webhook_key(ep), mapping={"id": ep, "client": client_, "state": state})
        sync_redis.zadd(keys.client_webhooks_all_key(client_), {ep: i})
    sync_redis.zadd(keys.client_webhooks_all_key("alice"), {"we_deleted": 9})  # its hash is gone
    found = samples(client)
    assert {s: found[("callq_webhook_endpoints", (("state", s),))] for s in ("healthy", "failing", "disabled")} == {
        "healthy": 1, "failing": 2, "disabled": 1}


def test_a_scrape_during_a_flush_in_flight_waits_for_it_and_counts_what_it_carries() -> None:
    """The CI flake: the periodic flush had drained the buffer and its write was on the wire when a scrape came; the
    scrape's own flush found nothing to write and read Redis before that write landed, missing the figures."""
    store = fakeredis.aioredis.FakeRedis(decode_responses=True)
    on_the_wire, land = asyncio.Event(), asyncio.Event()

    class _SlowPipeline:  # the periodic flush's write, held on the wire until the test lets it land
        def __init__(self) -> None:
            self._inner = store.pipeline(transaction=False)

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

        async def execute(self) -> Any:
            on_the_wire.set()
            await land.wait()
            return await self._inner.execute()

    class _Redis:
        def pipeline(self, transaction: bool = False) -> _SlowPipeline:
            return _SlowPipeline()

    recorder = metrics.Recorder()
    flusher = metrics_api.Flusher(_Redis(), recorder)  # type: ignore[arg-type]

    async def scrape() -> dict[str, str]:
        await flusher.flush()
        return dict(await store.hgetall(metrics.PREFIX + "callq_commands_accepted"))

    async def go() -> dict[str, str]:
        recorder.inc("callq_commands_accepted", "connect")
        periodic = asyncio.create_task(flusher.flush())
        await on_the_wire.wait()
        scraped = asyncio.create_task(scrape())
        done, _ = await asyncio.wait({scraped}, timeout=1.0)
        assert not done, "the scrape read Redis while the periodic flush's write was still on the wire"
        land.set()
        await periodic
        return await scraped

    assert asyncio.run(go()) == {'["connect"]': "1"}
