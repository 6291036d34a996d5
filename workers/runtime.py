"""Run one command: claim it, send it to ACS once, record what ACS said, leave the outcome to its event.

A task never waits for the callback: after ACS accepts a request the command is ``waiting`` and the
slot is free. The event endpoint resolves it (``workers.correlation``), whichever process receives it,
even when the event beat the HTTP response here. Running a command id twice is harmless:

* the claim (``ledger.claim``, claim.lua) admits a command only while it is unsent, only when every earlier
  command of its call has been sent (per-call order), and only for one worker at a time (a lease that a
  crashed worker's redelivered message outlives); the same round trip reads the command and pays the
  shared ACS budget for its request;
* a resend after a crash carries the same repeatability id, and an operation ACS cannot deduplicate is
  re-sent only after a read of ACS's state shows the first attempt did not take effect.

Waiting never holds a slot, nor a broker message: a command whose turn has not come parks in its call's
lane and is queued ("kicked", kick.lua) when the command before it stops holding it back; runnable work
reaches the broker through the fair dispatch (lib.lua's ``dispatch``: clients take turns); a rate-limited or
retried command is re-queued with a countdown.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from azure.communication.callautomation import CallAutomationClient
from azure.core.exceptions import ResourceNotFoundError

from workers import correlation, keys, ledger, logs, metrics, redis_clients, scripts
from workers.acs import command_scope, create_client, to_acs_error
from workers.command import Command, Status, is_terminal, now_iso
from workers.errors import AcsError
from workers.operations import OPERATIONS, Sent, reconcile, timed_out
from workers.ratelimit import RateLimited, RateLimiter, prepaid, wait_or_defer
from workers.replication import NotReplicated, Replication
from workers.retry import retry_delay_s, should_retry
from workers.settings import Settings

log = logging.getLogger("callq.runtime")
SWEEP_BATCH = 500
SWEEP_AGAIN_MS = 30_000  # a command the sweeper re-published is looked at again after this long


class Scheduler(Protocol):
    """How the runtime asks for more work without knowing Celery (the task layer implements it)."""

    def message(self, command_type: str, command_id: str) -> str:
        """The broker message that runs a command's task (the runtime queues it through the fair dispatch)."""

    def command(self, command_type: str, command_id: str, countdown_s: float) -> None:
        """Publish a command's task to run after ``countdown_s`` (it must wait a little: a retry, the budget)."""

    def check(self, command_id: str, countdown_s: float) -> None:
        """Reconcile a waiting command after ``countdown_s`` if its event has not resolved it."""


class RetryLater(Exception):
    """Raised when a command should be tried again after ``delay_s`` without holding a worker slot."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"retry in {delay_s:.2f}s")
        self.delay_s = delay_s


def _budget(r: redis.Redis, settings: Settings) -> RateLimiter:
    return RateLimiter.for_endpoint(r, settings.acs_endpoint, rate_per_s=settings.acs_rate_per_s,
                                    burst=settings.acs_rate_burst)


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    client: CallAutomationClient
    scheduler: Scheduler
    rng: random.Random

    @classmethod
    def from_settings(cls, settings: Settings, scheduler: Scheduler) -> Runtime:
        r = redis_clients.sync_client(settings)
        return cls(settings, r, create_client(settings, _budget(r, settings)), scheduler, random.Random())

    @functools.cached_property
    def limiter(self) -> RateLimiter:
        """The shared ACS budget (the client's policy pays reads from it; the claim pays a command's send)."""
        return _budget(self.redis, self.settings)

    @functools.cached_property
    def replication(self) -> Replication:
        return Replication.from_settings(self.settings)

    @property
    def lease_ms(self) -> int:
        # Longer than one send can take (connect + read timeouts, a short rate wait), shorter than the
        # visibility timeout after which a dead worker's message comes back.
        return int(min(2 * self.settings.acs_timeout_s + self.settings.rate_wait_max_s + 5,
                       self.settings.visibility_timeout_s * 0.8) * 1000)

    def _transition(self, command_id: str, to: Status, fields: dict[str, Any], *,
                    only_from: tuple[Status, ...] = (), attempts_by: int = 0) -> str:
        moved = scripts.run(self.redis, ledger.transition(command_id, to, fields, only_from=only_from,
                                                          attempts_by=attempts_by))
        return self._settled(moved)

    @staticmethod
    def _settled(moved: ledger.Moved) -> str:
        """The status after a transition answered; counts (and says) a command's end once: only one
        transition to terminal applies, and it hands back the record."""
        if moved.finished is not None:
            correlation.finished(moved.finished)
        return moved.status

    def run(self, command_id: str) -> str:
        """Execute a command once; returns its status afterwards. Raises RetryLater for a later try.

        Then hand the commands of its call that waited for it their turn (``kick``).
        """
        status, lane = self._step(command_id)
        self.kick(lane)
        return status

    def _step(self, command_id: str) -> tuple[str, str]:
        """Claim and send one command; returns (status, its call) — the call only when it may have moved."""
        logs.bind(command_id=command_id)
        claim = self._claim(command_id)
        if claim.kind == "missing":
            log.warning("command %s not found (expired?)", command_id, extra={"command_id": command_id})
            return "missing", ""
        if claim.kind == "done":
            return claim.status, claim.call  # e.g. redelivered after a crash: the call may still need a push
        if claim.kind == "blocked":
            # Parked: its turn comes with a kick (the command holding it back ends, or is reconciled at its
            # deadline); the sweeper kicks parked lanes too. No message waits meanwhile.
            return Status.QUEUED.value, ""
        if claim.command is None:  # leased by another worker
            return Status.RUNNING.value, ""
        cmd = claim.command
        logs.bind(call_connection_id=cmd.call_connection_id)
        if claim.crashed and not OPERATIONS[cmd.type].is_repeatable(cmd):
            # The last attempt died mid-send (worker killed): ACS may have acted, and this request would
            # not be deduplicated. Ask ACS before sending again; if it cannot tell, say so.
            crashed = AcsError("the previous attempt stopped while sending", retryable=True)
            with prepaid():  # the claim paid for one request: the read that verifies
                return self._failed(cmd, crashed, claim.attempt), cmd.call_connection_id
        return self._send(cmd, attempt=claim.attempt), cmd.call_connection_id

    def _claim(self, command_id: str) -> ledger.Claim:
        """The claim (claim.lua), waiting in place while the ACS budget is short by less than ``rate_wait_max_s``."""
        deadline = time.monotonic() + self.settings.rate_wait_max_s
        while True:
            claim = scripts.run(self.redis, ledger.claim(
                command_id, lease_ms=self.lease_ms, budget_keys=self.limiter.script_keys,
                budget_args=self.limiter.script_args, now_ms=_now_ms(), queue=self.settings.queue,
                window=self.settings.dispatch_window))
            if claim.kind == "claimed":
                self._confirm_claim(command_id, claim)
            if claim.kind == "yielded":
                # A quiet window: a few ms for another client's sparse command. Nothing was claimed or paid.
                metrics.RECORDER.inc("callq_quiet_yields")
                if time.monotonic() + claim.wait_s > deadline:
                    # Only a window held open by hand (or a clock gone wrong) lasts longer than the dispatch opens
                    # one for: let the slot go and look again soon, rather than when that window says.
                    log.info("send of %s held by a quiet window for %.1f s more: trying again later", command_id,
                             claim.wait_s)
                    raise RetryLater(self.settings.rate_wait_max_s)
                time.sleep(claim.wait_s)  # bounded by keys.QUIET_WINDOW_MS: a short, deliberate pause
                continue
            if claim.kind != "throttled":
                return claim
            try:
                wait_or_defer(claim.wait_s, deadline)
            except RateLimited as limited:
                # Not claimed, not sent, not an attempt: the slot is freed while the budget refills.
                self._transition(command_id, Status.QUEUED, {"throttled": limited.message},
                                 only_from=(Status.QUEUED,))
                metrics.throttled(command_id, claim.type)
                raise RetryLater(limited.retry_after_s) from None

    def _confirm_claim(self, command_id: str, claim: ledger.Claim) -> None:
        """With ``CALLQ_REDIS_MIN_REPLICAS``, send only a claim the replicas have: a claim lost in a failover would
        bring the command back unsent-looking, and a non-repeatable one would then go to ACS twice. Unconfirmed, the
        claim is handed back as it was (a crashed attempt stays marked) and the command tried again later."""
        if not self.replication.enabled:
            return
        try:
            self.replication.confirm(self.redis)
        except NotReplicated as exc:
            log.warning("claim of %s not confirmed by the replicas (%s); not sending it now", command_id, exc)
            self._transition(command_id, Status.RUNNING if claim.crashed else Status.QUEUED, {"lease_until": "0"},
                             only_from=(Status.RUNNING,), attempts_by=-1)
            raise RetryLater(self.settings.redis_replication_timeout_ms / 1000) from None

    def kick(self, lane: str) -> None:
        """Hand the call's parked commands whose turn has come to the fair dispatch (kick.lua)."""
        if not lane:
            return
        for kicked in scripts.run(self.redis, ledger.kick(lane, now_ms=_now_ms(), queue=self.settings.queue,
                                                          window=self.settings.dispatch_window)):
            self.enqueue(kicked.type, kicked.command_id, kicked.client)

    def enqueue(self, command_type: str, command_id: str, client: str) -> None:
        """Queue a command's task now, through the fair dispatch."""
        scripts.run(self.redis, ledger.enqueue(
            client=client, command_id=command_id, message=self.scheduler.message(command_type, command_id),
            queue=self.settings.queue, window=self.settings.dispatch_window))

    def dispatch(self) -> int:
        """Refill the broker's command queue from the fair dispatch (a safety net: claims refill it too)."""
        return scripts.run(self.redis, ledger.dispatch(queue=self.settings.queue,
                                                       window=self.settings.dispatch_window))

    def sweep(self) -> int:
        """Revive commands nobody is working on; returns how many were re-published or reconciled.

        The safety net under every message-based step: if a task message was lost (Redis restarted while
        a retry was being published, a kick failed), the command record still says what is owed. An
        unsent command whose lease has expired gets its task again (through the fair dispatch, unless its message
        already waits there), a parked one gets its lane kicked; a waiting one past its deadline is reconciled.
        Duplicates are harmless: the claim admits one sender, and reconcile acts only once.
        """
        now_ms = _now_ms()
        due = self.redis.zrangebyscore(keys.ACTIVE_ZSET, "-inf", now_ms, start=0, num=SWEEP_BATCH)
        revived, lanes = 0, set()
        for raw_id in due:
            cid = str(raw_id)
            status, type_, lease, deadline, client, parked, in_ready, call = (
                None if v is None else str(v) for v in self.redis.hmget(
                    keys.command_key(cid), "status", "type", "lease_until", "wait_deadline", "client", "parked",
                    "in_ready", "call_connection_id"))
            if status is None or is_terminal(status):
                self.redis.zrem(keys.ACTIVE_ZSET, cid)
                continue
            again = now_ms + SWEEP_AGAIN_MS
            unsent = status in (Status.QUEUED, Status.RUNNING) and int(lease or 0) < now_ms
            if unsent and parked == "1":
                lanes.add(call or "")  # waiting for its turn: its lane gets a kick, in case one was lost
            elif unsent and in_ready != "1":  # (its message waiting its client's turn is not lost)
                self.enqueue(type_ or "", cid, client or "")
                revived += 1
            elif status == Status.WAITING and int(deadline or 0) + SWEEP_AGAIN_MS < now_ms:
                self.scheduler.check(cid, 0)
                revived += 1
            elif status == Status.WAITING:
                again = int(deadline or 0) + SWEEP_AGAIN_MS
            self.redis.zadd(keys.ACTIVE_ZSET, {cid: again})
        for lane in lanes:
            self.kick(lane)
        if revived:
            log.warning("sweeper revived %d command(s) whose task had been lost", revived)
        return revived

    def sweep_calls(self, *, limit: int = 20) -> list[str]:
        """Ask ACS about calls callq has heard nothing of for ``stale_call_s``; close those ACS no longer has.

        Closing one is what its lost CallDisconnected would have done (the same script, with an event callq makes
        up and names as its own): pending commands fail ``call_ended``, the call reads ``disconnected``. A call ACS
        still has is marked heard-of now. Each read pays the shared ACS budget; a few calls per round at most.
        Returns the calls closed.
        """
        now_ms = _now_ms()
        silent = self.redis.zrangebyscore(keys.LIVE_CALLS, "-inf", now_ms - self.settings.stale_call_s * 1000,
                                          start=0, num=limit)
        closed = []
        for raw in silent:
            cc = str(raw)
            try:
                state = str(self.client.get_call_connection(cc).get_call_properties().call_connection_state)
            except ResourceNotFoundError:
                state = "gone"
            except Exception as exc:  # ACS unreachable or throttled: ask again next round
                log.warning("stale-call check of %s failed: %s", cc, type(exc).__name__)
                continue
            if state in ("connected", "connecting", "transferring", "transferAccepted"):
                self.redis.zadd(keys.LIVE_CALLS, {cc: now_ms}, xx=True)
                continue
            self._close_call(cc, state)
            closed.append(cc)
        return closed

    def _close_call(self, cc: str, state: str) -> None:
        event = {"id": f"callq-stale-{cc}", "type": f"{correlation.PREFIX}CallDisconnected", "specversion": "1.0",
                 "source": f"calling/callConnections/{cc}", "time": now_iso(),
                 "data": {"callConnectionId": cc, "resultInformation": {
                     "code": 0, "subCode": 0, "message": f"callq closed the call: ACS reports it {state} after "
                     f"{self.settings.stale_call_s} s without news (its CallDisconnected never arrived)."}}}
        done = scripts.run(self.redis, correlation.ingest_call(
            correlation.clean(event), dedup_ttl_s=self.settings.event_dedup_ttl_s, ttl_s=self.settings.command_ttl_s,
            retention_s=self.settings.event_retention_s))
        for resolved in done.resolved:
            correlation.finished(resolved.record)
        self.redis.zrem(keys.LIVE_CALLS, cc)  # also when the marker said this was done before
        log.warning("closed call %s: ACS reports it %s and callq had heard nothing of it", cc, state)

    def check_due(self) -> list[str]:
        """Ask for the reconcile of every waiting command whose outcome deadline has passed; their ids.

        Waits need no message of their own while they wait (sent.lua indexes their deadline): each worker
        process calls this a few times a second, and the script hands each due command to one of them. A
        reconcile that is lost comes round again ``SWEEP_AGAIN_MS`` later.
        """
        due = scripts.run(self.redis, ledger.due(now_ms=_now_ms(), rearm_ms=SWEEP_AGAIN_MS, limit=SWEEP_BATCH))
        for cid in due:
            self.scheduler.check(cid, 0)
        return due

    def give_up(self, command_id: str, exc: Exception) -> str:
        """Record an internal failure after the task layer stopped retrying it."""
        error = {"code": "internal", "message": f"callq could not run this command ({type(exc).__name__})"}
        return self._transition(command_id, Status.FAILED, {"error": error})

    def _send(self, cmd: Command, *, attempt: int) -> str:
        op = OPERATIONS[cmd.type]
        if op.recording_by_call and not cmd.recording_id:
            found = self._recording_of_call(cmd)
            if found is None:
                error = {"code": "no_recording",
                         "message": f"The call has no recording to {op.verb}; start one first."}
                return self._transition(cmd.id, Status.FAILED, {"error": error})
            cmd = found
        try:
            with command_scope(cmd.id, cmd.created), prepaid():  # the claim paid for its request
                sent = op.send(self.client, cmd, self.settings)
        except RateLimited as limited:
            # A further request of this send found the budget spent. Never reached ACS: not an attempt.
            # Back to queued (not sent), so a later claim does not take this for a crash mid-send.
            self._transition(cmd.id, Status.QUEUED, {"throttled": limited.message}, only_from=(Status.RUNNING,),
                             attempts_by=-1)
            metrics.throttled(cmd.id, cmd.type)
            raise RetryLater(limited.retry_after_s) from None
        except Exception as exc:
            return self._failed(cmd, to_acs_error(exc), attempt)
        return self._accepted(cmd, sent)

    def _recording_of_call(self, cmd: Command) -> Command | None:
        """Pause/resume/stop addressed to the call: act on its current recording, known only once sent."""
        raw = self.redis.hget(keys.call_key(cmd.call_connection_id), "recording_id")
        if not raw:
            return None
        rid = str(raw)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.command_key(cmd.id), "recording_id", rid)
        # Listed under the recording before it is sent, so its RecordingStateChanged finds it.
        pipe.rpush(keys.recording_commands_key(rid), cmd.id)
        pipe.execute()
        return dataclasses.replace(cmd, recording_id=rid)

    def _accepted(self, cmd: Command, sent: Sent) -> str:
        now = now_iso()
        fields: dict[str, Any] = {"sent_at": now, "last_error": "", "throttled": ""}
        metrics.sent(cmd.type, cmd.created_at, now)
        log.info("command %s (%s) sent to ACS", cmd.id, cmd.type,
                 extra={"command_id": cmd.id, "call_connection_id": cmd.call_connection_id or None})
        if sent.call_connection_id:
            fields["call_connection_id"] = sent.call_connection_id
        if sent.recording_id:
            fields["recording_id"] = sent.recording_id
        if sent.result is not None:
            fields["result"] = sent.result
        timeout_s = OPERATIONS[cmd.type].outcome_timeout_s(cmd, self.settings.outcome_timeout_s)
        deadline_ms = int((time.time() + timeout_s) * 1000)
        if not sent.resolved:
            fields["wait_deadline"] = deadline_ms
        to = Status.SUCCEEDED if sent.resolved else Status.WAITING
        moved = scripts.run(self.redis, ledger.sent(
            cmd, to, fields, made=ledger.SentTo(call_made=sent.call_connection_id or "",
                                               recording_id=sent.recording_id or ""),
            ttl_s=self.settings.command_ttl_s, wait_deadline_ms=deadline_ms))
        status = self._settled(moved)
        if sent.recording_id and status == Status.WAITING:
            status = self._catch_up_recording(cmd.id, sent.recording_id)
        return status

    def reconcile(self, command_id: str) -> str:
        """The deadline of a waiting command passed: resolve it from ACS's state, or fail callback_timeout.

        Raises RetryLater while the deadline is still ahead (checks are capped below the visibility timeout).
        """
        record = {str(k): str(v) for k, v in self.redis.hgetall(keys.command_key(command_id)).items()}
        if record.get("status") != Status.WAITING:
            return record.get("status") or "missing"
        cmd = Command.from_hash(record)
        left_s = cmd.wait_deadline_ms / 1000 - time.time()
        if left_s > 0:
            raise RetryLater(left_s)
        try:
            verdict = reconcile(self.client, cmd, lambda part: self._changed_since(cmd, part))
        except RateLimited as limited:
            raise RetryLater(limited.retry_after_s) from None
        except Exception as exc:
            log.warning("could not reconcile %s: %s", command_id, type(exc).__name__)
            verdict = None
        if verdict is None:
            verdict = timed_out()
        status = self._settled(scripts.run(self.redis, ledger.reconciled(cmd, *verdict)))
        self.kick(cmd.call_connection_id)
        return status

    def _changed_since(self, cmd: Command, part: str) -> str | None:
        """A command accepted after ``cmd`` on its call that changes ``part`` of the call's state and was claimed
        (so may have reached ACS), if there is one."""
        if not cmd.call_connection_id:
            return None
        ids = [str(i) for i in self.redis.lrange(keys.call_commands_key(cmd.call_connection_id), 0, -1)]
        later = ids[ids.index(cmd.id) + 1:] if cmd.id in ids else []
        pipe = self.redis.pipeline(transaction=False)
        for command_id in later:
            pipe.hmget(keys.command_key(command_id), "type", "attempts")
        for command_id, (type_, attempts) in zip(later, pipe.execute() if later else [], strict=True):
            op = OPERATIONS.get(str(type_ or ""))
            if op is not None and op.changes == part and int(attempts or 0) > 0:
                return command_id
        return None

    def _catch_up_recording(self, command_id: str, recording_id: str) -> str:
        """Resolve a start whose RecordingStateChanged arrived before we knew its recording id.

        The event endpoint stores each recording's last state before it looks for commands, and we
        registered the command before looking here, so at least one side sees the other.
        """
        last = self.redis.hget(keys.recording_key(recording_id), "last_event")
        step = correlation.outcome("start_recording", json.loads(last)) if last else None
        if step is None:
            return Status.WAITING.value
        status, fields = step
        return self._transition(command_id, status, fields)

    def _verify(self, cmd: Command) -> bool | None:
        """After an unclear failure of a non-repeatable command: did it take effect? (None: cannot tell.)"""
        verify = OPERATIONS[cmd.type].verify
        if verify is None:
            return None
        try:
            return verify(self.client, cmd)
        except Exception as exc:
            log.warning("could not verify command %s: %s", cmd.id, type(exc).__name__)
            return None

    def _failed(self, cmd: Command, err: AcsError, attempt: int) -> str:
        error = {"code": "acs_error", "message": err.message, "acs_status": err.status,
                 "acs_code": err.acs_code, "acs_subcode": err.acs_subcode}
        repeatable = OPERATIONS[cmd.type].is_repeatable(cmd)
        if err.retryable and err.may_have_executed and not repeatable:
            took_effect = self._verify(cmd)
            if took_effect:
                return self._accepted(cmd, Sent())
            if took_effect is None:
                error |= {"code": "outcome_unknown", "message": f"{err.message}; ACS may or may not have acted "
                          "and this operation cannot be safely repeated or checked"}
                return self._transition(cmd.id, Status.FAILED, {"error": error})
            repeatable = True  # verified not to have taken effect: sending again cannot double it
        if should_retry(err, repeatable=repeatable, attempt=attempt, max_attempts=self.settings.max_attempts):
            delay = retry_delay_s(err, attempt, base_s=self.settings.retry_base_s, cap_s=self.settings.retry_cap_s,
                                  rng=self.rng)
            status = self._transition(cmd.id, Status.QUEUED, {"last_error": error}, only_from=(Status.RUNNING,))
            if is_terminal(status):
                return status  # its event resolved it meanwhile (ACS had acted): nothing left to retry
            metrics.retrying(cmd.id, cmd.type, str(error["code"]))
            log.info("command %s attempt %d failed (%s); retrying in %.2fs", cmd.id, attempt, err.message, delay,
                     extra={"command_id": cmd.id, "attempt": attempt})
            raise RetryLater(delay)
        return self._transition(cmd.id, Status.FAILED, {"error": error})
