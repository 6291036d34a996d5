"""Outbound webhooks: a client's endpoints, the messages made for them, and what goes on the wire.

What callq promises (the README's "Webhooks" says it to users):

* **Made with what they tell of.** A message is written by the same Lua script as the thing it reports (a
  command's terminal move, an ACS callback stored, an Event Grid event stored; lib.lua ``webhook_fanout``): no
  event is ever recorded without its message, and a message never tells of something that was not recorded.
* **In order per (endpoint, call).** Messages to one endpoint about one call (its *lane*: the call connection id;
  ``room:{id}`` for a room's Event Grid events; ``cmd:{id}`` for a command that never had a call) go out one at a
  time, in the order they were made, each with the next ``seq`` of that lane (1, 2, 3 … with no gaps, so a
  receiver can tell it missed one). A failing delivery holds back only its own lane.
* **At least once, with the same id.** Every attempt of a message carries the same ``webhook-id``; receivers
  dedupe on it. A message whose retry schedule is spent is kept (``failed``) for a manual retry or a replay, and
  its lane moves on.
* **Standard Webhooks on the wire** (signed with the spec's own library, ``standardwebhooks``): ``webhook-id``,
  ``webhook-timestamp`` (of this attempt), ``webhook-signature`` (``v1,<base64 HMAC-SHA256>``; two entries while a
  rotated-out secret is still in its grace period).

Secrets live only in the endpoint's hash in Redis: never in a task's arguments, a log line or an error.
"""

from __future__ import annotations

import base64
import json
import random
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from standardwebhooks import Webhook

from workers import keys, scripts
from workers.command import Command, resource

EVENT_TYPES = ("command.succeeded", "command.failed", "call.event", "room.event")
TEST_TYPE = "webhook.test"  # sent by POST /v1/webhooks/{id}/test, whatever the endpoint subscribes to
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # the spec asks for 24-64 random bytes

Outcome = Literal["succeeded", "retry", "failed", "gone"]


def new_endpoint_id() -> str:
    return f"we_{uuid.uuid4().hex}"


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def subscriptions(events: Sequence[str]) -> str:
    """The csv a fan-out matches (``*`` for everything)."""
    return "*" if "*" in events else ",".join(sorted(set(events)))


def iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- endpoints --------------------------------------------------------------------------------------------


def render_endpoint(record: Mapping[str, str]) -> dict[str, Any]:
    """An endpoint as the API answers it: never its secrets (those only on create and rotate)."""
    ep = record["id"]
    events = record.get("events", "*")

    def opt(name: str) -> str | None:
        return record.get(name) or None

    return {
        "id": ep,
        "url": record.get("url", ""),
        "events": ["*"] if events == "*" else [e for e in events.split(",") if e],
        "description": record.get("description", ""),
        "enabled": record.get("enabled") == "1",
        "state": record.get("state") or "healthy",
        "disabled_reason": opt("disabled_reason"),
        "health": {
            "consecutive_failures": int(record.get("consecutive_failures") or 0),
            "last_success_at": opt("last_success_at"),
            "last_failure_at": opt("last_failure_at"),
            "last_failure_code": int(record["last_failure_code"]) if record.get("last_failure_code") else None,
            "last_failure_error": opt("last_failure_error"),
            "failing_since": opt("failing_since"),
        },
        "created_at": opt("created_at"),
        "updated_at": opt("updated_at"),
        "secret_rotated_at": opt("secret_rotated_at"),
        "previous_secret_expires_at": (iso_ms(int(record["old_secret_until_ms"]))
                                       if record.get("old_secret") and record.get("old_secret_until_ms") else None),
        "links": {"self": f"/v1/webhooks/{ep}", "deliveries": f"/v1/webhooks/{ep}/deliveries"},
    }


def signing_secrets(record: Mapping[str, str], now_ms: int) -> list[str]:
    """The secrets that sign a delivery now: the current one, and the previous one during its grace period."""
    out = [record["secret"]]
    if record.get("old_secret") and int(record.get("old_secret_until_ms") or 0) > now_ms:
        out.append(record["old_secret"])
    return out


@dataclass(frozen=True)
class Saved:
    """What webhook_save did: ``new`` / ``updated``, ``replay`` (the key's first answer), ``missing`` (no such
    endpoint of this client) or ``too_many`` (the client has its most endpoints)."""

    outcome: Literal["new", "replay", "updated", "missing", "too_many"]
    endpoint_id: str
    fingerprint: str
    response_json: str


def _saved(reply: Any) -> Saved:
    outcome, ep, fingerprint, response = reply
    if outcome not in ("new", "replay", "updated", "missing", "too_many"):
        raise ValueError(f"unexpected webhook_save outcome {outcome!r}")
    return Saved(outcome, ep or "", fingerprint or "", response or "")


def save(*, client: str, endpoint_id: str, fields: Mapping[str, str], mode: Literal["create", "update", "rotate"],
         max_endpoints: int, idempotency_key: str = "", fingerprint: str = "", response_json: str = "",
         idempotency_ttl_s: int = 0) -> scripts.ScriptCall[Saved]:
    """Create or change an endpoint (and with an Idempotency-Key, record it)."""
    return scripts.call(
        "webhook_save",
        [keys.idempotency_key(client, idempotency_key) if idempotency_key else "", keys.webhook_key(endpoint_id),
         keys.client_webhooks_key(client), keys.client_webhooks_all_key(client)],
        [client, endpoint_id, fingerprint, response_json, idempotency_ttl_s, mode, max_endpoints,
         *(item for pair in fields.items() for item in pair)],
        _saved)


def delete(*, client: str, endpoint_id: str) -> scripts.ScriptCall[bool]:
    return scripts.call(
        "webhook_delete",
        [keys.webhook_key(endpoint_id), keys.client_webhooks_key(client), keys.client_webhooks_all_key(client)],
        [client, endpoint_id], lambda reply: bool(int(reply)))


def send_test(*, client: str, endpoint_id: str, idempotency_key: str, fingerprint: str, response_template: str,
              idempotency_ttl_s: int, now: str) -> scripts.ScriptCall[Saved]:
    """A ``webhook.test`` message to the endpoint (``response_template`` has ``{id}`` for its id)."""
    return scripts.call(
        "webhook_test", [keys.idempotency_key(client, idempotency_key), keys.webhook_key(endpoint_id)],
        [client, endpoint_id, fingerprint, response_template, idempotency_ttl_s, now], _saved)


def requeue(*, client: str, endpoint_id: str, message_ids: Sequence[str], now_ms: int,
            ttl_s: int) -> scripts.ScriptCall[tuple[int, int] | None]:
    """Send these messages again (same ids), in this order: (queued, already waiting), or None when the endpoint
    is not the client's."""
    def parse(reply: Any) -> tuple[int, int] | None:
        return None if int(reply[0]) < 0 else (int(reply[0]), int(reply[1]))

    return scripts.call("webhook_requeue", [], [endpoint_id, client, now_ms, ttl_s, *message_ids], parse)


# --- delivery -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claim:
    """A lane a deliverer holds: its head message goes out now, under ``token``. The claim brings what sending it
    needs (lib.lua's ``webhook_load``): the message, the command it tells of as the message's snapshot holds it
    (taken at its first claim; empty once the message's body is stored), and the endpoint's url and secrets."""

    endpoint_id: str
    lane: str
    message_id: str
    token: str
    message: dict[str, str] = field(default_factory=dict, repr=False)
    command: dict[str, str] = field(default_factory=dict, repr=False)
    endpoint: dict[str, str] = field(default_factory=dict, repr=False)


def _flat(items: list[Any]) -> dict[str, str]:
    return dict(zip(items[::2], items[1::2], strict=True))


def _loaded(ep: str, lane: str, message_id: str, token: str, loaded: list[Any]) -> Claim:
    message, endpoint = _flat(loaded[0]), _flat(loaded[1])
    snapshot = message.pop("snapshot", "")
    return Claim(ep, lane, message_id, token, message, _flat(json.loads(snapshot)) if snapshot else {}, endpoint)


def claim(*, now_ms: int, lease_ms: int, most: int, token: str) -> scripts.ScriptCall[list[Claim]]:
    def parse(reply: Any) -> list[Claim]:
        return [_loaded(*reply[i:i + 5]) for i in range(0, len(reply), 5)]

    return scripts.call("webhook_claim", [], [now_ms, lease_ms, most, token], parse)


@dataclass(frozen=True)
class Moved:
    """What recording an attempt did to the lane: ``next`` hands the lane's next message (claimed under
    ``token``) to the same deliverer; ``stale`` means the claim had lapsed and nothing was recorded."""

    state: Literal["stale", "later", "disabled", "idle", "next"]
    message_id: str = ""
    token: str = ""
    next: Claim | None = None  # with ``next``: the lane's next message, claimed, with what sending it needs


def record_result(c: Claim, *, outcome: Outcome, now_ms: int, next_ms: int, status: int | None, error: str,
                  lease_ms: int, next_token: str, body: bytes = b"") -> scripts.ScriptCall[Moved]:
    """Record an attempt; ``body`` is stored with it when the message had none yet (its first attempt's)."""
    def parse(reply: Any) -> Moved:
        if reply[0] != "next":
            return Moved(reply[0])
        return Moved("next", reply[1], reply[2], _loaded(c.endpoint_id, c.lane, reply[1], reply[2], reply[3]))

    return scripts.call(
        "webhook_result", [],
        [c.endpoint_id, c.lane, c.message_id, c.token, outcome, now_ms, iso_ms(now_ms), next_ms,
         iso_ms(next_ms) if next_ms else "", "" if status is None else status, error, lease_ms, next_token,
         body.decode()],
        parse)


def verdict(status: int | None, retry_after_s: float | None, *, round_: int, schedule: Sequence[float],
            rng: random.Random) -> tuple[Outcome, float]:
    """What an attempt's answer means, and how long until the next attempt (s).

    2xx succeeds; 410 disables the endpoint (Standard Webhooks); anything else (3xx included: redirects are never
    followed) is a failure retried after the schedule's next wait, jittered by ±20 % so endpoints that failed
    together do not all come back at once. A 429 or 503 with ``Retry-After`` waits what it asks instead, capped at
    a day. ``round_`` counts the failed attempts of this message since it was (re)queued: when the schedule is
    spent, the message has ``failed``.
    """
    if status is not None and 200 <= status < 300:
        return "succeeded", 0.0
    if status == 410:
        return "gone", 0.0
    if round_ >= len(schedule):
        return "failed", 0.0
    wait = schedule[round_] * rng.uniform(0.8, 1.2)
    if status in (429, 503) and retry_after_s is not None:
        wait = min(retry_after_s, 86_400.0)
    return "retry", wait


def body(message: Mapping[str, str], command: Mapping[str, str] | None) -> bytes:
    """The message's body, ``{"type", "timestamp", "data"}``, stored at its first attempt. ``data`` holds the
    lane's ``seq``, the call and room, and the command resource (``command.*``) or the event as callq stored it
    (``call.event``, ``room.event``).

    ``command`` is the record the message's snapshot holds (:class:`Claim`), not the command as it is now: so
    every attempt sends the same bytes, even after an attempt that went out but was never recorded (its deliverer
    killed, or its claim lapsed) while the command gained fields (an ACS answer that came after its event).
    """
    kind = message["type"]
    data: dict[str, Any] = {"seq": int(message["seq"]),
                            "call_connection_id": message.get("call_connection_id") or None,
                            "room_id": message.get("room_id") or None}
    if kind.startswith("command."):
        data["command"] = resource(Command.from_hash(command)) if command else {"id": message.get("command")}
    elif "event" in message:
        data["event"] = json.loads(message["event"])
    else:
        data = {"seq": int(message["seq"]), "endpoint_id": message["endpoint"],
                "message": "A test message from callq: your endpoint is reachable and your signature check works."}
    return json.dumps({"type": kind, "timestamp": message["at"], "data": data}, separators=(",", ":")).encode()


def signature(message_id: str, at: datetime, payload: bytes, keys_: Sequence[str]) -> str:
    """The ``webhook-signature`` header: one ``v1,`` entry per secret, space-separated."""
    text = payload.decode()
    return " ".join(Webhook(secret).sign(message_id, at, text) for secret in keys_)


def headers(message_id: str, at: datetime, payload: bytes, keys_: Sequence[str]) -> dict[str, str]:
    return {"content-type": "application/json", "user-agent": "callq-webhooks/1",
            "webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature(message_id, at, payload, keys_)}


def render_message(m: Mapping[str, str]) -> dict[str, Any]:
    """A message as the deliveries history shows it."""
    lane = m.get("lane", "")
    return {
        "id": m["id"],
        "type": m.get("type"),
        "status": m.get("status"),
        "seq": int(m.get("seq") or 0),
        "call_connection_id": m.get("call_connection_id") or None,
        "room_id": m.get("room_id") or None,
        "lane": lane,
        "attempts": int(m.get("attempts") or 0),
        "last_status_code": int(m["last_code"]) if m.get("last_code") else None,
        "last_error": m.get("last_error") or None,
        "next_attempt_at": m.get("next_attempt_at") or None,
        "created_at": iso_ms(int(m["created_ms"])) if m.get("created_ms") else None,
        "last_attempt_at": m.get("last_attempt_at") or None,
        "delivered_at": m.get("delivered_at") or None,
        "links": {"self": f"/v1/webhooks/{m.get('endpoint')}/deliveries/{m['id']}"},
    }
