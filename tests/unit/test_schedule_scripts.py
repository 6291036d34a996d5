"""The schedules' scripts through their typed functions, each on fakeredis and on the suite's real redis-server."""

from __future__ import annotations

import asyncio
import json

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from workers import keys, scripts
from workers import schedules as s
from workers.occurrences import release_lock
from workers.recurrence import Plan
from workers.scripts import AutoPipeline

PLANNED = 1_800_000_000
QUEUE = "callq"


def record(sid: str = "rs_1") -> dict[str, str]:
    fields = s.new_schedule(schedule_id=sid, client="alice", room_id="room-1",
                            plan=Plan(kind="every", duration_s=60, start=PLANNED, every_s=300),
                            recording={"content": "audio", "channel": "mixed", "format": "wav"},
                            windows=[(10, 5)], first=PLANNED, idempotency_key="k1")
    return s.stored({**fields, "created_at": "2027-01-01T00:00:00.000Z", "updated_at": "2027-01-01T00:00:00.000Z"})


def create(sid: str = "rs_1", *, idem: str = "k1", fingerprint: str = "fp-create") -> scripts.ScriptCall[s.Recorded]:
    return s.create(client="alice", idempotency_key=idem, schedule_id=sid, record=record(sid), fingerprint=fingerprint,
                    idempotency_ttl_s=600, queue=QUEUE, book_message=f"book {sid}",
                    response_json=json.dumps({"id": sid}))


def cancel(sid: str = "rs_1", *, idem: str = "k2", fingerprint: str = "fp-cancel") -> scripts.ScriptCall[s.Recorded]:
    return s.cancel(client="alice", idempotency_key=idem, schedule_id=sid, fingerprint=fingerprint,
                    idempotency_ttl_s=600, queue=QUEUE, cancel_message=f"cancel {sid}", response_json='{"c": 1}',
                    now_iso="2027-01-15T08:00:00.000Z", retention_s=3600)


def test_create_stores_indexes_and_pushes_once_then_replays(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    first = scripts.run(r, create())
    assert first == s.Recorded(outcome="new", resource_id="rs_1", fingerprint="fp-create",
                               response_json='{"id": "rs_1"}')
    assert r.hgetall(s.schedule_key("rs_1")) == record()
    assert r.zrange(s.client_schedules_key("alice"), 0, -1) == ["rs_1"]
    assert r.sismember(s.ACTIVE_SCHEDULES, "rs_1")
    assert r.lrange(keys.queue_key(QUEUE), 0, -1) == ["book rs_1"]
    assert 0 < r.ttl(keys.idempotency_key("alice", "k1")) <= 600

    again = scripts.run(r, create("rs_2", fingerprint="fp-other"))  # same key, another request
    assert again.replayed and again.resource_id == "rs_1" and again.fingerprint == "fp-create"
    assert again.response_json == '{"id": "rs_1"}'
    assert not r.exists(s.schedule_key("rs_2")) and r.llen(keys.queue_key(QUEUE)) == 1


def test_a_key_of_the_wrong_type_fails_the_create_before_any_write(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    r.set(s.ACTIVE_SCHEDULES, "not a set")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE callq cannot use"):
        scripts.run(r, create())
    assert not r.exists(keys.idempotency_key("alice", "k1"), s.schedule_key("rs_1"), keys.queue_key(QUEUE))


def test_cancel_marks_the_schedule_once_and_a_missing_one_is_missing(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    assert scripts.run(r, cancel()).outcome == "missing"
    assert not r.exists(keys.idempotency_key("alice", "k2"))  # a 404 records nothing: the key stays usable
    scripts.run(r, create())
    done = scripts.run(r, cancel())
    assert done == s.Recorded(outcome="new", resource_id="rs_1", fingerprint="fp-cancel", response_json='{"c": 1}')
    stored = r.hgetall(s.schedule_key("rs_1"))
    assert stored["status"] == "cancelled" and stored["next_planned"] == "" and stored["cancelled_next"] == str(PLANNED)
    assert stored["cancelled_at"] == stored["updated_at"] == "2027-01-15T08:00:00.000Z"
    assert 0 < r.ttl(s.schedule_key("rs_1")) <= 3600
    assert not r.sismember(s.ACTIVE_SCHEDULES, "rs_1")
    assert r.lrange(keys.queue_key(QUEUE), 0, -1) == ["cancel rs_1", "book rs_1"]
    assert scripts.run(r, cancel()).replayed and r.llen(keys.queue_key(QUEUE)) == 2
    # A create's key reused for a cancel is a replay of the create (another fingerprint: the API's 422).
    reused = scripts.run(r, cancel(idem="k1"))
    assert reused.replayed and reused.fingerprint == "fp-create"


def test_move_on_moves_once_and_the_last_occurrence_finishes(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    scripts.run(r, create())
    later = PLANNED + 300

    def move(planned: int, to: int | None) -> bool:
        return scripts.run(r, s.move_on(schedule_id="rs_1", planned=planned, to=to, now_iso="now", retention_s=3600))

    assert move(PLANNED, later) is True
    assert move(PLANNED, later) is False  # a duplicated fire: already moved
    assert r.hget(s.schedule_key("rs_1"), "next_planned") == str(later) and r.ttl(s.schedule_key("rs_1")) == -1
    assert move(later, None) is True
    assert r.hmget(s.schedule_key("rs_1"), "status", "next_planned", "updated_at") == ["finished", "", "now"]
    assert not r.sismember(s.ACTIVE_SCHEDULES, "rs_1") and 0 < r.ttl(s.schedule_key("rs_1")) <= 3600
    assert move(later, None) is False  # finished: nothing moves any more


def test_the_run_lock_is_released_only_by_its_holder(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    lock = s.run_lock_key("rs_1", PLANNED)
    r.set(lock, "mine", px=30_000)
    assert scripts.run(r, release_lock(schedule_id="rs_1", planned=PLANNED, token="theirs")) is False
    assert r.get(lock) == "mine"
    assert scripts.run(r, release_lock(schedule_id="rs_1", planned=PLANNED, token="mine")) is True
    assert not r.exists(lock)
    assert scripts.run(r, release_lock(schedule_id="rs_1", planned=PLANNED, token="mine")) is False


@pytest.mark.parametrize("backend", ["fake", "real"])
def test_create_and_cancel_run_through_the_api_pipeline(backend: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("redis_url") if backend == "real" else ""

    async def go() -> tuple[s.Recorded, s.Recorded, s.Recorded]:
        r: aioredis.Redis = (aioredis.Redis.from_url(url, decode_responses=True) if url
                             else fakeredis.FakeAsyncRedis(decode_responses=True))
        try:
            pipe = AutoPipeline(r)
            created, replayed = await asyncio.gather(pipe.run(create()), pipe.run(create()))
            return created, replayed, await pipe.run(cancel())
        finally:
            await r.aclose()

    created, replayed, cancelled = asyncio.run(go())
    assert created.outcome == "new" and replayed.replayed  # one batch, run in order
    assert cancelled.outcome == "new" and json.loads(cancelled.response_json) == {"c": 1}
