"""Outbound webhooks under every fault at once (issue #20): a receiver down, failing, slow, and workers SIGKILLed.

One client subscribes two endpoints, each on a receiver of its own that verifies every signature with that
endpoint's secret: *all* (``*``: its calls' events and its commands' outcomes) and *commands* (``command.*`` only).
Calls are connected and sent the worker-kills script side by side on 2 worker processes, while:

* receiver *all* goes down (connection refused, open connections cut) and comes back on the same port;
* both receivers answer 500 to 20 % of requests, 200 after ``slow_s`` (under the timeout) to 10 %, and 200 after
  ``too_slow_s`` (past it: the deliverer gives up and sends again) to 3 %, at random from a seed;
* a worker is SIGKILLed while its deliverer holds deliveries in flight, and replaced; those deliveries go out
  again once the dead one's lease lapses.

Then, against callq's records in Redis (read in one transaction, so events, commands and messages agree):

* nothing lost: every message made was answered 2xx at least once and ends ``succeeded``; no lane is left due;
* made with what it tells of: one ``command.*`` message per endpoint for each command of the run, matching how it
  ended, and one ``call.event`` message on *all* for each event stored on the run's calls; none about anything else;
  per (endpoint, lane) the seqs are 1..n;
* order never broken at the receiver: no delivery of seq k arrives before every seq below k was accepted, so the
  first acceptances of each lane read 1, 2 … n (a delivery counts when the receiver decides its answer; another
  copy of a message already accepted may come after later seqs, e.g. one answered after the sender's timeout: a
  duplicate, with the same id);
* every signature valid; every delivery of one message carries its id, seq and the same body;
* commands as in the other scenarios: every one ends, none executed twice at ACS.

A message may fail every attempt only while its retry schedule lasts, so the schedule is made to outlast the outage
(about 8 failed attempts of the head of each lane) with 16 rounds to spare for the random failures: a message
failing 16 times in a row at 23 % is odds of 10^-10, not something a run meets.

Bounded form (``make test``): 6 calls × 7 commands, receiver down 5 s, slow 1 s / too slow 3 s against a 2 s timeout,
4 kills. Long form (``callq chaos``): 40 calls × 13 commands, down 30 s, slow 5 s / too slow 12 s against an 8 s
timeout, 12 kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import httpx
import pytest
import redis

from callq.receiver import Answer, Delivery, Receiver
from tests.chaos.harness import executions, outcomes, statuses, unfinished
from tests.chaos.report import Figures
from tests.chaos.scale import pick
from tests.chaos.test_worker_kills import script
from tests.conftest import wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_log, sim_room_call
from workers import keys
from workers.command import Status
from workers.delivery import lease_s


@dataclass(frozen=True)
class Plan:
    calls: int
    commands_per_call: int  # after the connect: test_worker_kills.script(n)
    outage_s: float  # receiver *all* down this long
    timeout_s: float  # CALLQ_WEBHOOK_TIMEOUT_SECONDS (a claim's lease is twice it: workers.delivery.lease_s)
    slow_s: float  # "answers after": under the timeout
    too_slow_s: float  # past the timeout
    schedule: tuple[float, ...]  # CALLQ_WEBHOOK_RETRY_SCHEDULE
    kills: int
    kill_every_s: float
    timeout_test_s: int


PLAN = pick(bounded=Plan(calls=4, commands_per_call=6, outage_s=3, timeout_s=2, slow_s=1, too_slow_s=3,
                         schedule=(0.2, 0.4, 0.8, 1.6, *[2.0] * 20), kills=3, kill_every_s=2, timeout_test_s=150),
            long=Plan(calls=40, commands_per_call=12, outage_s=30, timeout_s=8, slow_s=5, too_slow_s=12,
                      schedule=(0.5, 1, 2, 4, 8, *[10.0] * 19), kills=12, kill_every_s=4, timeout_test_s=900))
FAIL_RATE, SLOW_RATE, TOO_SLOW_RATE = 0.2, 0.1, 0.03
ENV = {"CALLQ_VISIBILITY_TIMEOUT_SECONDS": "4", "CALLQ_ACS_RATE_PER_SECOND": "500", "CALLQ_ACS_RATE_BURST": "50",
       "CALLQ_OUTCOME_TIMEOUT_SECONDS": "10"}
COMMAND_TYPES = ("command.succeeded", "command.failed")


@pytest.fixture
def stack_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The API (which checks a webhook's URL) and the workers (which deliver) take the same webhook settings."""
    extra = {"CALLQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
             "CALLQ_WEBHOOK_TIMEOUT_SECONDS": f"{PLAN.timeout_s:g}",
             "CALLQ_WEBHOOK_RETRY_SCHEDULE": ",".join(f"{s:g}" for s in PLAN.schedule)}
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return {**stack_env, **extra}


class Misbehaviour:
    """What a chaos receiver answers: 500, 200 after ``slow_s``, 200 after ``too_slow_s`` or 200 at once, drawn
    from a seeded generator per request (which request draws what depends on arrival order, the shares do not)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def __call__(self, _: Delivery) -> Answer:
        with self._lock:
            x = self._rng.random()
        if x < FAIL_RATE:
            return self._count("500", Answer(500))
        if x < FAIL_RATE + SLOW_RATE:
            time.sleep(PLAN.slow_s)  # sleep-ok: the fault itself, a receiver that takes this long to answer
            return self._count("slow", Answer(200))
        if x < FAIL_RATE + SLOW_RATE + TOO_SLOW_RATE:
            time.sleep(PLAN.too_slow_s)  # sleep-ok: the fault itself, answering after the sender gave up
            return self._count("too slow", Answer(200))
        return Answer(200)

    def _count(self, what: str, answer: Answer) -> Answer:
        with self._lock:
            self.counts[what] += 1
        return answer


def claims(r: redis.Redis) -> dict[int, set[str]]:
    """Deliveries in flight by deliverer process: each due lane's head message and the pid in its claim's token
    (``host:pid:…``, workers.delivery)."""
    lanes = [member.split(" ", 1) for member in cast(list[str], r.zrange(keys.WEBHOOKS_DUE, 0, -1))]
    pipe = r.pipeline(transaction=False)
    for ep, lane in lanes:
        pipe.lindex(keys.webhook_lane_key(ep, lane), 0)
    heads = [h for h in pipe.execute() if h]
    for head in heads:
        pipe.hget(keys.webhook_message_key(head), "claim")
    held: dict[int, set[str]] = defaultdict(set)
    for head, token in zip(heads, pipe.execute(), strict=True):
        if token:
            held[int(token.split(":")[1])].add(head)
    return held


class DelivererKiller:
    """Every ``every_s``, SIGKILLs a worker whose deliverer holds deliveries in flight (waiting up to ``every_s``
    more for one to), and starts a replacement; ``orphaned`` is what the victims held when they died."""

    def __init__(self, r: redis.Redis, start_worker: Callable[..., subprocess.Popen[bytes]],
                 workers: list[subprocess.Popen[bytes]]) -> None:
        self.r, self.start_worker, self.workers = r, start_worker, workers
        self.kills = 0
        self.orphaned: set[str] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        rng = random.Random(11)
        while self.kills < PLAN.kills and not self.stop.wait(PLAN.kill_every_s):  # load pacing
            deadline = time.monotonic() + PLAN.kill_every_s
            held = claims(self.r)
            while not any(held.get(w.pid) for w in self.workers) and time.monotonic() < deadline \
                    and not self.stop.wait(0.02):
                held = claims(self.r)  # a bounded wait for a delivery in flight
            holding = [n for n, w in enumerate(self.workers) if held.get(w.pid)]
            victim = self.workers.pop(rng.choice(holding) if holding else rng.randrange(len(self.workers)))
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            self.orphaned |= held.get(victim.pid, set())
            self.kills += 1
            self.workers.append(self.start_worker(f"r{self.kills}", extra_env=ENV, wait=False))


@dataclass
class Outage:
    """Receiver down from ``down_at`` to ``up_at`` (wall clock), in a thread so the load goes on meanwhile."""

    receiver: Receiver
    down_at: float = 0.0
    up_at: float = 0.0
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.receiver.go_down()
        self.down_at = time.time()
        self.thread = threading.Thread(target=self._back_later, daemon=True)
        self.thread.start()

    def _back_later(self) -> None:
        threading.Event().wait(PLAN.outage_s)  # the fault's length, not synchronisation
        self.receiver.come_back()
        self.up_at = time.time()

    def join(self) -> None:
        assert self.thread is not None
        self.thread.join(timeout=PLAN.outage_s + 10)


@dataclass(frozen=True)
class Snapshot:
    """callq's records at one instant: each endpoint's messages, each call's stored events, each command's status."""

    messages: dict[str, dict[str, str]]  # id -> message hash
    events: dict[str, list[dict[str, Any]]]  # call -> its stored events
    commands: dict[str, dict[str, str]]  # id -> command hash
    due: int  # lanes still due (WEBHOOKS_DUE)

    def pending(self) -> list[str]:
        return [i for i, m in self.messages.items() if m.get("status") != "succeeded"]


def snapshot(r: redis.Redis, endpoints: list[str], calls: list[str], commands: list[str]) -> Snapshot:
    """One transaction over the message indexes, event streams and commands (each message is made in the same
    script as its event or terminal move, so they agree), then the messages' hashes (their fields but status, claim
    and attempt figures never change)."""
    pipe = r.pipeline(transaction=True)
    for ep in endpoints:
        pipe.zrange(keys.webhook_messages_key(ep), 0, -1)
    for cc in calls:
        pipe.xrange(keys.call_events_key(cc))
    for cid in commands:
        pipe.hgetall(keys.command_key(cid))
    pipe.zcard(keys.WEBHOOKS_DUE)
    found = pipe.execute()
    ids = [i for group in found[:len(endpoints)] for i in group]
    streams = found[len(endpoints):len(endpoints) + len(calls)]
    records = found[len(endpoints) + len(calls):-1]
    pipe = r.pipeline(transaction=False)
    for i in ids:
        pipe.hgetall(keys.webhook_message_key(i))
    return Snapshot(messages=dict(zip(ids, pipe.execute(), strict=True)),
                    events={cc: [json.loads(fields["event"]) for _, fields in stream]
                            for cc, stream in zip(calls, streams, strict=True)},
                    commands=dict(zip(commands, records, strict=True)), due=int(found[-1]))


def drained(r: redis.Redis, endpoints: list[str], calls: list[str], commands: list[str], *,
            timeout_s: float) -> Snapshot:
    """Wait until every command has ended, every message made is delivered and no lane is due; the last snapshot
    either way (the caller reports what it shows, then asserts)."""
    last: list[Snapshot] = []

    def done() -> bool:
        last[:] = [snapshot(r, endpoints, calls, commands)]
        s = last[0]
        return not s.pending() and s.due == 0 and all(c.get("status") in Status.TERMINAL for c in s.commands.values())
    try:
        wait_until(done, timeout_s=timeout_s, what="every webhook message delivered", interval_s=0.2)
    except AssertionError:
        pass  # reported as lost by the caller
    return last[0]


def made_wrong(s: Snapshot, every: str, only_commands: str) -> list[str]:
    """Messages without what they tell of, or things told of without their message (one per endpoint each)."""
    wrong: list[str] = []
    by_endpoint: dict[str, Counter[tuple[str, str]]] = {every: Counter(), only_commands: Counter()}
    for mid, m in s.messages.items():
        if m["type"] in COMMAND_TYPES:
            command = s.commands.get(m.get("command", ""))
            if command is None or f"command.{command.get('status')}" != m["type"] \
                    or (command.get("call_connection_id") or "") != (m.get("call_connection_id") or ""):
                wrong.append(f"{mid}: {m['type']} of {m.get('command')}, which is {command and command.get('status')}")
            by_endpoint[m["endpoint"]][("command", m.get("command", ""))] += 1
        elif m["type"] == "call.event":
            event = json.loads(m["event"])
            if event["id"] not in {e["id"] for e in s.events.get(m.get("call_connection_id", ""), [])}:
                wrong.append(f"{mid}: call.event {event['id']} not stored on {m.get('call_connection_id')}")
            by_endpoint[m["endpoint"]][("event", event["id"])] += 1
        else:
            wrong.append(f"{mid}: unexpected type {m['type']}")
    ended = {("command", cid) for cid, c in s.commands.items() if c.get("status") in Status.TERMINAL}
    wanted = {every: ended | {("event", e["id"]) for es in s.events.values() for e in es}, only_commands: ended}
    for ep, told in by_endpoint.items():
        wrong += [f"{ep}: {what} {i} told {n} times" for (what, i), n in told.items() if n > 1]
        wrong += [f"{ep}: {what} {i} never told" for what, i in wanted[ep] - set(told)]
        wrong += [f"{ep}: {what} {i} told but not subscribed" for what, i in set(told) - wanted[ep]]
    lanes: dict[tuple[str, str], list[int]] = defaultdict(list)
    for m in s.messages.values():
        lanes[(m["endpoint"], m["lane"])].append(int(m["seq"]))
    wrong += [f"{lane}: seqs {sorted(seqs)}" for lane, seqs in lanes.items()
              if sorted(seqs) != list(range(1, len(seqs) + 1))]
    return wrong


@dataclass
class Wire:
    """What the receivers saw, judged against the messages callq made."""

    bad_signatures: int = 0
    unknown: int = 0  # deliveries of an id callq never made (for that endpoint)
    mismatched: list[str] = field(default_factory=list)  # an id arriving with another seq, type or body
    order_breaks: list[str] = field(default_factory=list)
    never_accepted: list[str] = field(default_factory=list)
    redelivered: int = 0  # arrivals of a message already accepted (same id: allowed)
    accepted: int = 0


def judge(received: dict[str, list[Delivery]], s: Snapshot) -> Wire:
    """``received``: each endpoint's deliveries in arrival order (when their answer was decided)."""
    wire = Wire()
    for ep, deliveries in received.items():
        done: dict[str, set[int]] = defaultdict(set)  # lane -> seqs accepted so far
        for d in deliveries:
            wire.bad_signatures += not d.valid
            m = s.messages.get(d.id)
            if m is None or m["endpoint"] != ep:
                wire.unknown += 1
                continue
            seq = int(m["seq"])
            if (d.seq, d.type) != (seq, m["type"]) or d.body != json.loads(m.get("body") or "null"):
                wire.mismatched.append(f"{d.id}: arrived as seq {d.seq} {d.type}, made as seq {seq} {m['type']}")
            accepted = done[m["lane"]]
            if missing := [k for k in range(1, seq) if k not in accepted]:
                wire.order_breaks.append(f"{ep} {m['lane']}: seq {seq} arrived before seqs {missing[:5]} were "
                                         "accepted")
            if 200 <= d.status < 300:
                wire.accepted += 1
                wire.redelivered += seq in accepted
                accepted.add(seq)
        accepted_ids = {d.id for d in deliveries if 200 <= d.status < 300}
        wire.never_accepted += [i for i, m in s.messages.items() if m["endpoint"] == ep and i not in accepted_ids]
    return wire


@pytest.fixture
def receivers() -> Iterator[tuple[Receiver, Receiver]]:
    """Receiver *all* and receiver *commands*, each misbehaving from its own seed."""
    with Receiver(answer=Misbehaviour(seed=1)) as every, Receiver(answer=Misbehaviour(seed=2)) as only_commands:
        yield every, only_commands


def subscribe(api: httpx.Client, rx: Receiver, events: list[str]) -> str:
    hook = post(api, "/v1/webhooks", {"url": rx.url, "events": events})
    assert hook.status_code == 201, hook.text
    rx.secrets = [hook.json()["secret"]]  # only this endpoint's secret: a message signed for the other fails
    return str(hook.json()["id"])


def send_scripts(api: httpx.Client, connects: list[str], calls: list[str], answers: list[httpx.Response]) -> list[str]:
    """Each call's script, interleaved so every call's lanes are busy at once; the commands, in order sent."""
    commands = []
    for step, (path, body, _) in enumerate(script(PLAN.commands_per_call)):
        for connect, cc in zip(connects, calls, strict=True):
            resp = post(api, f"/v1/calls/{cc}/{path}", body, key=f"{connect}-{step}")
            answers.append(resp)
            assert resp.status_code == 202, resp.text
            commands.append(str(resp.json()["id"]))
    return commands


@pytest.mark.timeout(PLAN.timeout_test_s)
def test_webhooks_lose_nothing_keep_order_and_sign_everything_through_outage_failures_slowness_and_kills(
        simulator: ThreadServer, api: httpx.Client, start_worker: Callable[..., subprocess.Popen[bytes]],
        redis_url: str, receivers: tuple[Receiver, Receiver], record_figures: Callable[[Figures], None]) -> None:
    rx_all, rx_commands = receivers
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    workers = [start_worker(f"w{n}", extra_env=ENV) for n in range(2)]
    endpoints = [subscribe(api, rx_all, ["*"]), subscribe(api, rx_commands, list(COMMAND_TYPES))]
    answers = [post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect") for _ in range(PLAN.calls)]
    connects = [str(a.json()["id"]) for a in answers]
    assert not unfinished(r, connects, timeout_s=60), "the calls did not all connect"
    assert statuses(r, connects) == ["succeeded"] * len(connects)
    calls = [cast(str, r.hget(keys.command_key(cid), "call_connection_id")) for cid in connects]

    killer, outage = DelivererKiller(r, start_worker, workers), Outage(rx_all)
    killer.thread.start()
    outage.start()
    try:
        commands = connects + send_scripts(api, connects, calls, answers)
        outage.join()
        killer.thread.join(timeout=PLAN.kills * PLAN.kill_every_s * 2 + 30)
        snap = drained(r, endpoints, calls, commands, timeout_s=PLAN.timeout_test_s / 2)
    finally:  # nothing outlives the test: no worker started after the fixtures stopped them, no receiver back
        killer.stop.set()
        killer.thread.join(timeout=30)
        outage.join()

    wire = judge({endpoints[0]: rx_all.received, endpoints[1]: rx_commands.received}, snap)
    wrong = made_wrong(snap, *endpoints)
    lost_commands = [i for i, c in snap.commands.items() if c.get("status") not in Status.TERMINAL]
    pending = snap.pending()
    executed = executions(sim_log(simulator), commands)
    record_figures(figures(snap, wire, receivers, killer, outage, endpoints, lost=len(lost_commands) + len(pending),
                           made_wrong=len(wrong), duplicated=sum(1 for n in executed.values() if n > 1),
                           http_5xx=sum(1 for a in answers if a.status_code >= 500),
                           ended=outcomes(r, commands)))

    assert not lost_commands, f"{len(lost_commands)} commands never ended"
    assert not pending, f"{len(pending)} messages never delivered, e.g. " + "; ".join(
        f"{i} ({m['type']} seq {m['seq']} of {m['lane']}): {m['status']} after {m.get('attempts')} attempts, last "
        f"{m.get('last_code') or m.get('last_error')}" for i in pending[:3] for m in [snap.messages[i]])
    assert snap.due == 0, "a lane is still due with every message delivered"
    assert not wire.never_accepted, f"recorded delivered, but no receiver accepted them: {wire.never_accepted[:5]}"
    assert not wrong, wrong[:10]
    assert not wire.order_breaks, wire.order_breaks[:10]
    assert wire.bad_signatures == 0 and wire.unknown == 0, wire
    assert not wire.mismatched, wire.mismatched[:10]
    assert all(n <= 1 for n in executed.values()), {i: n for i, n in executed.items() if n > 1}
    # The faults fired, or the scenario proved nothing.
    assert killer.kills == PLAN.kills and killer.orphaned, "no kill landed while a delivery was in flight"
    assert all(faults_of(rx)["500"] and faults_of(rx)["slow"] for rx in receivers), \
        "a receiver never failed or never answered slowly"
    assert made_while_down(snap, endpoints[0], outage), "nothing was made for the receiver while it was down"


def faults_of(rx: Receiver) -> Counter[str]:
    assert isinstance(rx.answer, Misbehaviour)
    return rx.answer.counts


def made_while_down(s: Snapshot, ep: str, outage: Outage) -> int:
    return sum(1 for m in s.messages.values()
               if m["endpoint"] == ep and outage.down_at * 1000 <= int(m["created_ms"]) <= outage.up_at * 1000)


def figures(s: Snapshot, wire: Wire, receivers: tuple[Receiver, Receiver], killer: DelivererKiller, outage: Outage,
            endpoints: list[str], *, lost: int, made_wrong: int, duplicated: int, http_5xx: int,
            ended: Counter[str]) -> Figures:
    """The run as the chaos report shows it (``lost``: commands never ended plus messages never delivered)."""
    misbehaved = faults_of(receivers[0]) + faults_of(receivers[1])
    posts = Counter(d.id for rx in receivers for d in rx.received)
    up_ms = outage.up_at * 1000
    # The messages to `*` made before it came back and delivered after: what its outage held back.
    backlog = [_epoch_ms(m["delivered_at"]) for m in s.messages.values() if m["endpoint"] == endpoints[0]
               and int(m["created_ms"]) < up_ms and m.get("delivered_at") and _epoch_ms(m["delivered_at"]) > up_ms]
    made = Counter(m["endpoint"] for m in s.messages.values())
    return Figures(
        "webhook chaos", f"2 workers; {PLAN.calls} calls × {PLAN.commands_per_call + 1} commands; endpoints `*` and "
        f"`command.*` on 2 receivers; timeout {PLAN.timeout_s:g} s (lease {lease_s(PLAN.timeout_s):g} s); retries "
        f"{PLAN.schedule[0]:g} s … {PLAN.schedule[-1]:g} s, {len(PLAN.schedule)} rounds",
        commands=len(s.commands),
        faults=f"receiver `*` down {PLAN.outage_s:g} s; {misbehaved['500']} × 500; {misbehaved['slow']} answered "
               f"after {PLAN.slow_s:g} s, {misbehaved['too slow']} after {PLAN.too_slow_s:g} s (past the timeout); "
               f"{killer.kills} worker SIGKILLs",
        lost=lost, duplicated=duplicated, http_5xx=http_5xx,
        notes={"messages made": len(s.messages), "to `*`": made[endpoints[0]], "to `command.*`": made[endpoints[1]],
               "messages never delivered": len(s.pending()), "made wrong": made_wrong,
               "order breaks": len(wire.order_breaks), "bad signatures": wire.bad_signatures,
               "id/seq/body mismatches": len(wire.mismatched), "POSTs received": sum(posts.values()),
               "accepted again (same id)": wire.redelivered, "most POSTs of one message": max(posts.values() or [0]),
               "most attempts recorded": max([int(m.get("attempts") or 0) for m in s.messages.values()] or [0]),
               "in flight at a kill": len(killer.orphaned),
               "made while `*` was down": made_while_down(s, endpoints[0], outage),
               "held back by the outage": len(backlog),
               "drained after `*` came back": f"{(max(backlog, default=up_ms) - up_ms) / 1000:.1f} s",
               "`command.*` accepted while `*` was down": sum(
                   1 for d in receivers[1].accepted() if outage.down_at <= d.received_at <= outage.up_at),
               **ended})


def _epoch_ms(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000
