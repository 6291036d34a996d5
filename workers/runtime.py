"""Run one command: claim it, send it to ACS once, record what ACS said, leave the outcome to its event.

A task never waits for the callback: after ACS accepts a request the command is ``waiting`` and the
slot is free. The event endpoint resolves it (``workers.correlation``), whichever process receives it,
even when the event beat the HTTP response here. Running a command id twice is harmless:

* the claim (``ledger.CLAIM_LUA``) admits a command only while it is unsent, only when every earlier
  command of its call has been sent (per-call order), and only for one worker at a time (a lease that a
  crashed worker's redelivered message outlives); the same round trip reads the command and pays the
  shared ACS budget for its request;
* a resend after a crash carries the same repeatability id, and an operation ACS cannot deduplicate is
  re-sent only after a read of ACS's state shows the first attempt did not take effect.

Waiting never holds a slot: a command whose turn has not come parks and is re-published ("kicked") by
the command before it; a rate-limited or retried command is re-queued with a countdown.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import redis
from azure.communication.callautomation import CallAutomationClient

from workers import correlation, keys, ledger, logs, metrics, scripts
from workers.acs import command_scope, create_client, to_acs_error
from workers.errors import AcsError
from workers.operations import OPERATIONS, Record, Sent, is_repeatable, lane_args, outcome_timeout_s, reconcile
from workers.ratelimit import RateLimited, RateLimiter, prepaid, wait_or_defer
from workers.retry import retry_delay_s, should_retry
from workers.settings import Settings

log = logging.getLogger("callq.runtime")
PARK_RECHECK_CAP_S = 30.0  # safety net: a parked command looks again even if its kick were lost
CHAIN_MAX = 50  # commands of one call a slot runs back to back before handing the call to another slot
SWEEP_BATCH = 500
SWEEP_AGAIN_MS = 30_000  # a command the sweeper re-published is looked at again after this long


class Scheduler(Protocol):
    """How the runtime asks for more work without knowing Celery (the task layer implements it)."""

    def command(self, command_type: str, command_id: str, countdown_s: float = 0.0) -> None:
        """Publish a command's task again (its turn on the call has come, or it must wait a little)."""

    def check(self, command_id: str, countdown_s: float) -> None:
        """Reconcile a waiting command after ``countdown_s`` if its event has not resolved it."""


class RetryLater(Exception):
    """Raised when a command should be tried again after ``delay_s`` without holding a worker slot."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"retry in {delay_s:.2f}s")
        self.delay_s = delay_s


def _parse(record: dict[str, str]) -> Record:
    cmd: Record = dict(record)
    cmd["params"] = json.loads(record.get("params") or "{}")
    return cmd


def _created(cmd: Record) -> datetime:
    return datetime.fromisoformat(cmd["created_at"].replace("Z", "+00:00"))


def _budget(r: redis.Redis, settings: Settings) -> RateLimiter:
    return RateLimiter.for_endpoint(r, settings.acs_endpoint, rate_per_s=settings.acs_rate_per_s,
                                    burst=settings.acs_rate_burst)


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    client: CallAutomationClient
    scheduler: Scheduler
    rng: random.Random

    @classmethod
    def from_settings(cls, settings: Settings, scheduler: Scheduler) -> Runtime:
        r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        return cls(settings, r, create_client(settings, _budget(r, settings)), scheduler, random.Random())

    @functools.cached_property
    def limiter(self) -> RateLimiter:
        """The shared ACS budget (the client's policy pays reads from it; the claim pays a command's send)."""
        return _budget(self.redis, self.settings)

    @property
    def lease_ms(self) -> int:
        # Longer than one send can take (connect + read timeouts, a short rate wait), shorter than the
        # visibility timeout after which a dead worker's message comes back.
        return int(min(2 * self.settings.acs_timeout_s + self.settings.rate_wait_max_s + 5,
                       self.settings.visibility_timeout_s * 0.8) * 1000)

    def _eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Any:
        """``redis.eval``'s arguments, run by the script's SHA (``scripts.run``)."""
        return scripts.run(self.redis, script, list(keys_and_args[:numkeys]), list(keys_and_args[numkeys:]))

    def _transition(self, command_id: str, to: str, fields: dict[str, Any], *, only_from: tuple[str, ...] = ()) -> str:
        args = ledger.transition_args(to, {**fields, "lease_until": 0}, only_from=only_from)
        outcome, status = self._eval(ledger.TRANSITION_LUA, 1, keys.command_key(command_id), *args)
        return self._settled(command_id, to, outcome, status)

    def _settled(self, command_id: str, to: str, outcome: str, status: str) -> str:
        """The status after a ``TRANSITION_FN`` move to ``to`` answered (outcome, status); counts a finish once."""
        if outcome != "applied":
            return str(status)
        if to in ledger.TERMINAL:
            metrics.finished(self.redis, command_id)  # counted once: only one transition to terminal applies
        return to

    def run(self, command_id: str) -> str:
        """Execute a command once; returns its status afterwards. Raises RetryLater for a later try.

        Then keep its call moving from this slot: the commands that parked behind it run here, in order,
        instead of each waiting for its message to come round the queue again.
        """
        status, lane = self._step(command_id)
        self._drain(lane)
        return status

    def _step(self, command_id: str) -> tuple[str, str]:
        """Claim and send one command; returns (status, its call) — the call only when it may have moved."""
        logs.bind(command_id=command_id)  # a drain runs several commands in one task
        claim = self._claim(command_id)
        if claim[0] == "missing":
            log.warning("command %s not found (expired?)", command_id, extra={"command_id": command_id})
            return "missing", ""
        if claim[0] == "done":
            return str(claim[1]), str(claim[2])  # e.g. redelivered after a crash: the call may still need a push
        if claim[0] == "blocked":
            raise RetryLater(min(PARK_RECHECK_CAP_S, 2.0 ** int(claim[1])))
        if claim[0] != "claimed":  # leased by another worker
            return "running", ""
        cmd = _parse(dict(zip(claim[3][::2], claim[3][1::2], strict=True)))
        lane = cmd.get("call_connection_id") or ""
        logs.bind(call_connection_id=lane)
        if claim[2] == "running" and not is_repeatable(cmd):
            # The last attempt died mid-send (worker killed): ACS may have acted, and this request would
            # not be deduplicated. Ask ACS before sending again; if it cannot tell, say so.
            crashed = AcsError("the previous attempt stopped while sending", retryable=True)
            with prepaid():  # the claim paid for one request: the read that verifies
                return self._failed(cmd, crashed, int(claim[1])), lane
        return self._send(cmd, attempt=int(claim[1])), lane

    def _claim(self, command_id: str) -> list[Any]:
        """``CLAIM_LUA``, waiting in place while the ACS budget is short by less than ``rate_wait_max_s``."""
        deadline = time.monotonic() + self.settings.rate_wait_max_s
        while True:
            claim: list[Any] = self._eval(
                ledger.CLAIM_LUA, 3, keys.command_key(command_id), *self.limiter.script_keys, self.lease_ms,
                ledger.now_iso(), *self.limiter.script_args, *lane_args(int(time.time() * 1000)))
            if claim[0] != "throttled":
                return claim
            try:
                wait_or_defer(int(claim[1]) / 1000, deadline)
            except RateLimited as limited:
                # Not claimed, not sent, not an attempt: the slot is freed while the budget refills.
                self._transition(command_id, "queued", {"throttled": limited.message}, only_from=("queued",))
                metrics.throttled({"id": command_id, "type": claim[2]})
                raise RetryLater(limited.retry_after_s) from None

    def _drain(self, lane: str) -> None:
        for _ in range(CHAIN_MAX):
            nxt = self._next_parked(lane)
            if nxt is None:
                return
            try:
                self._step(nxt[0])
            except RetryLater as later:  # it must wait (rate limit, retry, still blocked): back to the queue
                self.scheduler.command(nxt[1], nxt[0], later.delay_s)
                return
        nxt = self._next_parked(lane)  # the budget is spent: let another slot carry on with this call
        if nxt is not None:
            self.scheduler.command(nxt[1], nxt[0])

    def _next_parked(self, lane: str) -> tuple[str, str] | None:
        """The call's next command if it parked waiting for its turn and the turn is now its (unparks it)."""
        if not lane:
            return None
        nxt = self._eval(ledger.KICK_LUA, 1, keys.call_commands_key(lane), *lane_args(int(time.time() * 1000)))
        return (nxt[0], nxt[1]) if nxt else None

    def sweep(self) -> int:
        """Revive commands nobody is working on; returns how many were re-published or reconciled.

        The safety net under every message-based step: if a task message was lost (Redis restarted while
        a retry was being published, a kick failed), the command record still says what is owed. An
        unsent command whose lease has expired gets its task again; a waiting one past its deadline is
        reconciled. Duplicates are harmless: the claim admits one sender, and reconcile acts only once.
        """
        now_ms = int(time.time() * 1000)
        due = self.redis.zrangebyscore(keys.ACTIVE_ZSET, "-inf", now_ms, start=0, num=SWEEP_BATCH)
        revived = 0
        for cid in due:
            status, type_, lease, deadline = self.redis.hmget(keys.command_key(cid), "status", "type",
                                                              "lease_until", "wait_deadline")
            if status is None or status in ledger.TERMINAL:
                self.redis.zrem(keys.ACTIVE_ZSET, cid)
                continue
            again = now_ms + SWEEP_AGAIN_MS
            if status in ("queued", "running") and int(lease or 0) < now_ms:
                self.scheduler.command(type_, cid)
                revived += 1
            elif status == "waiting" and int(deadline or 0) + SWEEP_AGAIN_MS < now_ms:
                self.scheduler.check(cid, 0)
                revived += 1
            elif status == "waiting":
                again = int(deadline or 0) + SWEEP_AGAIN_MS
            self.redis.zadd(keys.ACTIVE_ZSET, {cid: again})
        if revived:
            log.warning("sweeper revived %d command(s) whose task had been lost", revived)
        return revived

    def check_due(self) -> list[str]:
        """Ask for the reconcile of every waiting command whose outcome deadline has passed; their ids.

        Waits need no message of their own while they wait (``ledger.SENT_LUA`` indexes their deadline): each
        worker process calls this a few times a second, and the script hands each due command to one of
        them. A reconcile that is lost comes round again ``SWEEP_AGAIN_MS`` later.
        """
        due: list[str] = self._eval(ledger.DUE_LUA, 1, keys.WAIT_DEADLINES, int(time.time() * 1000),
                                    SWEEP_AGAIN_MS, SWEEP_BATCH, keys.COMMAND_PREFIX)
        for cid in due:
            self.scheduler.check(cid, 0)
        return due

    def give_up(self, command_id: str, exc: Exception) -> str:
        """Record an internal failure after the task layer stopped retrying it."""
        error = {"code": "internal", "message": f"callq could not run this command ({type(exc).__name__})"}
        return self._transition(command_id, "failed", {"error": error})

    def _send(self, cmd: Record, *, attempt: int) -> str:
        op = OPERATIONS[cmd["type"]]
        if op.recording_by_call and not cmd.get("recording_id") and not self._recording_of_call(cmd):
            error = {"code": "no_recording", "message": "The call has no recording to " +
                     cmd["type"].split("_")[0] + "; start one first."}
            return self._transition(cmd["id"], "failed", {"error": error})
        try:
            with command_scope(cmd["id"], _created(cmd)), prepaid():  # the claim paid for its request
                sent = op.send(self.client, cmd, self.settings)
        except RateLimited as limited:
            # A further request of this send found the budget spent. Never reached ACS: not an attempt.
            # Back to queued (not sent), so a later claim does not take this for a crash mid-send.
            self._transition(cmd["id"], "queued", {"throttled": limited.message}, only_from=("running",))
            self.redis.hincrby(keys.command_key(cmd["id"]), "attempts", -1)
            metrics.throttled(cmd)
            raise RetryLater(limited.retry_after_s) from None
        except Exception as exc:
            return self._failed(cmd, to_acs_error(exc), attempt)
        return self._accepted(cmd, sent)

    def _recording_of_call(self, cmd: Record) -> bool:
        """Pause/resume/stop addressed to the call: act on its current recording, known only once sent."""
        rid = self.redis.hget(keys.call_key(cmd["call_connection_id"]), "recording_id")
        if not rid:
            return False
        cmd["recording_id"] = rid
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.command_key(cmd["id"]), "recording_id", rid)
        # Listed under the recording before it is sent, so its RecordingStateChanged finds it.
        pipe.rpush(keys.recording_commands_key(rid), cmd["id"])
        pipe.execute()
        return True

    def _accepted(self, cmd: Record, sent: Sent) -> str:
        cid = cmd["id"]
        now = ledger.now_iso()
        fields: dict[str, Any] = {"sent_at": now, "last_error": "", "throttled": ""}
        metrics.sent(cmd, now)
        if sent.call_connection_id:
            fields["call_connection_id"] = sent.call_connection_id
        if sent.recording_id:
            fields["recording_id"] = sent.recording_id
        if sent.result is not None:
            fields["result"] = sent.result
        timeout_s = outcome_timeout_s(cmd, self.settings.outcome_timeout_s)
        deadline_ms = int((time.time() + timeout_s) * 1000)
        if not sent.resolved:
            fields["wait_deadline"] = deadline_ms
        to = "succeeded" if sent.resolved else "waiting"
        outcome, status = self._eval(ledger.SENT_LUA, 7, *self._sent_keys(cmd, sent), to, now,
                                     self.settings.command_ttl_s, deadline_ms, cmd["client"],
                                     cmd.get("room_id") or "", sent.call_connection_id or "",
                                     sent.recording_id or "", cmd.get("call_connection_id") or "",
                                     *ledger.flatten(fields))
        status = self._settled(cid, to, outcome, status)
        if sent.recording_id and status == "waiting":
            status = self._catch_up_recording(cid, sent.recording_id)
        return status

    @staticmethod
    def _sent_keys(cmd: Record, sent: Sent) -> list[str]:
        """KEYS of ``SENT_LUA``: the command, the call ACS made (if any), the recording it started (if any)."""
        made, rec, own = sent.call_connection_id or "", sent.recording_id or "", cmd.get("call_connection_id") or ""
        return [keys.command_key(cmd["id"]),
                keys.call_key(made) if made else "", keys.call_commands_key(made) if made else "",
                keys.room_call_key(cmd["room_id"]) if made and cmd.get("room_id") else "",
                keys.recording_key(rec) if rec else "", keys.recording_commands_key(rec) if rec else "",
                keys.call_key(own) if rec and own else ""]

    def reconcile(self, command_id: str) -> str:
        """The deadline of a waiting command passed: resolve it from ACS's state, or fail callback_timeout.

        Raises RetryLater while the deadline is still ahead (checks are capped below the visibility timeout).
        """
        record = self.redis.hgetall(keys.command_key(command_id))
        if record.get("status") != "waiting":
            return record.get("status") or "missing"
        left_s = int(record.get("wait_deadline") or 0) / 1000 - time.time()
        if left_s > 0:
            raise RetryLater(left_s)
        cmd = _parse(record)
        try:
            verdict = reconcile(self.client, cmd)
        except RateLimited as limited:
            raise RetryLater(limited.retry_after_s) from None
        except Exception as exc:
            log.warning("could not reconcile %s: %s", command_id, type(exc).__name__)
            verdict = None
        if verdict is None:
            verdict = ("failed", {"error": {"code": "callback_timeout", "message": "ACS sent no outcome in time "
                                            "and its state cannot tell whether this command took effect."},
                                  "resolved_by": {"type": "timeout"}})
        status = self._transition(command_id, verdict[0], verdict[1], only_from=("waiting",))
        cc = cmd.get("call_connection_id") or ""
        if status == "succeeded" and cc and cmd["type"] in ("connect", "hang_up"):
            # What CallConnected / CallDisconnected would have told the call record, had they arrived.
            update = {"state": "connected", "server_call_id": (verdict[1].get("result") or {}).get(
                "server_call_id") or ""} if cmd["type"] == "connect" else {"state": "disconnected"}
            self.redis.hset(keys.call_key(cc), mapping=update)
        self._drain(cc)
        return status

    def _catch_up_recording(self, command_id: str, recording_id: str) -> str:
        """Resolve a start whose RecordingStateChanged arrived before we knew its recording id.

        The event endpoint stores each recording's last state before it looks for commands, and we
        registered the command before looking here, so at least one side sees the other.
        """
        last = self.redis.hget(keys.recording_key(recording_id), "last_event")
        step = correlation.outcome("start_recording", json.loads(last)) if last else None
        if step is None:
            return "waiting"
        status, fields = step
        return self._transition(command_id, status, fields)

    def _verify(self, cmd: Record) -> bool | None:
        """After an unclear failure of a non-repeatable command: did it take effect? (None: cannot tell.)"""
        verify = OPERATIONS[cmd["type"]].verify
        if verify is None:
            return None
        try:
            return verify(self.client, cmd)
        except Exception as exc:
            log.warning("could not verify command %s: %s", cmd["id"], type(exc).__name__)
            return None

    def _failed(self, cmd: Record, err: AcsError, attempt: int) -> str:
        error = {"code": "acs_error", "message": err.message, "acs_status": err.status,
                 "acs_code": err.acs_code, "acs_subcode": err.acs_subcode}
        repeatable = is_repeatable(cmd)
        if err.retryable and err.may_have_executed and not repeatable:
            took_effect = self._verify(cmd)
            if took_effect:
                return self._accepted(cmd, Sent())
            if took_effect is None:
                error |= {"code": "outcome_unknown", "message": f"{err.message}; ACS may or may not have acted "
                          "and this operation cannot be safely repeated or checked"}
                return self._transition(cmd["id"], "failed", {"error": error})
            repeatable = True  # verified not to have taken effect: sending again cannot double it
        if should_retry(err, repeatable=repeatable, attempt=attempt, max_attempts=self.settings.max_attempts):
            delay = retry_delay_s(err, attempt, base_s=self.settings.retry_base_s, cap_s=self.settings.retry_cap_s,
                                  rng=self.rng)
            status = self._transition(cmd["id"], "queued", {"last_error": error}, only_from=("running",))
            if status in ledger.TERMINAL:
                return status  # its event resolved it meanwhile (ACS had acted): nothing left to retry
            metrics.retrying(cmd, error["code"])
            log.info("command %s attempt %d failed (%s); retrying in %.2fs", cmd["id"], attempt, err.message, delay,
                     extra={"command_id": cmd["id"], "attempt": attempt})
            raise RetryLater(delay)
        return self._transition(cmd["id"], "failed", {"error": error})
