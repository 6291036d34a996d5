"""Event Grid deliveries → typed results: a validation handshake to answer, or the events, normalised.

Accepted: the Event Grid schema (always a JSON array, ``application/json``) and CloudEvents 1.0, one object
(``application/cloudevents+json``) or an array (``application/cloudevents-batch+json``, or ``application/json``);
one delivery holds one schema. What makes a delivery or an event unusable is refused with a stable code (400
``invalid_json``, ``invalid_event``, ``validation_mixed``; 413 ``body_too_large``, ``too_many_events``; 415
``unsupported_media_type``); an optional field that is absent or odd becomes None instead, because a batch is
all-or-none and Event Grid never retries a 400: one odd field would drop every event delivered with it.

The CloudEvents schema replaces the validation event with an OPTIONS handshake (abuse protection):
:func:`webhook_grant` gives its response headers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.acs_event_fields import AcsFields, acs_fields
from workers.errors import InvalidCommand

# Event Grid sends an event of up to 1 MB alone and batches up to a preferred 1024 KB: twice that leaves room,
# and a 413 would not be retried.
MAX_BODY_BYTES = 2 * 1024 * 1024
MAX_EVENTS = 5000  # Event Grid's largest maxEventsPerBatch
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
JSON_TYPES = frozenset({"", "application/json", "text/json"})  # "": a sender that names none gets the benefit
CLOUDEVENTS_TYPES = frozenset({"application/cloudevents+json", "application/cloudevents-batch+json"})
_ORIGIN = re.compile(r"[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?")  # a DNS name (and port): echoed back in a header

Schema = Literal["eventgrid", "cloudevents"]


@dataclass(frozen=True)
class ValidationRequest:
    """Event Grid's subscription validation event: answer it with :meth:`response` (HTTP 200, the code echoed)."""

    code: str
    url: str | None  # for the manual (asynchronous) handshake: a GET within minutes also validates
    event_id: str
    schema: Schema

    def response(self) -> JSONResponse:
        return JSONResponse({"validationResponse": self.code}, status_code=200)  # 202 is not accepted


@dataclass(frozen=True)
class Event:
    """One delivered event in either schema; the ACS call fields it carries (see AcsFields) are in ``acs``."""

    id: str
    type: str  # eventType (Event Grid schema) or type (CloudEvents)
    time: datetime | None  # eventTime or time; None when absent or not a timestamp
    subject: str
    source: str  # topic (Event Grid schema) or source (CloudEvents): the ACS resource
    data: dict[str, Any]
    schema: Schema
    acs: AcsFields
    raw: dict[str, Any] = field(repr=False, compare=False)  # the event as delivered


@dataclass(frozen=True)
class Notifications:
    """A delivery of events (in delivery order, which Event Grid does not promise is the order they happened)."""

    events: tuple[Event, ...]
    schema: Schema


Delivery = ValidationRequest | Notifications


def _invalid(message: str, code: str = "invalid_event", **detail: object) -> InvalidCommand:
    return InvalidCommand(message, code=code, details=[detail] if detail else None)


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request's body, refused (413 ``body_too_large``) as soon as it is known to exceed ``limit``."""
    too_large = _invalid(f"An Event Grid delivery is at most {limit} bytes.", "body_too_large")
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # not request.body(): it would hold all of a lying sender's bytes first
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse_delivery(body: bytes, headers: Mapping[str, str]) -> Delivery:
    """Parse a delivery's body by its headers (``content-type``, ``aeg-event-type``); raises InvalidCommand."""
    lowered = {k.lower(): v for k, v in headers.items()}
    media_type = lowered.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in JSON_TYPES | CLOUDEVENTS_TYPES:
        raise _invalid("Event Grid deliveries are JSON (application/json or application/cloudevents+json).",
                       "unsupported_media_type")
    if len(body) > MAX_BODY_BYTES:
        raise _invalid(f"An Event Grid delivery is at most {MAX_BODY_BYTES} bytes.", "body_too_large")
    items, schema = _items(_json(body), cloudevents_only=media_type in CLOUDEVENTS_TYPES)
    events = [_event(item, schema, n) for n, item in enumerate(items)]
    validation = [e for e in events if e.type == VALIDATION_EVENT]
    announced = lowered.get("aeg-event-type", "").strip()
    if validation and len(events) > 1:
        raise _invalid("A subscription validation event must come alone, not with other events.",
                       "validation_mixed")
    if announced and (announced == "SubscriptionValidation") != bool(validation):
        raise _invalid(f"The aeg-event-type header says {announced!r}, which the body does not match.",
                       header="aeg-event-type")
    if validation:
        return _validation(validation[0])
    return Notifications(tuple(events), schema)


def _json(body: bytes) -> object:
    def refuse_constant(name: str) -> object:
        raise ValueError(name)  # NaN and Infinity are not JSON, and could not be stored and served back as JSON

    try:
        return json.loads(body, parse_constant=refuse_constant)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser's stack
        raise _invalid("The delivery is not JSON.", "invalid_json") from None


def _items(parsed: object, *, cloudevents_only: bool) -> tuple[list[dict[str, Any]], Schema]:
    """The delivery's events and their one schema, or a refusal naming what is wrong with the envelope."""
    if isinstance(parsed, dict):
        parsed_list: list[object] = [parsed]
    elif isinstance(parsed, list):
        parsed_list = parsed
    else:
        raise _invalid("A delivery is a JSON array of events, or one CloudEvent object.")
    if not parsed_list:
        raise _invalid("The delivery holds no events.")
    if len(parsed_list) > MAX_EVENTS:
        raise _invalid(f"A delivery holds at most {MAX_EVENTS} events.", "too_many_events")
    items: list[dict[str, Any]] = []
    for n, item in enumerate(parsed_list):
        if not isinstance(item, dict):
            raise _invalid("Each event must be a JSON object.", index=n)
        items.append(item)
    schemas = {"cloudevents" if "specversion" in item else "eventgrid" for item in items}
    if len(schemas) > 1:
        raise _invalid("A delivery holds events of one schema: Event Grid's or CloudEvents, not both.")
    schema: Schema = "cloudevents" if schemas == {"cloudevents"} else "eventgrid"
    if cloudevents_only and schema != "cloudevents":
        raise _invalid("A CloudEvents content type needs CloudEvents (specversion 1.0).", index=0,
                       field="specversion")
    if schema == "eventgrid" and not isinstance(parsed, list):
        raise _invalid("An Event Grid schema delivery is a JSON array, even for one event.")
    return items, schema


def _event(item: dict[str, Any], schema: Schema, n: int) -> Event:
    cloud = schema == "cloudevents"
    if cloud and item.get("specversion") != "1.0":
        raise _invalid("Only CloudEvents 1.0 is accepted.", index=n, field="specversion")
    type_field = "type" if cloud else "eventType"
    event_id, event_type = item.get("id"), item.get(type_field)
    if not isinstance(event_id, str) or not event_id:
        raise _invalid("Every event needs an id (a non-empty string).", index=n, field="id")
    if not isinstance(event_type, str) or not event_type:
        raise _invalid(f"Every event needs a {type_field} (a non-empty string).", index=n, field=type_field)
    data = item.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        # ACS sends objects; anything else is another kind of event, which callq could not read anyway.
        raise _invalid("An event's data must be a JSON object.", index=n, field="data")
    subject = _text(item.get("subject"))
    return Event(id=event_id, type=event_type, time=_time(item.get("time" if cloud else "eventTime")),
                 subject=subject, source=_text(item.get("source" if cloud else "topic")), data=data, schema=schema,
                 acs=acs_fields(event_type, subject, data), raw=item)


def _validation(event: Event) -> ValidationRequest:
    code, url = event.data.get("validationCode"), event.data.get("validationUrl")
    if not isinstance(code, str) or not code:
        raise _invalid("The validation event has no validationCode.", index=0, field="data.validationCode")
    return ValidationRequest(code=code, url=url if isinstance(url, str) and url else None, event_id=event.id,
                             schema=event.schema)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)  # 3.11+: "Z", and Event Grid's 7 fractional digits (truncated)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def webhook_grant(headers: Mapping[str, str]) -> dict[str, str]:
    """The response headers of a CloudEvents abuse-protection request (``OPTIONS``): consent for the origin.

    The origin is echoed (Event Grid's value is not documented); the rate granted is ``*`` because callq does not
    limit deliveries per sender. The answer reveals nothing and lets nothing in: every POST is still verified.
    """
    origin = {k.lower(): v for k, v in headers.items()}.get("webhook-request-origin", "").strip()
    if not _ORIGIN.fullmatch(origin):
        raise _invalid("An abuse-protection request needs a WebHook-Request-Origin header naming the sender's host.",
                       "bad_webhook_origin", header="WebHook-Request-Origin")
    return {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*", "Allow": "POST"}
