"""Beat entries for occurrences (redbeat on fakeredis) and the beat settings derived from the lock timeout."""

from __future__ import annotations

import time

import fakeredis
import pytest
from redbeat.schedulers import REDBEAT_REDIS_KEY, RedBeatSchedulerEntry

from tasks.app import create_celery
from tasks.schedules import FIRE, RedBeatTimers
from workers.errors import ConfigError
from workers.settings import Settings

SCHEDULE = "callq:redbeat:schedule"


@pytest.fixture
def timers(settings: Settings, sync_redis: fakeredis.FakeRedis) -> RedBeatTimers:
    app = create_celery(settings)
    setattr(app, REDBEAT_REDIS_KEY, sync_redis)  # redbeat's own client, as get_redis() would cache it
    return RedBeatTimers(app)


def test_a_future_occurrence_is_scored_at_its_time_and_fires_once(timers: RedBeatTimers,
                                                                  sync_redis: fakeredis.FakeRedis) -> None:
    planned = int(time.time()) + 3600
    timers.book("rs_1", planned)
    timers.book("rs_1", planned)  # booking twice is one entry
    [(key, score)] = sync_redis.zrange(SCHEDULE, 0, -1, withscores=True)
    assert key == f"callq:redbeat:sched:rs_1:{planned}"
    assert planned - 1 <= score <= planned  # beat loads it only when it is about due, not on every tick
    entry = RedBeatSchedulerEntry.from_key(key, app=timers._app)
    assert entry.task == FIRE and entry.args == ["rs_1", planned]
    assert not entry.is_due().is_due
    assert timers.booked("rs_1", planned)
    timers.unbook("rs_1", planned)
    assert not timers.booked("rs_1", planned) and sync_redis.zcard(SCHEDULE) == 0


def test_an_occurrence_already_due_fires_at_once_and_then_never_again(timers: RedBeatTimers,
                                                                      sync_redis: fakeredis.FakeRedis) -> None:
    planned = int(time.time()) - 5  # a catch-up: beat or the workers were down at its time
    timers.book("rs_1", planned)
    key = f"callq:redbeat:sched:rs_1:{planned}"
    entry = RedBeatSchedulerEntry.from_key(key, app=timers._app)
    assert entry.is_due().is_due
    entry.next()  # what beat does as it sends the task
    assert sync_redis.zscore(SCHEDULE, key) == -1  # redbeat skips negative scores: a one-shot


def test_the_beat_tick_is_a_fifth_of_the_lock_timeout(settings: Settings) -> None:
    assert create_celery(settings).conf.beat_max_loop_interval == 5.0
    short = create_celery(settings.with_(beat_lock_timeout_s=3)).conf
    assert short.redbeat_lock_timeout == 3 and short.beat_max_loop_interval == pytest.approx(0.6)


@pytest.mark.parametrize(("env", "message"), [
    ({"CALLQ_BEAT_LOCK_TIMEOUT_SECONDS": "1"}, "CALLQ_BEAT_LOCK_TIMEOUT_SECONDS must be between 2 and 3600"),
    ({"CALLQ_SCHEDULE_GRACE_SECONDS": "soon"}, "CALLQ_SCHEDULE_GRACE_SECONDS must be a whole number"),
])
def test_bad_schedule_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)
