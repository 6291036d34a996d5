"""Workers SIGKILLed again and again while one client floods plays and another goes about its calls (issue #18).

Client A (alice) floods plays onto its calls as fast as callq takes them. ACS runs one media operation at a time
per call, so the plays queue inside callq, up to the door: past ``CALLQ_MAX_PENDING_PER_CALL`` commands not yet
ended a call refuses 429 ``too_many_pending`` and records nothing; A counts that as not accepted and, after
Retry-After, sends a new request with a new Idempotency-Key, until each of its calls has its plays accepted.
Meanwhile client B (bob) connects to calls of its own and sends them ordinary commands (add a participant, DTMF,
remove, hang up), and a worker process is SIGKILLed and replaced again and again. Then:

* nothing lost: every command callq answered 202 ends;
* nothing duplicated: ACS (the simulator's execution log) executed each command at most once, and every command
  that succeeded exactly once;
* a refusal records nothing: each call lists exactly the commands its client was answered 202 for, in that order
  (but for a runtime bug this scenario found, counted in the report rather than failed: a connect whose worker was
  killed after ACS made the call is missing from its call's list);
* per-call order: for each call, ACS executed its commands in callq's acceptance order (``GET
  /v1/calls/{cc}/commands``);
* every failure is honest: a play whose worker was killed mid-send may end ``outcome_unknown`` (a play cannot be
  resent safely, nor can ACS be asked about it); anything else only as :func:`~tests.chaos.harness.honest` allows;
* B is served through the flood: every one of B's commands succeeds.

Both forms: 2 worker processes, 250 ms of ACS latency, plays of 50 ms, a worker killed (each time while some command
is being sent) and replaced. Bounded form (``make test``): A floods 10 calls × 20 plays through a door of 8 per call,
B runs 4 calls × 6 commands, 5 kills a second apart. Long form (``callq chaos``): A floods 12 calls × 150 plays
through the default door of 100, B runs 16 calls, a kill every 3 s until every command has ended.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.chaos.harness import (
    Killer,
    call_ends,
    delivery_order,
    executions,
    honest,
    outcomes,
    record,
    settle,
    statuses,
    unfinished,
)
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.conftest import OTHER_API_KEY, TEST_API_KEY, wait_until
from tests.integration.conftest import ProcessServer, ThreadServer
from tests.integration.test_end_to_end import post, sim_log, sim_room_call, wait
from tests.integration.test_runtime import CALLER, PHONE, faults
from workers.acs import repeatability_id
from workers.command import Status, parse_time


@dataclass(frozen=True)
class Plan:
    flood_calls: int  # client A's calls
    plays_per_call: int  # plays A gets accepted onto each of them
    max_pending: int  # CALLQ_MAX_PENDING_PER_CALL: the door
    b_calls: int  # client B's calls, each connected during the flood and sent B_STEPS
    b_threads: int
    kill_every_s: float
    kills: int | None  # None: keep killing until every command has ended
    timeout_s: int


PLAN = pick(bounded=Plan(flood_calls=8, plays_per_call=16, max_pending=8, b_calls=4, b_threads=2,
                         kill_every_s=1.0, kills=4, timeout_s=240),
            long=Plan(flood_calls=12, plays_per_call=150, max_pending=100, b_calls=16, b_threads=4,
                      kill_every_s=3.0, kills=None, timeout_s=1500))
PLAY_S = 0.05  # how long the simulator's plays last (a module constant of the simulator, 20 ms by default)
LATENCY_MS = 250  # ACS's latency on every request: sends stay in flight long enough for kills to land mid-send
ENV = {"CALLQ_VISIBILITY_TIMEOUT_SECONDS": "4", "CALLQ_ACS_RATE_PER_SECOND": "500", "CALLQ_ACS_RATE_BURST": "50",
       "CALLQ_OUTCOME_TIMEOUT_SECONDS": "10", "CALLQ_MAX_PENDING_PER_CALL": str(PLAN.max_pending),
       "CALLQ_API_KEYS": f"alice:{TEST_API_KEY},bob:{OTHER_API_KEY}"}
# B's ordinary commands after its connect: all of them operations ACS deduplicates, so each must succeed.
B_STEPS: list[tuple[str, dict[str, Any]]] = [
    ("participants", {"phone_number": PHONE, "source_caller_id": CALLER, "invitation_timeout": 5}),
    ("dtmf", {"phone_number": PHONE, "tones": "1"}),
    ("dtmf", {"phone_number": PHONE, "tones": "2#"}),
    ("participants/remove", {"phone_number": PHONE}),
    ("hang-up", {"for_everyone": True}),
]


class Load:
    """What both clients were answered: 202s per call in the order they came, refusals, 5xx."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.a: dict[str, list[str]] = defaultdict(list)  # A's call -> its plays, in the order 202s came
        self.b_connects: list[str] = []  # B's connects, as accepted
        self.b: dict[str, list[str]] = {}  # B's call -> its connect and commands, in order
        self.b_connects_failed: list[dict[str, Any]] = []
        self.refused: Counter[str] = Counter()  # A's call -> 429 too_many_pending answers
        self.http_5xx = 0

    @contextmanager
    def client(self, api_key: str) -> Iterator[httpx.Client]:
        with httpx.Client(base_url=self.base_url, timeout=30, headers={"Authorization": f"Bearer {api_key}"}) as c:
            yield c

    def ids(self) -> list[str]:
        """Every command accepted so far under the chaos: A's plays, B's connects, B's other commands."""
        return [*(i for group in list(self.a.values()) for i in list(group)), *list(self.b_connects),
                *(i for group in list(self.b.values()) for i in list(group)[1:])]

    def submit(self, c: httpx.Client, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST once per new Idempotency-Key; a 5xx (nothing recorded, or the command) is resent with the same key."""
        key = str(uuid.uuid4())
        while True:
            resp = post(c, path, body, key=key)
            if resp.status_code < 500:
                return resp
            self.http_5xx += 1
            time.sleep(0.1)  # sleep-ok: the client's back-off before resending the same request

    def flood(self, cc: str) -> None:
        """A: plays onto ``cc`` until it has ``plays_per_call`` accepted; a 429 is not accepted: wait, send anew."""
        with self.client(TEST_API_KEY) as c:
            while len(self.a[cc]) < PLAN.plays_per_call:
                resp = self.submit(c, f"/v1/calls/{cc}/play", {"text": "please hold"})
                if resp.status_code == 429:
                    assert resp.json()["error"]["code"] == "too_many_pending", resp.text
                    self.refused[cc] += 1
                    time.sleep(float(resp.headers["Retry-After"]))  # sleep-ok: the back-off the door asks for
                    continue
                assert resp.status_code == 202, resp.text
                self.a[cc].append(resp.json()["id"])

    def ordinary(self, rooms: list[str], deadline_s: float) -> None:
        """B: connect to each room's call, send it B_STEPS back to back, and move on once its hang-up has ended."""
        with self.client(OTHER_API_KEY) as c:
            for room in rooms:
                resp = self.submit(c, f"/v1/rooms/{room}/connect", {})
                assert resp.status_code == 202, resp.text
                self.b_connects.append(resp.json()["id"])
                connect = ended(c, resp.json()["id"], deadline_s)
                if connect["status"] != Status.SUCCEEDED:
                    self.b_connects_failed.append(connect)
                    continue
                cc = connect["call_connection_id"]
                group = self.b[cc] = [connect["id"]]
                for path, body in B_STEPS:
                    resp = self.submit(c, f"/v1/calls/{cc}/{path}", body)
                    assert resp.status_code == 202, resp.text
                    group.append(resp.json()["id"])
                ended(c, group[-1], deadline_s)  # paces B through the flood; an end that never comes is `lost`


def ended(c: httpx.Client, command_id: str, deadline_s: float) -> dict[str, Any]:
    """The command once it has ended, or as it stands at the deadline (long-polls, 20 s at a time)."""
    last: dict[str, Any] = {}

    def terminal() -> bool:
        last.update(wait(c, command_id))
        return last["status"] in Status.TERMINAL
    try:
        wait_until(terminal, timeout_s=deadline_s, what=f"command {command_id} to end")
    except AssertionError:
        pass  # reported by the caller's checks
    return last


def seconds_to_end(rec: dict[str, str]) -> float:
    return (parse_time(rec["resolved_at"]) - parse_time(rec["created_at"])).total_seconds()


@pytest.mark.timeout(PLAN.timeout_s)
def test_a_flood_and_sigkilled_workers_lose_nothing_and_keep_every_call_in_order(
        simulator: ThreadServer, stack_env: dict[str, str], start_worker: Callable,  # type: ignore[type-arg]
        redis_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        record_figures: Callable[[Figures], None]) -> None:
    monkeypatch.setattr("simulator.media.PLAY_S", PLAY_S)  # the simulator runs in this process
    # The API in a process of its own: the flood's requests would otherwise share this process's interpreter lock.
    api = ProcessServer("api.app:create_app", {**stack_env, **ENV}, int(stack_env["CALLQ_API_PORT"]),
                        tmp_path / "api.log").start()
    pool = ThreadPoolExecutor(max_workers=PLAN.flood_calls + PLAN.b_threads)
    killer: Killer | None = None
    try:
        workers = [start_worker(f"w{n}", extra_env=ENV) for n in range(2)]
        load = Load(api.url)
        with load.client(TEST_API_KEY) as c:
            a_connects = [wait(c, post(c, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
                          for _ in range(PLAN.flood_calls)]
        assert all(cmd["status"] == "succeeded" for cmd in a_connects), a_connects
        b_rooms = [sim_room_call(simulator) for _ in range(PLAN.b_calls)]
        faults(simulator, latency_ms=LATENCY_MS)
        r = redis.Redis.from_url(redis_url, decode_responses=True)

        def in_flight() -> set[str]:
            ids = load.ids()
            return {i for i, s in zip(ids, statuses(r, ids), strict=True) if s == Status.RUNNING}

        killer = Killer(start_worker, workers, env=ENV, times=PLAN.kills, every_s=PLAN.kill_every_s,
                        in_flight=in_flight, aim=True)
        killer.thread.start()
        floods = [pool.submit(load.flood, cmd["call_connection_id"]) for cmd in a_connects]
        # B starts once A's flood is at the door, so all of B's work competes with a full backlog.
        wait_until(lambda: sum(load.refused.values()) or all(f.done() for f in floods), timeout_s=60,
                   what="the flood to reach the door")
        b = [pool.submit(load.ordinary, b_rooms[t::PLAN.b_threads], PLAN.timeout_s / 3)
             for t in range(PLAN.b_threads)]
        clients: list[Future[None]] = [*floods, *b]
        sending, failed = settle(clients, timeout_s=PLAN.timeout_s / 2, what="both clients to finish sending")

        a_ids = [i for cmd in a_connects for i in load.a[cmd["call_connection_id"]]]
        b_ids = [*load.b_connects, *(i for group in load.b.values() for i in group[1:])]
        every = a_ids + b_ids
        lost = unfinished(r, every, timeout_s=PLAN.timeout_s / 4)
        killer.stop.set()
        killer.thread.join(timeout=30)

        # Each call's commands as callq lists them (acceptance order), and what its client was answered 202 for.
        answered: dict[str, tuple[str, list[str]]] = {  # call -> (its client's key, ids in the order 202s came)
            **{cmd["call_connection_id"]: (TEST_API_KEY, [cmd["id"], *load.a[cmd["call_connection_id"]]])
               for cmd in a_connects},
            **{cc: (OTHER_API_KEY, group) for cc, group in load.b.items()}}
        listed: dict[str, list[str]] = {}
        for cc, (key, _) in answered.items():
            with load.client(key) as c:
                listed[cc] = [item["id"] for item in c.get(f"/v1/calls/{cc}/commands").json()["items"]]
        known = list(dict.fromkeys([*(i for _, ids in answered.values() for i in ids), *load.b_connects]))
        records = {i: record(r, i) for i in known}
        log = sim_log(simulator)
        executed = executions(log, known)
        twice = sorted(i for i, n in executed.items() if n > 1)
        b_seconds = sorted(seconds_to_end(records[i]) for i in b_ids if records[i].get("resolved_at"))
        refused = sum(load.refused.values())
        record_figures(Figures(
            "worker kills during a flood",
            f"2 workers; client A floods {PLAN.flood_calls} calls × {PLAN.plays_per_call} plays ({PLAY_S * 1000:.0f} "
            f"ms each) through a door of {PLAN.max_pending} per call, while client B connects {PLAN.b_calls} calls "
            f"and sends each {len(B_STEPS)} commands; {LATENCY_MS} ms ACS latency; a worker SIGKILLed every "
            f"{PLAN.kill_every_s:g} s while a command is being sent" + (f", {PLAN.kills} times" if PLAN.kills else ""),
            commands=len(every), faults=f"{killer.kills} worker SIGKILLs", lost=len(lost), duplicated=len(twice),
            http_5xx=load.http_5xx,
            notes={"plays refused 429 (retried anew)": refused, "mid-send at a kill": len(killer.hit),
                   "B's commands, accept to end: median": f"{statistics.median(b_seconds):.1f} s" if b_seconds else "-",
                   "slowest": f"{b_seconds[-1]:.1f} s" if b_seconds else "-",
                   **{f"A {k}": v for k, v in outcomes(r, a_ids).items()},
                   **{f"B {k}": v for k, v in outcomes(r, b_ids).items()}}))

        assert not sending, f"{sending} client threads were still sending at the deadline"
        assert not failed, f"a client failed: {failed[0]!r}"
        assert not load.b_connects_failed, f"B's connects did not succeed: {load.b_connects_failed[:2]}"
        assert not lost, f"{len(lost)} accepted commands never ended, e.g. {[records[i] for i in lost[:2]]}"
        assert not twice, f"{len(twice)} commands executed more than once at ACS, e.g. {records[twice[0]]}"
        assert killer.kills >= 3, "the scenario must actually kill workers"
        assert killer.hit, "no kill landed while a command was being sent: the scenario proved nothing"
        assert refused, "the flood never met the door: the scenario proved nothing about it"
        assert len(load.b) == PLAN.b_calls
        assert all(len(ids) == PLAN.plays_per_call for ids in load.a.values())
        # A refusal recorded nothing: each call holds exactly what its client was answered 202 for, in that order
        # (its connect first, even one whose worker was killed before it recorded ACS's answer: CallConnected lists
        # it then).
        for cc, (_, ids) in answered.items():
            assert listed[cc] == ids, f"call {cc}: callq lists other commands than its client was answered 202 for"
        # B is served through the flood: every one of its commands succeeded.
        assert all(records[i]["status"] == Status.SUCCEEDED for i in b_ids), \
            Counter(records[i]["status"] for i in b_ids)
        delivered, ended_at = delivery_order(simulator.http.get("/_sim/callbacks").json()), call_ends(log)
        mid_send = killer.hit | killer.held
        for command_id, rec in records.items():
            if rec["status"] == Status.SUCCEEDED:
                assert executed[command_id] == 1, f"{rec['type']} {command_id} succeeded but ACS never executed it"
            elif not honest(rec, delivered, ended_at, records=records, executed=executed, log=log):
                # The one other honest failure: a play whose worker was killed while sending it.
                assert '"outcome_unknown"' in rec["error"] and command_id in mid_send, rec
        # Per-call order: what ACS executed for a call, it executed in callq's acceptance order.
        by_sent_id = {**{i: i for i in known}, **{repeatability_id(i): i for i in known}}
        call_of = {i: cc for cc, (_, ids) in answered.items() for i in ids}
        acs_order: dict[str, list[str]] = defaultdict(list)
        for entry in log:  # in the order ACS executed them
            sent = by_sent_id.get(entry.get("operation_context") or "") or \
                by_sent_id.get(entry.get("repeatability_id") or "")
            if sent in call_of:
                acs_order[call_of[sent]].append(sent)
        for cc in answered:
            assert acs_order[cc] == [i for i in listed[cc] if executed[i]], f"call {cc}: ACS executed out of order"
    finally:
        if killer is not None:  # stopped before the workers' fixture tears down, so it starts no worker after it
            killer.stop.set()
            killer.thread.join(timeout=30)
        pool.shutdown(wait=False, cancel_futures=True)
        api.stop()
