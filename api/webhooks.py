"""Webhook routes: a client's endpoints, their deliveries, retries and replays (``workers.webhooks`` says what
callq promises about delivery).

Every POST takes an ``Idempotency-Key``: a create, rotation or test retried with its key answers as the first did
(the same endpoint, the same new secret, the same test message), and a retry or replay retried with its key
queues nothing more.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.auth import idempotency_key
from api.routes import read_json, validation_error
from api.schemas import Body, Empty
from api.webhook_schemas import ReplayBody, WebhookBody, WebhookPatch
from workers import commands, keys, webhooks
from workers.egress import EgressRefused, Policy, parse_url
from workers.errors import Conflict, IdempotencyKeyReused, InvalidCommand, WebhookNotFound

PAGE_DEFAULT, PAGE_MAX = 50, 200
REPLAY_MAX = 10_000  # messages one replay may send again
REQUEUE_CHUNK = 500
# Registration looks a name up only to refuse a forbidden address early; a resolver that does not answer must not
# hold the request (and its client) for the resolver's own timeouts (5 s per try, per server, per search domain).
RESOLVE_TIMEOUT_S = 2.0
_LIMIT = re.compile(r"[0-9]{1,9}")  # not str.isdigit(): it takes "²", which int() refuses
B = TypeVar("B", bound=Body)


async def _parse(request: Request, model: type[B], *, empty_ok: bool = False) -> B:
    data = await read_json(request, empty_ok=empty_ok)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc) from None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def _check_url(request: Request, url: str) -> str:
    """A URL callq may deliver to: http(s), and not a private, loopback, link-local or metadata address (unless
    CALLQ_WEBHOOK_ALLOWED_NETWORKS allows it). A name that does not resolve now (or not within RESOLVE_TIMEOUT_S) is
    accepted (DNS may not be set up yet); every delivery resolves and checks again, and connects to the address it
    checked."""
    policy = Policy(request.state.settings.webhook_allowed_networks)
    try:
        target = parse_url(url)
        async with asyncio.timeout(RESOLVE_TIMEOUT_S):
            await policy.resolve(target)
    except TimeoutError:
        pass  # as good as unresolvable now: accepted, and checked at every delivery
    except EgressRefused as exc:
        if exc.code != "webhook_url_unresolvable":
            raise InvalidCommand(exc.message, code=exc.code,
                                 details=[{"field": "url", "code": exc.code, "message": exc.message}]) from None
    return url


async def _own(request: Request, client: str) -> dict[str, str]:
    ep = request.path_params["webhook_id"]
    record: dict[str, str] = await request.state.redis.hgetall(keys.webhook_key(ep))
    if not record or record.get("client") != client:
        raise WebhookNotFound(f"No webhook endpoint {ep!r} belongs to this client.")
    return record


def _replayed(saved: webhooks.Saved, fingerprint: str, status: int, location: str) -> Response:
    if saved.fingerprint != fingerprint:
        raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request; "
                                   "use a new key for a new request.")
    return JSONResponse(json.loads(saved.response_json), status_code=status,
                        headers={"Location": location, "Idempotent-Replayed": "true"})


async def create_webhook(request: Request) -> Response:
    """Register an endpoint; the answer holds its signing secret, shown this once (and on rotation)."""
    state = request.state
    client = state.api_keys.client_for(request)
    idem = idempotency_key(request)
    body = await _parse(request, WebhookBody)
    fingerprint = commands.fingerprint("POST /v1/webhooks", body.model_dump(mode="json"))
    earlier = await state.redis.hmget(keys.idempotency_key(client, idem), "command_id", "fingerprint", "response")
    if earlier[0]:
        first = webhooks.Saved("replay", earlier[0], earlier[1] or "", earlier[2] or "")
        return _replayed(first, fingerprint, 201, f"/v1/webhooks/{first.endpoint_id}")
    await _check_url(request, body.url)
    ep, secret, now = webhooks.new_endpoint_id(), webhooks.new_secret(), _now_iso()
    fields = {"url": body.url, "events": webhooks.subscriptions(body.events), "description": body.description,
              "enabled": "1" if body.enabled else "0", "state": "healthy" if body.enabled else "disabled",
              "disabled_reason": "" if body.enabled else "by_client", "secret": secret, "created_at": now,
              "updated_at": now, "created_ms": str(int(time.time() * 1000)),
              "retention": str(state.settings.webhook_retention_s)}
    response = json.dumps({**webhooks.render_endpoint({"id": ep, **fields}), "secret": secret})
    saved: webhooks.Saved = await state.scripts.run(webhooks.save(
        client=client, endpoint_id=ep, fields=fields, mode="create", max_endpoints=state.settings.webhook_max_endpoints,
        idempotency_key=idem, fingerprint=fingerprint, response_json=response,
        idempotency_ttl_s=state.settings.idempotency_ttl_s))
    if saved.outcome == "too_many":
        raise Conflict(f"This client has {state.settings.webhook_max_endpoints} webhook endpoints, the most it may "
                       "have; delete one first.", code="too_many_webhooks")
    if saved.outcome == "replay":  # a concurrent request with the same key got there first
        return _replayed(saved, fingerprint, 201, f"/v1/webhooks/{saved.endpoint_id}")
    return JSONResponse(json.loads(saved.response_json), status_code=201,
                        headers={"Location": f"/v1/webhooks/{saved.endpoint_id}"})


async def list_webhooks(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    r = request.state.redis
    ids = await r.zrange(keys.client_webhooks_all_key(client), 0, -1)
    pipe = r.pipeline(transaction=False)
    for ep in ids:
        pipe.hgetall(keys.webhook_key(ep))
    records = await pipe.execute() if ids else []
    return JSONResponse({"items": [webhooks.render_endpoint(rec) for rec in records if rec]})


async def get_webhook(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    return JSONResponse(webhooks.render_endpoint(await _own(request, client)))


async def patch_webhook(request: Request) -> Response:
    """Change url, events, description or enabled; enabling an endpoint again sends what waited, in order."""
    state = request.state
    client = state.api_keys.client_for(request)
    body = await _parse(request, WebhookPatch)
    record = await _own(request, client)
    fields: dict[str, str] = {"updated_at": _now_iso()}
    if body.url is not None:
        fields["url"] = await _check_url(request, body.url)
    if body.events is not None:
        fields["events"] = webhooks.subscriptions(body.events)
    if body.description is not None:
        fields["description"] = body.description
    if body.enabled is True and record.get("enabled") != "1":
        fields.update(enabled="1", state="healthy", disabled_reason="", failing_since="", consecutive_failures="0")
    elif body.enabled is False:
        fields.update(enabled="0", state="disabled", disabled_reason="by_client")
    saved = await state.scripts.run(webhooks.save(client=client, endpoint_id=record["id"], fields=fields,
                                                  mode="update", max_endpoints=state.settings.webhook_max_endpoints))
    if saved.outcome == "missing":
        raise WebhookNotFound(f"No webhook endpoint {record['id']!r} belongs to this client.")
    return JSONResponse(webhooks.render_endpoint(await _own(request, client)))


async def delete_webhook(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    ep = request.path_params["webhook_id"]
    if not await request.state.scripts.run(webhooks.delete(client=client, endpoint_id=ep)):
        raise WebhookNotFound(f"No webhook endpoint {ep!r} belongs to this client.")
    return Response(status_code=204)


async def _keyed_action(request: Request) -> tuple[str, str, dict[str, str]]:
    """A body-less POST on an endpoint (rotate, test): its client, Idempotency-Key and the endpoint's record."""
    client = request.state.api_keys.client_for(request)
    idem = idempotency_key(request)
    await _parse(request, Empty, empty_ok=True)
    return client, idem, await _own(request, client)


async def rotate_secret(request: Request) -> Response:
    """A new signing secret; the old one keeps signing alongside it for CALLQ_WEBHOOK_ROTATION_GRACE_SECONDS."""
    state = request.state
    client, idem, record = await _keyed_action(request)
    fingerprint = commands.fingerprint(f"POST /v1/webhooks/{record['id']}/rotate-secret", {})
    earlier = await state.redis.hmget(keys.idempotency_key(client, idem), "command_id", "fingerprint", "response")
    location = f"/v1/webhooks/{record['id']}"
    if earlier[0]:
        return _replayed(webhooks.Saved("replay", earlier[0], earlier[1] or "", earlier[2] or ""), fingerprint, 200,
                         location)
    secret, now_ms = webhooks.new_secret(), int(time.time() * 1000)
    until_ms = now_ms + state.settings.webhook_rotation_grace_s * 1000
    fields = {"secret": secret, "old_secret_until_ms": str(until_ms), "secret_rotated_at": _now_iso(),
              "updated_at": _now_iso()}
    response = json.dumps({"id": record["id"], "secret": secret,
                           "previous_secret_expires_at": webhooks.iso_ms(until_ms)})
    saved = await state.scripts.run(webhooks.save(
        client=client, endpoint_id=record["id"], fields=fields, mode="rotate",
        max_endpoints=state.settings.webhook_max_endpoints, idempotency_key=idem, fingerprint=fingerprint,
        response_json=response, idempotency_ttl_s=state.settings.idempotency_ttl_s))
    if saved.outcome == "missing":
        raise WebhookNotFound(f"No webhook endpoint {record['id']!r} belongs to this client.")
    if saved.outcome == "replay":
        return _replayed(saved, fingerprint, 200, location)
    return JSONResponse(json.loads(saved.response_json), headers={"Location": location})


async def test_webhook(request: Request) -> Response:
    """Send a ``webhook.test`` message now (202 with the delivery to follow)."""
    state = request.state
    client, idem, record = await _keyed_action(request)
    if record.get("enabled") != "1":
        raise Conflict("This endpoint is disabled; enable it (PATCH {\"enabled\": true}) to test it.",
                       code="webhook_disabled")
    ep = record["id"]
    fingerprint = commands.fingerprint(f"POST /v1/webhooks/{ep}/test", {})
    template = json.dumps({"id": "{id}", "type": webhooks.TEST_TYPE, "status": "pending",
                           "links": {"self": f"/v1/webhooks/{ep}/deliveries/{{id}}"}})
    saved = await state.scripts.run(webhooks.send_test(
        client=client, endpoint_id=ep, idempotency_key=idem, fingerprint=fingerprint, response_template=template,
        idempotency_ttl_s=state.settings.idempotency_ttl_s, now=_now_iso()))
    if saved.outcome == "missing":
        raise WebhookNotFound(f"No webhook endpoint {ep!r} belongs to this client.")
    location = f"/v1/webhooks/{ep}/deliveries/{saved.endpoint_id}"
    if saved.outcome == "replay":
        return _replayed(saved, fingerprint, 202, location)
    return JSONResponse(json.loads(saved.response_json), status_code=202, headers={"Location": location})


async def list_deliveries(request: Request) -> Response:
    """Newest first, ``limit`` per page; ``cursor`` is the last id of the previous page; ``status`` filters
    (pending, succeeded, failed) among the next 1,000 messages."""
    client = request.state.api_keys.client_for(request)
    record = await _own(request, client)
    r = request.state.redis
    limit = _limit(request)
    status = request.query_params.get("status")
    if status is not None and status not in ("pending", "succeeded", "failed"):
        raise InvalidCommand("status must be pending, succeeded or failed.", code="invalid_status_filter")
    index = keys.webhook_messages_key(record["id"])
    start = 0
    cursor = request.query_params.get("cursor")
    if cursor:
        rank = await r.zrevrank(index, cursor)
        if rank is None:
            raise InvalidCommand("cursor is not a delivery of this endpoint (or it has expired).",
                                 code="invalid_cursor")
        start = rank + 1
    scan = limit if status is None else 1000
    ids = await r.zrevrange(index, start, start + scan - 1)
    messages = await _messages(request, ids)
    items = [m for m in messages if status is None or m.get("status") == status][:limit]
    page: dict[str, Any] = {"items": [webhooks.render_message(m) for m in items]}
    last = items[-1]["id"] if len(items) == limit else (ids[-1] if status is not None and len(ids) == scan else None)
    page["next"] = (f"/v1/webhooks/{record['id']}/deliveries?limit={limit}&cursor={last}"
                    + (f"&status={status}" if status else "")) if last else None
    return JSONResponse(page)


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", str(PAGE_DEFAULT))
    if not _LIMIT.fullmatch(raw) or not 1 <= int(raw) <= PAGE_MAX:
        raise InvalidCommand(f"limit must be a whole number from 1 to {PAGE_MAX}.", code="invalid_limit")
    return int(raw)


async def _messages(request: Request, ids: list[str]) -> list[dict[str, str]]:
    if not ids:
        return []
    pipe = request.state.redis.pipeline(transaction=False)
    for mid in ids:
        pipe.hgetall(keys.webhook_message_key(mid))
    return [m for m in await pipe.execute() if m]


async def _own_message(request: Request, client: str) -> tuple[dict[str, str], dict[str, str]]:
    record = await _own(request, client)
    mid = request.path_params["delivery_id"]
    message: dict[str, str] = await request.state.redis.hgetall(keys.webhook_message_key(mid))
    if not message or message.get("endpoint") != record["id"]:
        raise WebhookNotFound(f"No delivery {mid!r} of this endpoint (kept for "
                              f"{request.state.settings.webhook_retention_s} s).", code="delivery_not_found")
    return record, message


async def get_delivery(request: Request) -> Response:
    client = request.state.api_keys.client_for(request)
    _, message = await _own_message(request, client)
    return JSONResponse(webhooks.render_message(message))


async def _once(request: Request, client: str, route: str, params: Mapping[str, Any]) -> tuple[str, str, Any]:
    """(idempotency hash key, fingerprint, the first answer under this key or None)."""
    idem = idempotency_key(request)
    fingerprint = commands.fingerprint(route, dict(params))
    key = keys.idempotency_key(client, idem)
    earlier = await request.state.redis.hmget(key, "command_id", "fingerprint", "response")
    if earlier[0] and earlier[1] != fingerprint:
        raise IdempotencyKeyReused("This Idempotency-Key was already used with a different request; "
                                   "use a new key for a new request.")
    return key, fingerprint, json.loads(earlier[2]) if earlier[0] else None


async def _remember(request: Request, key: str, made: str, fingerprint: str, response: Any) -> None:
    pipe = request.state.redis.pipeline(transaction=False)
    pipe.hsetnx(key, "command_id", made)
    pipe.hset(key, mapping={"fingerprint": fingerprint, "response": json.dumps(response)})
    pipe.expire(key, request.state.settings.idempotency_ttl_s)
    await pipe.execute()


async def retry_delivery(request: Request) -> Response:
    """Send one delivery again (same ``webhook-id``), with a fresh retry schedule; one that is still waiting in
    its lane is tried at once instead of after its backoff."""
    state = request.state
    client = state.api_keys.client_for(request)
    record, message = await _own_message(request, client)
    key, fingerprint, earlier = await _once(request, client, f"POST {request.url.path}", {})
    if earlier is not None:
        return JSONResponse(earlier, status_code=202, headers={"Idempotent-Replayed": "true"})
    await _parse(request, Empty, empty_ok=True)
    await state.scripts.run(webhooks.requeue(client=client, endpoint_id=record["id"], message_ids=[message["id"]],
                                             now_ms=int(time.time() * 1000), ttl_s=state.settings.webhook_retention_s))
    _, message = await _own_message(request, client)
    answer = webhooks.render_message(message)
    await _remember(request, key, message["id"], fingerprint, answer)
    return JSONResponse(answer, status_code=202)


async def replay(request: Request) -> Response:
    """Send again every message made since a time, or since a ``seq`` of one call or room, oldest first: per lane
    in the order they were made, with their original ids and seqs."""
    state = request.state
    client = state.api_keys.client_for(request)
    body = await _parse(request, ReplayBody)
    record = await _own(request, client)
    key, fingerprint, earlier = await _once(request, client, f"POST {request.url.path}", body.model_dump(mode="json"))
    if earlier is not None:
        return JSONResponse(earlier, status_code=202, headers={"Idempotent-Replayed": "true"})
    r = state.redis
    index = keys.webhook_messages_key(record["id"])
    since_ms = int(body.since.timestamp() * 1000) if body.since else "-inf"
    ids: list[str] = await r.zrangebyscore(index, since_ms, "+inf", start=0, num=REPLAY_MAX)
    if body.since_seq is not None:
        lane = body.call_connection_id or f"room:{body.room_id}"
        pipe = r.pipeline(transaction=False)
        for mid in ids:
            pipe.hmget(keys.webhook_message_key(mid), "lane", "seq")
        found = await pipe.execute() if ids else []
        ids = [mid for mid, (ln, seq) in zip(ids, found, strict=True)
               if ln == lane and seq and int(seq) >= body.since_seq]
    queued = waiting = 0
    now_ms = int(time.time() * 1000)
    for i in range(0, len(ids), REQUEUE_CHUNK):
        moved = await state.scripts.run(webhooks.requeue(
            client=client, endpoint_id=record["id"], message_ids=ids[i:i + REQUEUE_CHUNK], now_ms=now_ms,
            ttl_s=state.settings.webhook_retention_s))
        if moved is None:
            raise WebhookNotFound(f"No webhook endpoint {record['id']!r} belongs to this client.")
        queued, waiting = queued + moved[0], waiting + moved[1]
    answer = {"queued": queued, "already_waiting": waiting, "truncated": len(ids) >= REPLAY_MAX}
    await _remember(request, key, f"replay:{record['id']}", fingerprint, answer)
    return JSONResponse(answer, status_code=202)


ID = "/v1/webhooks/{webhook_id}"
webhook_routes = [
    Route("/v1/webhooks", create_webhook, methods=["POST"]),
    Route("/v1/webhooks", list_webhooks, methods=["GET"]),
    Route(ID, get_webhook, methods=["GET"]),
    Route(ID, patch_webhook, methods=["PATCH"]),
    Route(ID, delete_webhook, methods=["DELETE"]),
    Route(f"{ID}/rotate-secret", rotate_secret, methods=["POST"]),
    Route(f"{ID}/test", test_webhook, methods=["POST"]),
    Route(f"{ID}/deliveries", list_deliveries, methods=["GET"]),
    Route(f"{ID}/deliveries/{{delivery_id}}", get_delivery, methods=["GET"]),
    Route(f"{ID}/deliveries/{{delivery_id}}/retry", retry_delivery, methods=["POST"]),
    Route(f"{ID}/replay", replay, methods=["POST"]),
]
