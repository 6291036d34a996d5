"""What the webhook routes answer, as pydantic models: the source of ``/openapi.json``'s webhook response schemas.

As in ``api.resources``, the routes build these bodies as plain dicts (``workers.webhooks.render_endpoint`` and
``render_message``); these models only describe them, and the contract test
(tests/integration/test_openapi_contract.py) checks that they do.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

State = Literal["healthy", "failing", "disabled"]
DeliveryStatus = Literal["pending", "succeeded", "failed"]


class WebhookHealth(BaseModel):
    consecutive_failures: int = Field(ge=0, description="failed attempts since the last success")
    last_success_at: str | None
    last_failure_at: str | None
    last_failure_code: int | None = Field(description="the HTTP status of the last failed attempt; null when it "
                                                      "got no answer (see last_failure_error)")
    last_failure_error: str | None = Field(description="timeout, connect_error, tls_error, forbidden_address, …")
    failing_since: str | None = Field(description="when a message first spent its whole retry schedule")


class WebhookEndpoint(BaseModel):
    """An endpoint of the client's: where callq POSTs which events, and how that is going. Never its secret."""

    id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    state: State = Field(description="failing: a message spent its retry schedule; disabled: by the client, or the "
                                     "endpoint answered 410 Gone")
    disabled_reason: Literal["by_client", "gone"] | None
    health: WebhookHealth
    created_at: str | None
    updated_at: str | None
    secret_rotated_at: str | None
    previous_secret_expires_at: str | None = Field(description="while a rotated-out secret still signs alongside "
                                                               "the new one")
    links: dict[str, str]


class WebhookEndpointWithSecret(WebhookEndpoint):
    """A new endpoint, with its signing secret: shown this once (and again only by a rotation)."""

    secret: str = Field(pattern="^whsec_", description="Standard Webhooks signing secret")


class WebhookPage(BaseModel):
    items: list[WebhookEndpoint] = Field(description="every endpoint of the client, oldest first")


class RotatedSecret(BaseModel):
    """A new signing secret; the previous one keeps signing alongside it until ``previous_secret_expires_at``."""

    id: str
    secret: str = Field(pattern="^whsec_")
    previous_secret_expires_at: str


class Delivery(BaseModel):
    """One message to one endpoint: every attempt of it carries the same ``webhook-id`` (its ``id``)."""

    id: str
    type: str | None = Field(description="command.succeeded, command.failed, call.event, room.event, webhook.test")
    status: DeliveryStatus | None
    seq: int = Field(ge=0, description="its place in its lane (one call or room, to this endpoint): 1, 2, 3 …")
    call_connection_id: str | None
    room_id: str | None
    lane: str
    attempts: int = Field(ge=0)
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str | None
    last_attempt_at: str | None
    delivered_at: str | None
    links: dict[str, str]


class DeliveryPage(BaseModel):
    items: list[Delivery] = Field(description="newest first")
    next: str | None = Field(description="the next page's URL, when there may be more")


class QueuedTest(BaseModel):
    """A ``webhook.test`` message, made and waiting for its delivery (follow ``links.self``)."""

    id: str
    type: Literal["webhook.test"]
    status: Literal["pending"]
    links: dict[str, str]


class Replayed(BaseModel):
    queued: int = Field(ge=0, description="messages put back in their lanes")
    already_waiting: int = Field(ge=0, description="messages still waiting in their lanes (made due now)")
    truncated: bool = Field(description="more messages matched than one replay sends: replay again from the last")


MODELS: tuple[type[BaseModel], ...] = (WebhookEndpoint, WebhookEndpointWithSecret, WebhookPage, RotatedSecret,
                                       Delivery, DeliveryPage, QueuedTest, Replayed)
