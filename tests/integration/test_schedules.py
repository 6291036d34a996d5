"""Scheduled recordings on the real stack: API → redbeat beat processes → worker → simulator.

Schedules start a couple of seconds ahead and last seconds (``every`` instead of minute-resolution cron),
so each test runs in seconds. What ACS executed is read from the simulator's execution log; waits poll
conditions with deadlines, and the assertions are "happened, in order, once".
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from callq import demo
from tasks.app import create_celery
from tasks.schedules import RedBeatTimers
from tests.conftest import TEST_API_KEY, wait_until
from tests.integration.conftest import ROOT, ThreadServer
from tests.integration.test_end_to_end import SEED_SCENARIO, sim_log, sim_room_call
from workers.occurrences import Occurrences
from workers.recurrence import iso, parse_instant
from workers.settings import Settings

# Short grace and a short beat lock so the missed and fail-over paths take seconds, not minutes. A short
# outcome deadline bounds the rare start whose RecordingStateChanged is not matched (a correlation race
# reported separately): it is then resolved by reading ACS after 2 s instead of 60 s.
SCHED_ENV = {"CALLQ_SCHEDULE_GRACE_SECONDS": "2", "CALLQ_BEAT_LOCK_TIMEOUT_SECONDS": "3",
             "CALLQ_OUTCOME_TIMEOUT_SECONDS": "2"}
RECORDING_OPS = ("connect", "startRecording", "pauseRecording", "resumeRecording", "stopRecording")
TERMINAL = ("completed", "completed_early", "missed", "failed", "cancelled")


@pytest.fixture
def start_beat(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], subprocess.Popen[bytes]]]:
    """Start real ``celery beat`` processes with redbeat (no schedule file needed); all killed at teardown."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"beat-{name}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks.app", "beat", "-S", "redbeat.RedBeatScheduler",
                 "--loglevel", "INFO"],
                cwd=ROOT, env={**os.environ, **stack_env, **SCHED_ENV}, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        procs.append(proc)
        wait_until(lambda: "beat: Starting" in log_path.read_text() or proc.poll() is not None, timeout_s=20,
                   what=f"beat {name} to start")
        assert proc.poll() is None, log_path.read_text()
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # beat holds nothing that needs a clean stop
        proc.wait(timeout=10)


def beat_log(tmp_path: Path, name: str) -> str:
    return (tmp_path / f"beat-{name}.log").read_text()


def create(api: httpx.Client, body: dict[str, Any]) -> str:
    resp = api.post("/v1/recording-schedules", json=body, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


def runs(api: httpx.Client, sid: str) -> list[dict[str, Any]]:
    resp = api.get(f"/v1/recording-schedules/{sid}/runs")
    assert resp.status_code == 200, resp.text
    items: list[dict[str, Any]] = resp.json()["items"]
    return items


def runs_in(api: httpx.Client, sid: str, states: tuple[str, ...], count: int) -> list[dict[str, Any]] | None:
    done = [r for r in runs(api, sid) if r["state"] in states]
    return done if len(done) >= count else None


def soon(seconds: float) -> str:
    return iso(int(time.time()) + seconds)


def ops(sim: ThreadServer) -> list[str]:
    return [e["operation"] for e in sim_log(sim) if e["operation"] in RECORDING_OPS]


def steps(run: dict[str, Any]) -> list[str]:
    return [c["step"] for c in run["commands"]]


def test_a_one_off_with_two_beats_records_pauses_and_stops_once(
        simulator: ThreadServer, api: httpx.Client, start_worker: Callable, start_beat: Callable,  # type: ignore[type-arg]
        stack_settings: Settings, redis_url: str) -> None:
    start_worker(extra_env=SCHED_ENV)
    start_beat("b1")
    start_beat("b2")  # a second beat at once: it waits on redbeat's lock; the claim would stop it anyway
    room = sim_room_call(simulator)
    sid = create(api, {"room_id": room, "start_at": soon(2), "duration": "PT4S",
                       "pause_windows": [{"offset": "PT1S", "duration": "PT2S"}]})

    [run] = wait_until(lambda: runs_in(api, sid, TERMINAL, 1), timeout_s=20, what="the occurrence to end")
    assert run["state"] == "completed", run
    assert steps(run) == ["connect:1", "start", "pause:0", "resume:0", "stop"]
    assert all(c["status"] == "succeeded" for c in run["commands"]), run
    assert ops(simulator) == list(RECORDING_OPS)
    schedule = api.get(f"/v1/recording-schedules/{sid}").json()
    assert schedule["status"] == "finished" and schedule["next_run_at"] is None

    # A second fire of the same occurrence (a beat without the lock, a catch-up after a restart) is dropped.
    occurrences = Occurrences(stack_settings, redis.Redis.from_url(redis_url, decode_responses=True),
                              RedBeatTimers(create_celery(stack_settings)), lambda t, c: "")
    assert occurrences.fire(sid, parse_instant(run["planned_at"]), claim="another-beat") == "duplicate"
    assert len(runs(api, sid)) == 1 and ops(simulator) == list(RECORDING_OPS)


def test_an_every_schedule_runs_each_occurrence_once_and_delete_stops_the_running_one(
        simulator: ThreadServer, api: httpx.Client, start_worker: Callable, start_beat: Callable,  # type: ignore[type-arg]
        redis_url: str) -> None:
    start_worker(extra_env=SCHED_ENV)
    start_beat("b1")
    room = sim_room_call(simulator)
    sid = create(api, {"room_id": room, "every": "PT2S", "start_at": soon(2), "duration": "PT1S"})

    wait_until(lambda: runs_in(api, sid, ("completed",), 2), timeout_s=20, what="two completed occurrences")
    recording = wait_until(lambda: runs_in(api, sid, ("recording",), 1), timeout_s=10, what="a third one recording")
    deleted = api.delete(f"/v1/recording-schedules/{sid}", headers={"Idempotency-Key": str(uuid.uuid4())})
    assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled", deleted.text
    [cancelled] = wait_until(lambda: runs_in(api, sid, ("cancelled",), 1), timeout_s=10, what="the run to stop")
    assert cancelled["planned_at"] == recording[0]["planned_at"]
    assert steps(cancelled) == ["start", "stop"]  # the call was already connected: no second connect

    history = runs(api, sid)
    assert [r["state"] for r in history] == ["completed", "completed", "cancelled"]
    assert steps(history[0]) == ["connect:1", "start", "stop"]
    assert ops(simulator) == ["connect"] + ["startRecording", "stopRecording"] * 3
    # Nothing is booked any more, and the next occurrence's time passes without a run.
    beat_keys = redis.Redis.from_url(redis_url, decode_responses=True).zrange("callq:redbeat:schedule", 0, -1)
    assert not [k for k in beat_keys if sid in k]
    last = parse_instant(cancelled["planned_at"])
    wait_until(lambda: time.time() > last + 2 + 1.5, timeout_s=10, what="the next occurrence's time to pass")
    assert len(runs(api, sid)) == 3


def test_when_the_beat_holding_the_lock_dies_the_other_takes_over(
        simulator: ThreadServer, api: httpx.Client, start_worker: Callable, start_beat: Callable,  # type: ignore[type-arg]
        tmp_path: Path) -> None:
    start_worker(extra_env=SCHED_ENV)
    first = start_beat("b1")
    wait_until(lambda: "Acquired lock" in beat_log(tmp_path, "b1"), timeout_s=10, what="b1 to hold the lock")
    start_beat("b2")
    room = sim_room_call(simulator)
    sid = create(api, {"room_id": room, "every": "PT2S", "start_at": soon(2), "duration": "PT1S"})

    wait_until(lambda: runs_in(api, sid, ("completed",), 1), timeout_s=15, what="a first completed occurrence")
    os.killpg(first.pid, signal.SIGKILL)  # no clean release: b2 must wait for the lock to expire (3 s)
    killed_at = len(runs(api, sid))
    wait_until(lambda: "Acquired lock" in beat_log(tmp_path, "b2"), timeout_s=15, what="b2 to take the lock")
    wait_until(lambda: runs_in(api, sid, ("completed",), killed_at + 2), timeout_s=20,
               what="occurrences completed after the take-over")

    history = runs(api, sid)
    # Occurrences due while no beat held the lock fire late: recorded if their session is still on, else
    # missed; never twice.
    assert all(r["state"] in ("completed", "missed", "recording", "starting", "stopping") for r in history), history
    assert len({r["planned_at"] for r in history}) == len(history)
    assert all(steps(r).count("start") <= 1 and steps(r).count("stop") <= 1 for r in history)
    started = sum(1 for r in history if "start" in steps(r))
    assert ops(simulator).count("startRecording") == started


def test_no_call_is_missed_and_a_call_ending_early_completes_early(
        simulator: ThreadServer, api: httpx.Client, start_worker: Callable, start_beat: Callable) -> None:  # type: ignore[type-arg]
    start_worker(extra_env=SCHED_ENV)
    start_beat("b1")
    empty_room = sim_room_call(simulator, started=False)
    live_room = sim_room_call(simulator)
    missed = create(api, {"room_id": empty_room, "start_at": soon(2), "duration": "PT5S"})
    early = create(api, {"room_id": live_room, "start_at": soon(2), "duration": "PT5S"})

    wait_until(lambda: runs_in(api, early, ("recording",), 1), timeout_s=15, what="the recording to start")
    assert simulator.http.delete(f"/_sim/rooms/{live_room}/call").status_code == 204  # everyone leaves

    [gone] = wait_until(lambda: runs_in(api, missed, TERMINAL, 1), timeout_s=15, what="the missed occurrence")
    assert gone["state"] == "missed", gone
    assert gone["error"]["code"] == "room_call_not_started"
    assert steps(gone)[:2] == ["connect:1", "connect:2"]  # retried within the grace window, then gave up
    assert all(c["type"] == "connect" and c["status"] == "failed" for c in gone["commands"])

    [cut] = wait_until(lambda: runs_in(api, early, TERMINAL, 1), timeout_s=15, what="the cut-short occurrence")
    assert cut["state"] == "completed_early", cut
    assert cut["error"]["code"] == "call_ended"
    assert steps(cut) == ["connect:1", "start"]  # no stop: the recording ended with the call
    executed = ops(simulator)
    assert executed.count("startRecording") == 1 and "stopRecording" not in executed


def test_the_demo_ends_with_a_scheduled_recording_after_the_seed_scenario(
        simulator: ThreadServer, api_server: ThreadServer, stack_settings: Settings, start_worker: Callable,  # type: ignore[type-arg]
        start_beat: Callable) -> None:  # type: ignore[type-arg]
    start_worker(extra_env=SCHED_ENV)
    start_beat("b1")
    out = io.StringIO()
    code = demo.run(stack_settings, api_key=TEST_API_KEY, out=out)
    text = out.getvalue()
    assert code == 0, text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [(c[1], c[2], c[3]) for c in rows] == SEED_SCENARIO, text  # the seed scenario, unchanged
    assert "demo: 10 of 10 commands succeeded" in text
    scheduled = [line.split() for line in text.splitlines() if line.strip()[:1] == "s" and line.strip()[1:2].isdigit()]
    assert [(c[0], c[1], c[2]) for c in scheduled] == [
        ("s1", "connect", "succeeded"), ("s2", "start_recording", "succeeded"), ("s3", "pause_recording", "succeeded"),
        ("s4", "resume_recording", "succeeded"), ("s5", "stop_recording", "succeeded")], text
    assert re.search(r"^scheduled: .*; run at \S+: completed$", text, re.MULTILINE), text
    assert "scheduled: 5 of 5 commands succeeded" in text
