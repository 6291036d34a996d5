"""What the operator page shows of webhooks: the client's endpoints with their health, and one endpoint's recent
deliveries with the failing ones marked.

Read from the records the webhook scripts write (``workers.webhooks``: webhook_save.lua, lib.lua's
``webhook_add``, webhook_result.lua); like ``api.ui_data``, everything here is plain text for the autoescaped
templates, and a value that is not what those writers write shows as it is (or as unknown), never failing the page.
"""

from __future__ import annotations

from typing import Any

from api.ui_data import managed_rooms
from workers import keys, webhooks

ENDPOINTS_SHOWN = 50  # CALLQ_WEBHOOK_MAX_ENDPOINTS is 20 by default
DELIVERIES_SHOWN = 100


def _count(raw: str | None) -> int | None:
    """A stored count (0 when there is none yet), or None when it is not a count (shown as unknown)."""
    if not raw:
        return 0
    return int(raw) if raw.isascii() and raw.isdigit() else None


def _events(raw: str | None) -> str:
    return "all" if not raw or raw == "*" else ", ".join(e for e in raw.split(",") if e)


def _endpoint(record: dict[str, str], waiting: int) -> dict[str, Any]:
    """An endpoint's row: where it points, what it takes, its state and health, and how many lanes wait."""
    code = record.get("last_failure_code") or ""
    return {"id": record.get("id", ""), "url": record.get("url", ""), "events": _events(record.get("events")),
            "description": record.get("description") or "", "state": record.get("state") or "healthy",
            "disabled_reason": record.get("disabled_reason") or "",
            "failures": _count(record.get("consecutive_failures")),
            "last_success_at": record.get("last_success_at") or "",
            "last_failure_at": record.get("last_failure_at") or "",
            # An attempt without an HTTP answer has no code: its error (timeout, connect_error …) says why.
            "last_failure": " ".join(p for p in (code, record.get("last_failure_error") or "") if p),
            "failing_since": record.get("failing_since") or "", "messages": _count(record.get("messages")),
            "waiting": waiting, "created_at": record.get("created_at") or ""}


async def overview(r: Any, client: str) -> dict[str, Any]:
    """The overview's endpoints, oldest first (as GET /v1/webhooks lists them), and how many more there are.

    ``waiting`` is the number of the endpoint's lanes (calls, rooms) holding messages not yet delivered: one SCARD
    each. Counting the messages themselves, or the failed ones, would read every lane or message: the endpoint's
    page counts those among its latest deliveries instead.
    """
    index = keys.client_webhooks_all_key(client)
    ids = await r.zrange(index, 0, ENDPOINTS_SHOWN - 1)
    pipe = r.pipeline(transaction=False)
    pipe.zcard(index)
    for ep in ids:
        pipe.hgetall(keys.webhook_key(ep))
        pipe.scard(keys.webhook_lanes_key(ep))
    total, *found = await pipe.execute()
    hooks = [_endpoint(rec, int(waiting)) for rec, waiting in zip(found[::2], found[1::2], strict=True)
             if rec.get("client") == client]  # deleted between the two reads: not shown
    return {"webhooks": hooks, "webhooks_more": max(int(total) - len(ids), 0)}


def _trouble(m: dict[str, str]) -> str:
    """``failed`` (its retry schedule is spent), ``retrying`` (pending after a failed attempt), else ''."""
    if m.get("status") == "failed":
        return "failed"
    if m.get("status") == "pending" and (m.get("last_code") or m.get("last_error")):
        return "retrying"
    return ""


def _created(raw: str | None) -> str:
    return webhooks.iso_ms(int(raw)) if raw and raw.isascii() and raw.isdigit() else ""


def _delivery(m: dict[str, str], managed: set[str]) -> dict[str, Any]:
    room_id = m.get("room_id") or ""
    return {"id": m.get("id", ""), "type": m.get("type") or "", "seq": m.get("seq") or "",
            "call": m.get("call_connection_id") or "", "room_id": room_id, "room_managed": room_id in managed,
            "lane": m.get("lane") or "", "command": m.get("command") or "", "status": m.get("status") or "unknown",
            "trouble": _trouble(m), "attempts": m.get("attempts") or "0",
            "last_answer": " ".join(p for p in (m.get("last_code") or "", m.get("last_error") or "") if p),
            "next_attempt_at": m.get("next_attempt_at") or "", "created_at": _created(m.get("created_ms")),
            "last_attempt_at": m.get("last_attempt_at") or "", "delivered_at": m.get("delivered_at") or ""}


async def endpoint(r: Any, client: str, endpoint_id: str) -> dict[str, Any] | None:
    """An endpoint's context: its details and health, and its latest deliveries (newest first) with counts by
    status among them; None if the client has no such endpoint."""
    record = await r.hgetall(keys.webhook_key(endpoint_id))
    if not record or record.get("client") != client:
        return None
    index = keys.webhook_messages_key(endpoint_id)
    pipe = r.pipeline(transaction=False)
    pipe.scard(keys.webhook_lanes_key(endpoint_id))
    pipe.zcard(index)
    pipe.zrevrange(index, 0, DELIVERIES_SHOWN - 1)
    waiting, total, ids = await pipe.execute()
    pipe = r.pipeline(transaction=False)
    for mid in ids:
        pipe.hgetall(keys.webhook_message_key(mid))
    messages = [m for m in await pipe.execute() if m] if ids else []  # expired between the two reads: not shown
    managed = await managed_rooms(r, client, sorted({m["room_id"] for m in messages if m.get("room_id")}))
    deliveries = [_delivery(m, managed) for m in messages]
    counts = {kind: sum(1 for d in deliveries if d["status"] == kind) for kind in ("pending", "succeeded", "failed")}
    counts["retrying"] = sum(1 for d in deliveries if d["trouble"] == "retrying")
    return {"hook": _endpoint(record, int(waiting)), "deliveries": deliveries, "deliveries_total": int(total),
            "counts": counts}
