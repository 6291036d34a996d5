"""The webhook scripts on fakeredis and on a real Redis: fan-out with what it tells of, per-lane order and seq, claims
and leases, the outcomes of an attempt, re-enabling and requeueing."""

from __future__ import annotations

import json
import random
import time

import pytest
import redis

from workers import keys, ledger, scripts, webhooks
from workers.command import Status

CLIENT = "alice"


def endpoint(r: redis.Redis, *, events: str = "*", enabled: bool = True, client: str = CLIENT) -> str:
    ep = webhooks.new_endpoint_id()
    fields = {"url": "http://example.test/hook", "events": events, "enabled": "1" if enabled else "0",
              "secret": webhooks.new_secret(), "created_ms": "1", "retention": "3600"}
    saved = scripts.run(r, webhooks.save(client=client, endpoint_id=ep, fields=fields, mode="create",
                                         max_endpoints=20))
    assert saved.outcome == "new"
    return ep


def command(r: redis.Redis, cid: str, *, call: str = "call-1", client: str = CLIENT) -> str:
    r.hset(keys.command_key(cid), mapping={"id": cid, "type": "play", "status": "waiting", "client": client,
                                          "call_connection_id": call, "room_id": "room-1",
                                          "created_at": "2026-12-03T10:00:00Z"})
    return cid


def finish(r: redis.Redis, cid: str, to: Status = Status.SUCCEEDED) -> None:
    assert scripts.run(r, ledger.transition(cid, to, {"result": {"ok": True}})).outcome == "applied"


def lane(r: redis.Redis, ep: str, name: str) -> list[str]:
    return list(r.lrange(keys.webhook_lane_key(ep, name), 0, -1))


def message(r: redis.Redis, mid: str) -> dict[str, str]:
    return dict(r.hgetall(keys.webhook_message_key(mid)))


def claim(r: redis.Redis, now_ms: int | None = None) -> list[webhooks.Claim]:
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    return scripts.run(r, webhooks.claim(now_ms=now, lease_ms=60_000, most=10, token=f"t{random.random()}"))


def result(r: redis.Redis, c: webhooks.Claim, outcome: webhooks.Outcome, *, next_ms: int = 0,
           status: int | None = 200, body: bytes = b"") -> webhooks.Moved:
    return scripts.run(r, webhooks.record_result(c, outcome=outcome, now_ms=int(time.time() * 1000), next_ms=next_ms,
                                                 status=status, error="", lease_ms=60_000, next_token="next-token",
                                                 body=body))


def test_a_terminal_command_makes_one_message_per_subscribed_endpoint_in_its_calls_lane(
        fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    every, failures_only = endpoint(r), endpoint(r, events="command.failed")
    finish(r, command(r, "cmd_1"))
    finish(r, command(r, "cmd_2"), Status.FAILED)
    [first, second] = lane(r, every, "call-1")
    assert [message(r, first)["type"], message(r, second)["type"]] == ["command.succeeded", "command.failed"]
    assert [message(r, first)["seq"], message(r, second)["seq"]] == ["1", "2"]
    assert message(r, first)["command"] == "cmd_1"
    [only] = lane(r, failures_only, "call-1")
    assert message(r, only)["command"] == "cmd_2" and message(r, only)["seq"] == "1"
    assert r.zscore(keys.WEBHOOKS_DUE, f"{every} call-1") is not None


def test_no_endpoint_no_message_and_a_disabled_endpoint_gets_nothing(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    off = endpoint(r, enabled=False)
    finish(r, command(r, "cmd_1"))
    finish(r, command(r, "cmd_other", client="bob"))
    assert lane(r, off, "call-1") == []
    assert r.zcard(keys.WEBHOOKS_DUE) == 0


def test_a_claimed_lane_is_not_claimed_again_until_its_lease_lapses(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    finish(r, command(r, "cmd_1"))
    [c] = claim(r)
    assert (c.endpoint_id, c.lane) == (ep, "call-1")
    assert claim(r) == []
    [again] = claim(r, int(time.time() * 1000) + 61_000)  # the deliverer died: its lease lapsed
    assert again.message_id == c.message_id and again.token != c.token
    assert result(r, c, "succeeded").state == "stale"  # the first holder may no longer record anything
    assert message(r, c.message_id)["status"] == "pending"


def test_success_moves_to_the_next_message_of_the_lane_under_a_new_claim(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    finish(r, command(r, "cmd_1"))
    finish(r, command(r, "cmd_2"))
    [c] = claim(r)
    moved = result(r, c, "succeeded")
    assert moved.state == "next" and moved.token == "next-token"
    assert message(r, c.message_id)["status"] == "succeeded"
    assert lane(r, ep, "call-1") == [moved.message_id]
    nxt = webhooks.Claim(ep, "call-1", moved.message_id, moved.token)
    assert result(r, nxt, "succeeded").state == "idle"
    assert lane(r, ep, "call-1") == [] and r.zcard(keys.WEBHOOKS_DUE) == 0


def test_a_retry_keeps_the_head_and_holds_back_only_its_own_lane(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    finish(r, command(r, "cmd_1", call="call-A"))
    finish(r, command(r, "cmd_2", call="call-A"))
    finish(r, command(r, "cmd_3", call="call-B"))
    claims = {c.lane: c for c in claim(r)}
    later = int(time.time() * 1000) + 5_000
    assert result(r, claims["call-A"], "retry", next_ms=later, status=500).state == "later"
    assert message(r, claims["call-A"].message_id)["round"] == "1"
    assert result(r, claims["call-B"], "succeeded").state == "idle"  # another call goes on meanwhile
    assert claim(r) == []  # call-A's second message waits behind its first
    [again] = claim(r, later)
    assert again.message_id == claims["call-A"].message_id
    assert r.hget(keys.webhook_key(ep), "consecutive_failures") == "0"  # call-B's success came after the 500


def test_a_spent_schedule_fails_the_message_marks_the_endpoint_failing_and_moves_the_lane_on(
        fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    finish(r, command(r, "cmd_1"))
    finish(r, command(r, "cmd_2"))
    [c] = claim(r)
    moved = result(r, c, "failed", status=500)
    assert moved.state == "next"
    assert message(r, c.message_id)["status"] == "failed"
    assert r.hget(keys.webhook_key(ep), "state") == "failing"
    result(r, webhooks.Claim(ep, "call-1", moved.message_id, moved.token), "succeeded")
    assert r.hget(keys.webhook_key(ep), "state") == "healthy"


def test_410_disables_the_endpoint_and_enabling_it_again_sends_what_waited(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    finish(r, command(r, "cmd_1"))
    [c] = claim(r)
    assert result(r, c, "gone", status=410).state == "disabled"
    assert r.hget(keys.webhook_key(ep), "enabled") == "0"
    finish(r, command(r, "cmd_2"))  # made while disabled: not for this endpoint
    assert lane(r, ep, "call-1") == [c.message_id]
    assert claim(r) == []
    scripts.run(r, webhooks.save(client=CLIENT, endpoint_id=ep, fields={"enabled": "1"}, mode="update",
                                 max_endpoints=20))
    [again] = claim(r)
    assert again.message_id == c.message_id


def test_requeue_sends_a_delivered_message_again_with_its_id_after_what_waits(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    finish(r, command(r, "cmd_1"))
    [c] = claim(r)
    result(r, c, "succeeded")
    finish(r, command(r, "cmd_2"))
    waiting = lane(r, ep, "call-1")
    queued = scripts.run(r, webhooks.requeue(client=CLIENT, endpoint_id=ep, message_ids=[c.message_id, *waiting],
                                             now_ms=int(time.time() * 1000), ttl_s=3600))
    assert queued == (1, 1)
    assert lane(r, ep, "call-1") == [*waiting, c.message_id]
    assert message(r, c.message_id)["status"] == "pending"
    assert scripts.run(r, webhooks.requeue(client="bob", endpoint_id=ep, message_ids=[c.message_id], now_ms=1,
                                           ttl_s=3600)) is None


def test_rotation_keeps_the_old_secret_signing(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    old = r.hget(keys.webhook_key(ep), "secret")
    scripts.run(r, webhooks.save(client=CLIENT, endpoint_id=ep, mode="rotate", max_endpoints=20,
                                 fields={"secret": "whsec_new", "old_secret_until_ms": str(10**13)}))
    record = r.hgetall(keys.webhook_key(ep))
    assert webhooks.signing_secrets(record, now_ms=10**12) == ["whsec_new", old]
    assert webhooks.signing_secrets(record, now_ms=10**13 + 1) == ["whsec_new"]


def test_the_body_carries_the_command_resource_and_the_lanes_seq(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    ep = endpoint(r)
    finish(r, command(r, "cmd_1"))
    [mid] = lane(r, ep, "call-1")
    body = json.loads(webhooks.body(message(r, mid), r.hgetall(keys.command_key("cmd_1"))))
    assert body["type"] == "command.succeeded"
    assert body["data"]["seq"] == 1 and body["data"]["call_connection_id"] == "call-1"
    assert body["data"]["command"]["id"] == "cmd_1" and body["data"]["command"]["status"] == "succeeded"
    assert body["data"]["command"]["result"] == {"ok": True}


def test_a_commands_message_snapshots_it_at_the_first_claim_and_keeps_that_until_its_body_is_stored(
        fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    endpoint(r)
    finish(r, command(r, "cmd_1"))
    r.hset(keys.command_key("cmd_1"), "sent_at", "2026-12-05T05:00:00Z")  # before the first claim: it is told
    [c] = claim(r)
    assert c.command["sent_at"] == "2026-12-05T05:00:00Z" and c.command["status"] == "succeeded"
    assert "snapshot" not in c.message  # the claim hands it over as the command
    r.hset(keys.command_key("cmd_1"), "sent_at", "2026-12-05T05:00:09Z")  # after it: not told
    [again] = claim(r, now_ms=int(time.time() * 1000) + 60_001)  # the first claim lapsed, unrecorded
    assert again.message_id == c.message_id and again.command == c.command
    result(r, again, "retry", body=webhooks.body(again.message, again.command), next_ms=0)
    stored = message(r, c.message_id)
    assert "snapshot" not in stored
    assert json.loads(stored["body"])["data"]["command"]["sent_at"] == "2026-12-05T05:00:00Z"
    [third] = claim(r, now_ms=int(time.time() * 1000) + 60_002)
    assert third.command == {} and third.message["body"] == stored["body"]


def test_the_verdict_follows_the_standard_webhooks_rules() -> None:
    rng = random.Random(1)
    schedule = (5.0, 60.0)
    assert webhooks.verdict(204, None, round_=0, schedule=schedule, rng=rng) == ("succeeded", 0.0)
    assert webhooks.verdict(410, None, round_=0, schedule=schedule, rng=rng) == ("gone", 0.0)
    outcome, wait = webhooks.verdict(301, None, round_=1, schedule=schedule, rng=rng)
    assert outcome == "retry" and 48 <= wait <= 72  # 3xx is a failure (never followed); ±20 % jitter
    assert webhooks.verdict(429, 7.0, round_=0, schedule=schedule, rng=rng) == ("retry", 7.0)
    assert webhooks.verdict(None, None, round_=2, schedule=schedule, rng=rng) == ("failed", 0.0)


def test_what_the_sender_signs_verifies_with_callqs_and_the_specs_verifiers() -> None:
    from datetime import UTC, datetime

    from standardwebhooks import Webhook

    from callq.webhooks import WebhookVerificationError, verify_webhook

    old, new = webhooks.new_secret(), webhooks.new_secret()
    at = datetime.now(UTC)
    payload = b'{"type":"webhook.test","timestamp":"2026-12-03T10:00:00Z","data":{"seq":1}}'
    sent = webhooks.headers("msg_x_0000000001", at, payload, [new, old])
    assert len(sent["webhook-signature"].split(" ")) == 2 and sent["webhook-timestamp"] == str(int(at.timestamp()))
    for secret in (new, old):  # a receiver still holding the rotated-out secret verifies during the grace period
        verify_webhook(sent, payload, secret)
        assert Webhook(secret).verify(payload, sent) == json.loads(payload)
    with pytest.raises(WebhookVerificationError):  # a changed body must not verify
        verify_webhook(sent, payload + b" ", new)
