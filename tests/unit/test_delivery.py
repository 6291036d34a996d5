"""The deliverer: how long a claim on a lane lasts; what one attempt sends and records."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import redis
import redis.asyncio as aioredis

from workers import keys, ledger, scripts, webhooks
from workers.command import Command, Status
from workers.delivery import LEASE_MARGIN_S, Deliverer, lease_s
from workers.sender import Answer
from workers.settings import Settings


def test_a_claim_outlives_the_attempt_by_the_timeout_again_up_to_the_margin() -> None:
    assert lease_s(2.0) == 4.0  # a test's short timeout: a killed deliverer's lanes go out again after 4 s
    assert lease_s(15.0) == 30.0  # the default
    assert lease_s(60.0) == 60.0 + LEASE_MARGIN_S
    assert all(lease_s(t) > t for t in (0.1, 1.0, 8.0, 300.0))  # always longer than an attempt can take


class _Recording:
    """A Sender stand-in: answers the given statuses in turn and keeps every body and header it was handed."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.sent: list[tuple[bytes, dict[str, str]]] = []

    async def post(self, target: object, body: bytes, headers: dict[str, str]) -> Answer:
        self.sent.append((body, dict(headers)))
        return Answer(self.statuses.pop(0), None, "", 0.0)


def test_a_retry_sends_the_first_attempts_bytes_with_the_same_id_and_the_lane_goes_on_in_order(
        redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ep = webhooks.new_endpoint_id()
    scripts.run(r, webhooks.save(client="alice", endpoint_id=ep, mode="create", max_endpoints=20, fields={
        "url": "https://hooks.example.com/", "events": "*", "enabled": "1", "secret": webhooks.new_secret(),
        "created_ms": "1", "retention": "3600"}))
    for cid in ("cmd_1", "cmd_2"):
        r.hset(keys.command_key(cid), mapping={"id": cid, "type": "play", "status": "waiting", "client": "alice",
                                              "call_connection_id": "cc-1"})
        scripts.run(r, ledger.transition(cid, Status.SUCCEEDED, {}))
    sender = _Recording(500, 200, 200)

    async def go() -> None:
        async_redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            await deliver(Deliverer(Settings(webhook_retry_schedule=(0.0,)), async_redis, sender))  # type: ignore[arg-type]
        finally:
            await async_redis.aclose()

    async def deliver(deliverer: Deliverer) -> None:
        [first] = await deliverer._scripts.run(webhooks.claim(now_ms=int(time.time() * 1000), lease_ms=60_000,
                                                                most=5, token="t1"))
        assert first.command["id"] == "cmd_1"  # the claim brings the command's snapshot: no round trip of its own
        assert await deliverer.attempt(first) is None  # a 500: retried later, the lane waits
        [again] = await deliverer._scripts.run(webhooks.claim(now_ms=int(time.time() * 1000) + 1, lease_ms=60_000,
                                                                most=5, token="t2"))
        assert again.message_id == first.message_id and "body" in again.message and again.command == {}
        nxt = await deliverer.attempt(again)  # a 200: the lane's next message comes with it, claimed
        assert nxt is not None and nxt.command["id"] == "cmd_2"
        assert await deliverer.attempt(nxt) is None

    asyncio.run(go())
    (body1, h1), (body2, h2), (body3, h3) = sender.sent
    assert body1 == body2 and h1["webhook-id"] == h2["webhook-id"] != h3["webhook-id"]
    assert [json.loads(b)["data"]["seq"] for b in (body1, body3)] == [1, 2]
    assert json.loads(body3)["data"]["command"]["id"] == "cmd_2"


class _KilledMidPost(_Recording):
    """A deliverer killed while its POST is on the wire: the endpoint got the body, nothing was recorded."""

    async def post(self, target: object, body: bytes, headers: dict[str, str]) -> Answer:
        self.sent.append((body, dict(headers)))
        raise asyncio.CancelledError


def test_an_attempt_lost_mid_post_is_sent_again_with_the_same_bytes_though_the_command_gained_fields_since(
        redis_url: str) -> None:
    """The CI failure of session 14's submission: a command's event beat ACS's answer to its request, so the
    command gained ``sent_at`` and a merged result after it ended; the first attempt's deliverer died mid-POST; the
    next attempt made the body again from the command as it was then, and the endpoint got two bodies under one
    ``webhook-id``."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    ep = webhooks.new_endpoint_id()
    scripts.run(r, webhooks.save(client="alice", endpoint_id=ep, mode="create", max_endpoints=20, fields={
        "url": "https://hooks.example.com/", "events": "*", "enabled": "1", "secret": webhooks.new_secret(),
        "created_ms": "1", "retention": "3600"}))
    r.hset(keys.command_key("cmd_1"), mapping={"id": "cmd_1", "type": "add_participant", "status": "running",
                                               "client": "alice", "call_connection_id": "cc-1"})
    scripts.run(r, ledger.transition("cmd_1", Status.SUCCEEDED, {"result": {"participant": "8:acs:bob"}}))
    killed, answered = _KilledMidPost(), _Recording(200)

    async def go() -> None:
        async_redis = aioredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            now = int(time.time() * 1000)
            [first] = await Deliverer(Settings(), async_redis, killed)._scripts.run(  # type: ignore[arg-type]
                webhooks.claim(now_ms=now, lease_ms=1_000, most=5, token="t1"))
            with pytest.raises(asyncio.CancelledError):
                await Deliverer(Settings(), async_redis, killed).attempt(first)  # type: ignore[arg-type]
            # ACS's answer to the request lands now: the ended command gains its fields (sent.lua merges them).
            cmd = Command.from_hash(r.hgetall(keys.command_key("cmd_1")))
            scripts.run(r, ledger.sent(cmd, Status.WAITING, {"sent_at": "2026-12-05T05:00:00Z",
                                                             "result": {"invitation_id": "inv-1"}},
                                       made=ledger.SentTo(), ttl_s=60, wait_deadline_ms=10**13))
            assert r.hget(keys.command_key("cmd_1"), "sent_at") == "2026-12-05T05:00:00Z"
            deliverer = Deliverer(Settings(), async_redis, answered)  # type: ignore[arg-type]
            [again] = await deliverer._scripts.run(webhooks.claim(now_ms=now + 1_001, lease_ms=60_000, most=5,
                                                                  token="t2"))  # the first claim lapsed
            assert again.message_id == first.message_id
            assert await deliverer.attempt(again) is None
        finally:
            await async_redis.aclose()

    asyncio.run(go())
    [(lost, h1)], [(resent, h2)] = killed.sent, answered.sent
    assert h1["webhook-id"] == h2["webhook-id"]
    assert resent == lost, "one webhook-id, two bodies"
    told = json.loads(resent)["data"]["command"]
    assert told["status"] == "succeeded" and told["result"] == {"participant": "8:acs:bob"} and told["sent_at"] is None
    # Once sent and recorded, the body is what the message keeps: the snapshot is no longer needed.
    stored = r.hgetall(keys.webhook_message_key(h2["webhook-id"]))
    assert stored["body"].encode() == resent and "snapshot" not in stored
