"""Run one command: claim it, send it to ACS once, record what ACS said, leave the outcome to its event.

A task never waits for the callback: after ACS accepts a request the command is ``waiting`` and the
slot is free. The event endpoint resolves it (``workers.correlation``), whichever process receives it,
even when the event beat the HTTP response here. Running a command id twice is harmless: a terminal
or waiting command is left alone, and a resend after a crash carries the same repeatability id.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from azure.communication.callautomation import CallAutomationClient

from workers import correlation, keys, ledger
from workers.acs import command_scope, create_client, to_acs_error
from workers.errors import AcsError
from workers.operations import OPERATIONS, Record, Sent, is_repeatable
from workers.retry import retry_delay_s, should_retry
from workers.settings import Settings

log = logging.getLogger("callq.runtime")


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


@dataclass
class Runtime:
    settings: Settings
    redis: redis.Redis
    client: CallAutomationClient
    rng: random.Random

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(settings, redis.Redis.from_url(settings.redis_url, decode_responses=True),
                   create_client(settings), random.Random())

    def _transition(self, command_id: str, to: str, fields: dict[str, Any], *, only_from: tuple[str, ...] = ()) -> str:
        args = ledger.transition_args(to, fields, only_from=only_from)
        outcome, status = self.redis.eval(ledger.TRANSITION_LUA, 1, keys.command_key(command_id), *args)
        return status if outcome != "applied" else to

    def run(self, command_id: str) -> str:
        """Execute a command once; returns its status afterwards. Raises RetryLater for a safe retry."""
        record = self.redis.hgetall(keys.command_key(command_id))
        if not record:
            log.warning("command %s not found (expired?)", command_id, extra={"command_id": command_id})
            return "missing"
        if record["status"] in ledger.TERMINAL or record["status"] == "waiting":
            return record["status"]
        cmd = _parse(record)
        attempt = int(self.redis.hincrby(keys.command_key(command_id), "attempts", 1))
        if self._transition(command_id, "running", {}, only_from=("queued", "running")) != "running":
            return str(self.redis.hget(keys.command_key(command_id), "status"))
        try:
            with command_scope(command_id, _created(cmd)):
                sent = OPERATIONS[cmd["type"]].send(self.client, cmd, self.settings)
        except Exception as exc:
            return self._failed(cmd, to_acs_error(exc), attempt)
        return self._accepted(cmd, sent)

    def _accepted(self, cmd: Record, sent: Sent) -> str:
        cid = cmd["id"]
        fields: dict[str, Any] = {"sent_at": ledger.now_iso(), "last_error": ""}
        if sent.call_connection_id:
            fields["call_connection_id"] = sent.call_connection_id
            self._remember_call(cmd, sent.call_connection_id)
        if sent.recording_id:
            fields["recording_id"] = sent.recording_id
            self._remember_recording(cmd, sent.recording_id)
        if sent.result is not None:
            fields["result"] = sent.result
        # Recorded even if an early event already resolved the command: the response is still true.
        self.redis.hset(keys.command_key(cid), mapping=dict(zip(*[iter(ledger.flatten(fields))] * 2, strict=True)))
        to = "succeeded" if sent.resolved else "waiting"
        status = self._transition(cid, to, {}, only_from=("running",))
        if sent.recording_id and status == "waiting":
            status = self._catch_up_recording(cid, sent.recording_id)
        return status

    def _remember_recording(self, cmd: Record, recording_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        rec = keys.recording_key(recording_id)
        pipe.hset(rec, mapping={"client": cmd["client"], "call_connection_id": cmd.get("call_connection_id") or "",
                                "start_command": cmd["id"]})
        pipe.rpush(keys.recording_commands_key(recording_id), cmd["id"])
        pipe.expire(rec, self.settings.command_ttl_s)
        pipe.expire(keys.recording_commands_key(recording_id), self.settings.command_ttl_s)
        pipe.execute()

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

    def _remember_call(self, cmd: Record, call_connection_id: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        call = keys.call_key(call_connection_id)
        pipe.hsetnx(call, "state", "connecting")
        pipe.hset(call, mapping={"client": cmd["client"], "room_id": cmd.get("room_id") or "",
                                 "connect_command": cmd["id"]})
        pipe.rpush(keys.call_commands_key(call_connection_id), cmd["id"])
        pipe.expire(call, self.settings.command_ttl_s)
        pipe.expire(keys.call_commands_key(call_connection_id), self.settings.command_ttl_s)
        pipe.execute()

    def _failed(self, cmd: Record, err: AcsError, attempt: int) -> str:
        error = {"code": "acs_error", "message": err.message, "acs_status": err.status,
                 "acs_code": err.acs_code, "acs_subcode": err.acs_subcode}
        if should_retry(err, repeatable=is_repeatable(cmd), attempt=attempt, max_attempts=self.settings.max_attempts):
            self.redis.hset(keys.command_key(cmd["id"]), "last_error", json.dumps(error))
            delay = retry_delay_s(err, attempt, base_s=self.settings.retry_base_s, cap_s=self.settings.retry_cap_s,
                                  rng=self.rng)
            log.info("command %s attempt %d failed (%s); retrying in %.2fs", cmd["id"], attempt, err.message, delay,
                     extra={"command_id": cmd["id"], "attempt": attempt})
            raise RetryLater(delay)
        return self._transition(cmd["id"], "failed", {"error": error})
