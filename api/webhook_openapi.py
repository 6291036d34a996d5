"""The webhook routes for ``/openapi.json`` (bodies from ``api.webhook_schemas``, answers from
``api.webhook_resources``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from api import webhook_resources
from api.schemas import Empty
from api.webhook_schemas import ReplayBody, WebhookBody, WebhookPatch
from api.webhooks import PAGE_MAX

MODELS: tuple[type[BaseModel], ...] = (WebhookBody, WebhookPatch, ReplayBody)
RESPONSE_MODELS = webhook_resources.MODELS
# Ids callq makes (we_…, msg_…) never hold a "/": a value with one would be another route's path.
_ID = {"type": "string", "minLength": 1, "pattern": "^[^/]+$"}
_WEBHOOK = {"name": "webhook_id", "in": "path", "required": True, "schema": _ID}
_DELIVERY = {"name": "delivery_id", "in": "path", "required": True, "schema": _ID}
_PAGE = [{"name": "limit", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}},
         {"name": "cursor", "in": "query", "required": False, "description": "the last id of the previous page",
          "schema": {"type": "string"}},
         {"name": "status", "in": "query", "required": False,
          "schema": {"type": "string", "enum": ["pending", "succeeded", "failed"]}}]
_LOCATION = {"Location": {"description": "the resource's URL", "schema": {"type": "string"}}}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def openapi_paths(idem: dict[str, Any], errors: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    def body(model: type[BaseModel], *, required: bool = True) -> dict[str, Any]:
        return {"required": required, "content": {"application/json": {"schema": _ref(model.__name__)}}}

    def ok(status: str, what: str, model: type[BaseModel] | None, *codes: int,
           location: bool = False) -> dict[str, Any]:
        answer: dict[str, Any] = {"description": what}
        if model is not None:
            answer["content"] = {"application/json": {"schema": _ref(model.__name__)}}
        if location:
            answer["headers"] = _LOCATION
        return {status: answer, **errors(*codes)}

    r = webhook_resources
    # A POST whose body is ignored still takes one (`{}`), as a command without parameters does.
    empty = body(Empty, required=False)
    posted = (400, 401, 404, 413, 415, 422)  # 400: a missing or malformed Idempotency-Key, or not JSON
    return {
        "/v1/webhooks": {
            "post": {"operationId": "create_webhook", "summary": "Register an endpoint; the answer holds its signing "
                     "secret, shown this once", "parameters": [idem], "requestBody": body(WebhookBody),
                     # 409: too_many_webhooks (CALLQ_WEBHOOK_MAX_ENDPOINTS)
                     "responses": ok("201", "created (or replayed)", r.WebhookEndpointWithSecret, 400, 401, 409, 413,
                                     415, 422, location=True)},
            "get": {"operationId": "list_webhooks", "summary": "Your endpoints, oldest first",
                    "responses": ok("200", "every endpoint", r.WebhookPage, 401)}},
        "/v1/webhooks/{webhook_id}": {
            "get": {"operationId": "get_webhook", "summary": "An endpoint and its health", "parameters": [_WEBHOOK],
                    "responses": ok("200", "the endpoint", r.WebhookEndpoint, 401, 404)},
            "patch": {"operationId": "update_webhook", "summary": "Change url, events, description or enabled; "
                      "enabling sends what waited, in order", "parameters": [_WEBHOOK],
                      "requestBody": body(WebhookPatch),
                      "responses": ok("200", "the endpoint", r.WebhookEndpoint, 400, 401, 404, 413, 415, 422)},
            "delete": {"operationId": "delete_webhook", "summary": "Delete an endpoint: nothing more is made for it",
                       "parameters": [_WEBHOOK], "responses": ok("204", "deleted", None, 401, 404)}},
        "/v1/webhooks/{webhook_id}/rotate-secret": {
            "post": {"operationId": "rotate_webhook_secret", "summary": "A new signing secret; the old one keeps "
                     "signing alongside it for CALLQ_WEBHOOK_ROTATION_GRACE_SECONDS",
                     "parameters": [_WEBHOOK, idem], "requestBody": empty,
                     "responses": ok("200", "the new secret (or replayed)", r.RotatedSecret, *posted,
                                     location=True)}},
        "/v1/webhooks/{webhook_id}/test": {
            "post": {"operationId": "test_webhook", "summary": "Send a webhook.test message now",
                     "parameters": [_WEBHOOK, idem], "requestBody": empty,
                     # 409: webhook_disabled
                     "responses": ok("202", "made, to be delivered (or replayed)", r.QueuedTest, 400, 401, 404, 409,
                                     413, 415, 422, location=True)}},
        "/v1/webhooks/{webhook_id}/deliveries": {
            "get": {"operationId": "list_webhook_deliveries", "summary": "The endpoint's messages, newest first, "
                    "paged with cursor; status filters", "parameters": [_WEBHOOK, *_PAGE],
                    "responses": ok("200", "a page of deliveries", r.DeliveryPage, 401, 404, 422)}},
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}": {
            "get": {"operationId": "get_webhook_delivery", "summary": "One delivery: status, attempts, last answer, "
                    "next attempt", "parameters": [_WEBHOOK, _DELIVERY],
                    "responses": ok("200", "the delivery", r.Delivery, 401, 404)}},
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/retry": {
            "post": {"operationId": "retry_webhook_delivery", "summary": "Send one delivery again (same webhook-id) "
                     "with a fresh retry schedule", "parameters": [_WEBHOOK, _DELIVERY, idem], "requestBody": empty,
                     "responses": ok("202", "queued again (or replayed)", r.Delivery, *posted)}},
        "/v1/webhooks/{webhook_id}/replay": {
            "post": {"operationId": "replay_webhook", "summary": "Send again everything made since a time, or since a "
                     "seq of one call or room, with the original ids and seqs", "parameters": [_WEBHOOK, idem],
                     "requestBody": body(ReplayBody),
                     "responses": ok("202", "queued again (or replayed)", r.Replayed, *posted)}},
    }
