"""Event Grid's admin routes (``/_sim/eventgrid/…``) and the public ones a webhook uses: the asynchronous
validation URL and the Entra OpenID/JWKS documents. See eventgrid.py for the delivery rules."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .eventgrid import EventGrid, config_from_json
from .runtime import Runtime


def _rt(request: Request) -> Runtime:
    return request.state.runtime  # type: ignore[no-any-return]  # Starlette state is untyped


def _eg(request: Request) -> EventGrid:
    return _rt(request).eventgrid


def _error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _full(request: Request) -> bool:
    return request.query_params.get("include_full_endpoint_url", "").lower() in ("1", "true", "yes")


async def put_subscription(request: Request) -> Response:
    """Create (201) or replace (200) a subscription: ``{"endpoint_url", "schema", "tenant_id", "audience",
    "max_events_per_batch", "retry_scale"}``; its handshake starts at once."""
    name = request.path_params["name"]
    try:
        raw = await request.body()
        data: Any = json.loads(raw) if raw.strip() else {}
        config = config_from_json(name, data, retry_scale=_rt(request).settings.eventgrid_retry_scale)
    except ValueError as exc:  # JSONDecodeError is one
        return _error(400, "bad_request", str(exc))
    sub, created = _eg(request).put(config)
    return JSONResponse(sub.to_json(full_url=_full(request)), status_code=201 if created else 200)


async def get_subscription(request: Request) -> Response:
    """One subscription with its state (``status``: AwaitingValidation | Succeeded)."""
    sub = _eg(request).subscriptions.get(request.path_params["name"])
    if sub is None:
        return _error(404, "not_found", f"no subscription {request.path_params['name']!r}")
    return JSONResponse(sub.to_json(full_url=_full(request)))


async def list_subscriptions(request: Request) -> Response:
    """Every subscription."""
    full = _full(request)
    return JSONResponse([sub.to_json(full_url=full) for sub in _eg(request).subscriptions.values()])


async def delete_subscription(request: Request) -> Response:
    """Delete a subscription: its queued and retrying deliveries stop."""
    if not await _eg(request).delete(request.path_params["name"]):
        return _error(404, "not_found", f"no subscription {request.path_params['name']!r}")
    return Response(status_code=204)


async def deliveries(request: Request) -> Response:
    """Every handshake and delivery attempt, oldest first; filter with ``?subscription=&outcome=&kind=``."""
    wanted = {k: request.query_params[k] for k in ("subscription", "outcome", "kind") if k in request.query_params}
    entries = [e for e in _eg(request).log if all(e.get(k) == v for k, v in wanted.items())]
    return JSONResponse(entries)


async def validate(request: Request) -> Response:
    """The ``validationUrl`` of a SubscriptionValidationEvent: a GET validates the subscription."""
    if _eg(request).validate_by_url(request.path_params["name"], request.query_params.get("id", "")):
        return PlainTextResponse("Webhook successfully validated as a result of user action.")
    return PlainTextResponse("Unknown subscription or validation code.", status_code=400)


async def openid_configuration(request: Request) -> Response:
    """``{public_url}/entra/{tenant}/v2.0/.well-known/openid-configuration``."""
    return JSONResponse(_rt(request).entra.openid_configuration(request.path_params["tenant"]))


async def jwks(request: Request) -> Response:
    """``{public_url}/entra/{tenant}/discovery/v2.0/keys``."""
    return JSONResponse(_rt(request).entra.jwks())


ADMIN_ROUTES = [
    Route("/eventgrid/subscriptions", list_subscriptions),
    Route("/eventgrid/subscriptions/{name}", put_subscription, methods=["PUT"]),
    Route("/eventgrid/subscriptions/{name}", get_subscription, methods=["GET"]),
    Route("/eventgrid/subscriptions/{name}", delete_subscription, methods=["DELETE"]),
    Route("/eventgrid/deliveries", deliveries),
]

PUBLIC_ROUTES = [
    Route("/eventgrid/eventsubscriptions/{name}/validate", validate),
    Route("/entra/{tenant}/v2.0/.well-known/openid-configuration", openid_configuration),
    Route("/entra/{tenant}/discovery/v2.0/keys", jwks),
]
