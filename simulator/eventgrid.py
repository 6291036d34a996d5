"""Event Grid for the ACS resource: webhook subscriptions, their validation handshake, delivery with Event Grid's
retry policy, Entra bearer tokens, fault knobs and a delivery log (rooms-and-eventgrid.md §2).

- **Validation first.** A subscription starts ``AwaitingValidation`` and delivers nothing until its endpoint passed
  the handshake; events published meanwhile are never delivered (as with real Event Grid, where the subscription
  does not exist yet). Unlike Event Grid, which fails the subscription, the handshake is retried (0.5 s doubling to
  30 s, × ``retry_scale``) for as long as the subscription exists, so ``callq up`` may start the simulator before
  the webhook listens. Event Grid schema: a POST of ``[SubscriptionValidationEvent]`` with ``aeg-event-type:
  SubscriptionValidation``, passed only by 200 + ``{"validationResponse": <code>}``; or (asynchronous handshake)
  a GET of the event's ``validationUrl``, ``{public_url}/eventgrid/eventsubscriptions/{name}/validate?id=<code>…``
  (codes of earlier attempts stay good). CloudEvents: ``OPTIONS`` with ``WebHook-Request-Origin:
  eventgrid.azure.net``, passed by 200-204 with ``WebHook-Allowed-Origin`` equal to it or ``*``. With Entra set,
  the handshake carries the bearer token too (whether Event Grid's does: not found).
- **Notifications.** Event Grid schema: ``application/json; charset=utf-8``, always an array. CloudEvents: one
  event per POST as an object (``application/cloudevents+json; charset=utf-8``), or — when
  ``max_events_per_batch`` > 1 — always an array (``application/cloudevents-batch+json; charset=utf-8``; Event
  Grid's batched content type: not found). Headers ``aeg-event-type: Notification``, ``aeg-subscription-name``
  (upper-cased, as Event Grid shows it), ``aeg-delivery-count`` (0 on the first attempt), ``aeg-data-version``,
  ``aeg-metadata-version``; the endpoint URL is used as given, secret query parameters included.
- **Retries.** Success is 200-204 only; 400, 401, 403 and 413 are dropped at once; anything else, or no answer
  within ``eventgrid_timeout_s``, is retried after 10 s, 30 s, 1 min, 5 min, 10 min, 30 min, 1 h, 3 h, 6 h, then
  every 12 h — each × ``retry_scale`` and jittered ±10 % — until 30 attempts or 24 h (× ``retry_scale``) since the
  event was published; then it is dropped (no dead-lettering). A batch succeeds or fails as a whole. Batches go
  side by side (a retrying one holds nothing back): no ordering, at least once.
- **Faults** (``/_sim/faults`` ``eventgrid_*``): ``drop_rate`` (never sent, logged ``dropped_by_fault``),
  ``duplicate_rate`` (sent again, same id, in a later POST), ``reorder`` (events ready together are shuffled
  before batching), ``delay_ms`` (held before the first attempt), ``target_down`` (every POST and handshake fails
  as if unreachable, and is retried per the policy).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import secrets
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from .acs_events import Event, timestamp
from .entra import EntraSigner
from .faults import Faults
from .settings import EVENTGRID_SCHEMAS, MAX_EVENTS_PER_BATCH, Settings

VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
SCHEDULE_S = (10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 10800.0, 21600.0)
THEN_EVERY_S = 43200.0
MAX_ATTEMPTS = 30
TIME_TO_LIVE_S = 86400.0
NOT_RETRIED = frozenset({400, 401, 403, 413})
HANDSHAKE_FIRST_WAIT_S, HANDSHAKE_MAX_WAIT_S = 0.5, 30.0
ORIGIN = "eventgrid.azure.net"
ENV_SUBSCRIPTION = "callq"
MAX_IN_FLIGHT = 16  # POSTs per subscription at once
LOG_MAX = 100_000
CLOSE_WAIT_S = 2.0
_NAME = re.compile(r"[A-Za-z0-9-]{3,64}")
logger = logging.getLogger("simulator.eventgrid")


@dataclass(frozen=True)
class SubscriptionConfig:
    """What a subscription was created with (environment or ``PUT /_sim/eventgrid/subscriptions/{name}``)."""

    name: str
    endpoint_url: str = field(repr=False)  # may carry a secret
    schema: str = "EventGridSchema"
    tenant_id: str = ""
    audience: str = ""
    max_events_per_batch: int = 1
    retry_scale: float = 1.0
    source: str = "admin"  # "env" survives POST /_sim/reset

    @property
    def entra(self) -> bool:
        """True when deliveries carry an Entra bearer token."""
        return bool(self.tenant_id and self.audience)

    def to_json(self, *, full_url: bool = False) -> dict[str, Any]:
        """As the admin API shows it; the full URL (with any secret) only on request, like ``az``'s
        ``--include-full-endpoint-url``."""
        parts = urlsplit(self.endpoint_url)
        data: dict[str, Any] = {
            "name": self.name,
            "endpoint_base_url": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
            "schema": self.schema,
            "tenant_id": self.tenant_id,
            "audience": self.audience,
            "max_events_per_batch": self.max_events_per_batch,
            "retry_scale": self.retry_scale,
            "source": self.source,
        }
        if full_url:
            data["endpoint_url"] = self.endpoint_url
        return data


def config_from_env(settings: Settings) -> SubscriptionConfig | None:
    """The subscription ``CALLQ_SIM_EVENTGRID_*`` asks for, if any."""
    if not settings.eventgrid_url:
        return None
    return SubscriptionConfig(ENV_SUBSCRIPTION, settings.eventgrid_url, settings.eventgrid_schema,
                              settings.eventgrid_tenant_id, settings.eventgrid_audience,
                              settings.eventgrid_max_events_per_batch, settings.eventgrid_retry_scale, "env")


def config_from_json(name: str, data: Any, *, retry_scale: float) -> SubscriptionConfig:
    """A subscription from an admin PUT body; raises ValueError naming the first bad field."""
    if not _NAME.fullmatch(name):
        raise ValueError("the subscription name must be 3-64 letters, digits or hyphens")
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    known = {"endpoint_url", "schema", "tenant_id", "audience", "max_events_per_batch", "retry_scale"}
    if set(data) - known:
        raise ValueError(f"unknown field(s) {sorted(set(data) - known)}; known: {sorted(known)}")
    url = data.get("endpoint_url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise ValueError("endpoint_url must be an http(s) URL")
    schema = data.get("schema", "EventGridSchema")
    if schema not in EVENTGRID_SCHEMAS:
        raise ValueError(f"schema must be one of {list(EVENTGRID_SCHEMAS)}")
    tenant, audience = data.get("tenant_id") or "", data.get("audience") or ""
    if not isinstance(tenant, str) or not isinstance(audience, str) or bool(tenant) != bool(audience):
        raise ValueError("tenant_id and audience go together: both strings (Entra tokens) or neither")
    batch = data.get("max_events_per_batch", 1)
    if not isinstance(batch, int) or isinstance(batch, bool) or not 1 <= batch <= MAX_EVENTS_PER_BATCH:
        raise ValueError(f"max_events_per_batch must be an integer 1-{MAX_EVENTS_PER_BATCH}")
    scale = data.get("retry_scale", retry_scale)
    if not isinstance(scale, int | float) or isinstance(scale, bool) or not scale > 0:
        raise ValueError("retry_scale must be a number > 0")
    return SubscriptionConfig(name, url, schema, tenant, audience, batch, float(scale))


def retry_wait_s(attempt: int, status: int | None, *, elapsed_s: float, scale: float) -> float | None:
    """Event Grid's unjittered wait after failed attempt number ``attempt`` (1-based), or None to give up."""
    if status in NOT_RETRIED or attempt >= MAX_ATTEMPTS:
        return None
    wait = (SCHEDULE_S[attempt - 1] if attempt <= len(SCHEDULE_S) else THEN_EVERY_S) * scale
    if elapsed_s + wait > TIME_TO_LIVE_S * scale:
        return None
    return wait


def handshake_wait_s(attempt: int, *, scale: float) -> float:
    """Wait after failed handshake number ``attempt``: 0.5 s doubling, at most 30 s, × ``scale``."""
    return float(min(HANDSHAKE_MAX_WAIT_S, HANDSHAKE_FIRST_WAIT_S * 2 ** (attempt - 1)) * scale)


def envelope(event: Event, topic: str, event_time_s: float | None = None) -> dict[str, Any]:
    """One event in the Event Grid schema."""
    event_type, subject, data = event
    return {"id": str(uuid.uuid4()), "topic": topic, "subject": subject, "data": data, "eventType": event_type,
            "dataVersion": "1.0", "metadataVersion": "1", "eventTime": timestamp(event_time_s)}


def cloud_event(event: dict[str, Any]) -> dict[str, Any]:
    """The same event as CloudEvents 1.0 (``source`` = the topic, ``type`` = the eventType)."""
    return {"id": event["id"], "source": event["topic"], "specversion": "1.0", "type": event["eventType"],
            "subject": event["subject"], "time": event["eventTime"], "datacontenttype": "application/json",
            "data": event["data"]}


@dataclass
class _Pending:
    event: dict[str, Any]
    published_at: float
    ready_at: float


class Subscription:
    """A subscription's state: validation, queued events, running tasks."""

    def __init__(self, config: SubscriptionConfig) -> None:
        self.config = config
        self.status = "AwaitingValidation"
        self.validation_attempts = 0
        self.last_validation_error: str | None = None
        self.codes: set[str] = set()
        self.pending: deque[_Pending] = deque()
        self.wakeup = asyncio.Event()
        self.slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed = False

    def to_json(self, *, full_url: bool = False) -> dict[str, Any]:
        """Config plus state, for the admin API."""
        return {**self.config.to_json(full_url=full_url), "status": self.status,
                "validation_attempts": self.validation_attempts, "last_validation_error": self.last_validation_error}

    def spawn(self, coro: Any) -> asyncio.Task[None]:
        """Run ``coro`` as one of this subscription's tasks (cancelled when it closes)."""
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def close(self) -> None:
        """Stop everything; queued and retrying events are abandoned."""
        self.closed = True
        self.wakeup.set()
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
        self.pending.clear()


class EventGrid:
    """The resource's Event Grid: ``publish`` hands an event to every validated subscription."""

    def __init__(self, settings: Settings, client: httpx.AsyncClient, signer: EntraSigner, faults: Faults) -> None:
        self.settings = settings
        self.client = client
        self.signer = signer
        self.faults = faults
        self.subscriptions: dict[str, Subscription] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_MAX)
        self.stats = {"eventgrid_posts": 0, "eventgrid_events_delivered": 0, "eventgrid_events_dropped": 0}
        self._jitter = random.Random()
        self._env = config_from_env(settings)
        self._last_event_s = 0.0

    # -- subscriptions ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the environment's subscription (needs the running loop: call from the lifespan)."""
        if self._env is not None:
            self.put(self._env)

    def put(self, config: SubscriptionConfig, *, validated: bool = False) -> tuple[Subscription, bool]:
        """Create or replace (then validate anew) a subscription; returns it and whether it is new."""
        old = self.subscriptions.pop(config.name, None)
        if old is not None:
            old.closed = True  # its tasks end at their next step; close() would need awaiting
            for task in list(old.tasks):
                task.cancel()
        sub = self.subscriptions[config.name] = Subscription(config)
        if validated:
            self._validated(sub)
        else:
            sub.spawn(self._handshake(sub))
        return sub, old is None

    async def delete(self, name: str) -> bool:
        """Delete a subscription; False when there is none by that name."""
        sub = self.subscriptions.pop(name, None)
        if sub is None:
            return False
        await sub.close()
        return True

    def validate_by_url(self, name: str, code: str) -> bool:
        """The asynchronous handshake: a GET of ``validationUrl``; True when it validated the subscription."""
        sub = self.subscriptions.get(name)
        if sub is None or code not in sub.codes:
            return False
        if sub.status != "Succeeded":
            self._validated(sub)
            self._record(sub, [], kind="validation", attempt=sub.validation_attempts, status=200,
                         outcome="validated", error="validated through validationUrl")
        return True

    async def reset(self) -> None:
        """``POST /_sim/reset``: runtime subscriptions go, the environment's stays validated; queues and log clear."""
        subs, self.subscriptions = self.subscriptions, {}
        for sub in subs.values():
            await sub.close()
        if self._env is not None:
            env = subs.get(ENV_SUBSCRIPTION)
            keep = env is not None and env.config == self._env and env.status == "Succeeded"
            self.put(self._env, validated=keep)
        self.log.clear()
        self.stats = dict.fromkeys(self.stats, 0)

    async def close(self) -> None:
        """Stop every subscription."""
        subs, self.subscriptions = self.subscriptions, {}
        for sub in subs.values():
            await sub.close()

    # -- publishing ------------------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True when some subscription is validated (only those get events)."""
        return any(sub.status == "Succeeded" for sub in self.subscriptions.values())

    def publish(self, event: Event) -> None:
        """Queue one event for every validated subscription (same id for each, as Event Grid does).

        Deliveries come in any order, but ``eventTime`` grows strictly with each event published (CallStarted
        before the CallParticipantAdded published with it, even within one microsecond), so a receiver can sort.
        """
        self._last_event_s = max(time.time(), self._last_event_s + 1e-6)
        wrapped = envelope(event, self.settings.topic, self._last_event_s)
        now = time.monotonic()
        ready_at = now + self.faults.knobs.eventgrid_delay_ms / 1000.0
        for sub in self.subscriptions.values():
            if sub.status == "Succeeded" and not sub.closed:
                sub.pending.append(_Pending(wrapped, now, ready_at))
                sub.wakeup.set()

    def _validated(self, sub: Subscription) -> None:
        sub.status = "Succeeded"
        sub.spawn(self._batcher(sub))

    # -- handshake -------------------------------------------------------------------------------------

    async def _handshake(self, sub: Subscription) -> None:
        while not sub.closed and sub.status != "Succeeded":
            sub.validation_attempts += 1
            status, error = await self._handshake_once(sub)
            if sub.status == "Succeeded":  # validated through validationUrl meanwhile
                return
            if error is None:
                self._record(sub, [], kind="validation", attempt=sub.validation_attempts, status=status,
                             outcome="validated")
                self._validated(sub)
                return
            sub.last_validation_error = error
            wait = handshake_wait_s(sub.validation_attempts, scale=sub.config.retry_scale)
            self._record(sub, [], kind="validation", attempt=sub.validation_attempts, status=status,
                         outcome="retrying", error=error, retry_in_s=wait)
            await asyncio.sleep(wait)

    async def _handshake_once(self, sub: Subscription) -> tuple[int | None, str | None]:
        """One handshake attempt: (status, None) when passed, else (status or None, why not)."""
        config = sub.config
        if self.faults.knobs.eventgrid_target_down:
            return None, "endpoint unreachable (eventgrid_target_down fault)"
        headers = self._auth(config)
        try:
            if config.schema == "CloudEventSchemaV1_0":
                headers["WebHook-Request-Origin"] = ORIGIN
                response = await self.client.options(config.endpoint_url, headers=headers,
                                                     timeout=self.settings.eventgrid_timeout_s)
                allowed = response.headers.get("webhook-allowed-origin", "")
                if 200 <= response.status_code <= 204 and allowed in (ORIGIN, "*"):
                    return response.status_code, None
                return response.status_code, f"WebHook-Allowed-Origin was {allowed!r}, not {ORIGIN!r} or '*'"
            code = str(uuid.uuid4())
            sub.codes.add(code)
            body = json.dumps([self._validation_event(config.name, code)], separators=(",", ":")).encode()
            headers.update(self._aeg(config, "SubscriptionValidation", delivery_count=0, data_version="2"))
            headers["Content-Type"] = "application/json; charset=utf-8"
            response = await self.client.post(config.endpoint_url, content=body, headers=headers,
                                              timeout=self.settings.eventgrid_timeout_s)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if response.status_code != 200:
            return response.status_code, "the validation needs HTTP 200 with {\"validationResponse\": <code>}"
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("validationResponse") == code:
            return 200, None
        return 200, "the answer had no matching validationResponse (or GET the validationUrl)"

    def _validation_event(self, name: str, code: str) -> dict[str, Any]:
        url = (f"{self.settings.public_url}/eventgrid/eventsubscriptions/{name}/validate?id={code}"
               f"&t={timestamp()}&apiVersion=2018-05-01-preview&token={secrets.token_urlsafe(16)}")
        return {"id": str(uuid.uuid4()), "topic": self.settings.topic, "subject": "",
                "data": {"validationCode": code, "validationUrl": url}, "eventType": VALIDATION_EVENT,
                "eventTime": timestamp(), "metadataVersion": "1", "dataVersion": "2"}

    # -- delivery --------------------------------------------------------------------------------------

    async def _batcher(self, sub: Subscription) -> None:
        """Takes the ready events, applies drop/duplicate/reorder, and starts one delivery per batch."""
        knobs_rng = self.faults.eventgrid_rng
        while not sub.closed:
            if not sub.pending:
                sub.wakeup.clear()
                await sub.wakeup.wait()
                continue
            wait_s = sub.pending[0].ready_at - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # the eventgrid_delay_ms knob
                continue
            knobs, ready = self.faults.knobs, []
            while sub.pending and sub.pending[0].ready_at <= time.monotonic():
                ready.append(sub.pending.popleft())
            kept = []
            for p in ready:
                if knobs.eventgrid_drop_rate > 0 and knobs_rng.random() < knobs.eventgrid_drop_rate:
                    self._record(sub, [p.event], kind="notification", attempt=0, status=None,
                                 outcome="dropped_by_fault")
                else:
                    kept.append(p)
            if knobs.eventgrid_reorder and len(kept) > 1:
                shuffled = list(kept)
                knobs_rng.shuffle(shuffled)
                if shuffled == kept:  # promise a visible reordering
                    shuffled[0], shuffled[1] = shuffled[1], shuffled[0]
                kept = shuffled
            twins = [p for p in kept if knobs.eventgrid_duplicate_rate > 0
                     and knobs_rng.random() < knobs.eventgrid_duplicate_rate]
            size = sub.config.max_events_per_batch
            firsts = [sub.spawn(self._deliver(sub, kept[i : i + size], duplicate=False))
                      for i in range(0, len(kept), size)]
            if twins:
                sub.spawn(self._redeliver(sub, twins, firsts))

    async def _redeliver(self, sub: Subscription, twins: list[_Pending], firsts: list[asyncio.Task[None]]) -> None:
        await asyncio.wait(firsts)  # a duplicate comes after its original's delivery
        size = sub.config.max_events_per_batch
        for i in range(0, len(twins), size):
            await self._deliver(sub, twins[i : i + size], duplicate=True)

    async def _deliver(self, sub: Subscription, batch: list[_Pending], *, duplicate: bool) -> None:
        """Attempts per Event Grid's policy until success, a code it never retries, or its limits."""
        events = [p.event for p in batch]
        published_at = min(p.published_at for p in batch)
        attempt = 0
        while not sub.closed:
            attempt += 1
            status, error = await self._post(sub, events, attempt)
            self.stats["eventgrid_posts"] += 1
            if status is not None and 200 <= status <= 204:
                self.stats["eventgrid_events_delivered"] += len(events)
                self._record(sub, events, kind="notification", attempt=attempt, status=status, outcome="delivered",
                             duplicate=duplicate)
                return
            scale = sub.config.retry_scale
            base = retry_wait_s(attempt, status, elapsed_s=time.monotonic() - published_at, scale=scale)
            if base is None:
                self.stats["eventgrid_events_dropped"] += len(events)
                self._record(sub, events, kind="notification", attempt=attempt, status=status, outcome="dropped",
                             error=error, duplicate=duplicate)
                return
            wait = base * self._jitter.uniform(0.9, 1.1)
            self._record(sub, events, kind="notification", attempt=attempt, status=status, outcome="retrying",
                         error=error, duplicate=duplicate, retry_in_s=wait, retry_base_s=base)
            await asyncio.sleep(wait)

    async def _post(self, sub: Subscription, events: list[dict[str, Any]], attempt: int
                    ) -> tuple[int | None, str | None]:
        config = sub.config
        if self.faults.knobs.eventgrid_target_down:
            return None, "endpoint unreachable (eventgrid_target_down fault)"
        headers = self._auth(config)
        headers.update(self._aeg(config, "Notification", delivery_count=attempt - 1,
                                 data_version=str(events[0]["dataVersion"])))
        payload: Any
        if config.schema == "CloudEventSchemaV1_0":
            batched = config.max_events_per_batch > 1
            payload = [cloud_event(e) for e in events] if batched else cloud_event(events[0])
            kind = "cloudevents-batch+json" if batched else "cloudevents+json"
            headers["Content-Type"] = f"application/{kind}; charset=utf-8"
        else:
            payload = events
            headers["Content-Type"] = "application/json; charset=utf-8"
        body = json.dumps(payload, separators=(",", ":")).encode()
        try:
            async with sub.slots:
                response = await self.client.post(config.endpoint_url, content=body, headers=headers,
                                                  timeout=self.settings.eventgrid_timeout_s)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None if 200 <= response.status_code <= 204 else f"HTTP {response.status_code}"

    def _auth(self, config: SubscriptionConfig) -> dict[str, str]:
        if not config.entra:
            return {}
        return {"Authorization": f"Bearer {self.signer.token(config.tenant_id, config.audience)}"}

    @staticmethod
    def _aeg(config: SubscriptionConfig, event_type: str, *, delivery_count: int, data_version: str) -> dict[str, str]:
        return {"aeg-event-type": event_type, "aeg-subscription-name": config.name.upper(),
                "aeg-delivery-count": str(delivery_count), "aeg-data-version": data_version,
                "aeg-metadata-version": "1"}

    def _record(self, sub: Subscription, events: list[dict[str, Any]], **fields: Any) -> None:
        entry: dict[str, Any] = {
            "t": time.time(),
            "subscription": sub.config.name,
            "kind": "notification",
            "event_ids": [e["id"] for e in events],
            "types": [e["eventType"] for e in events],
            "attempt": 0,
            "status": None,
            "outcome": "",
            "error": None,
            "duplicate": False,
            "retry_in_s": None,
            "retry_base_s": None,
        }
        entry.update(fields)
        self.log.append(entry)
        if entry["outcome"] in ("dropped", "retrying") and entry["kind"] == "notification":
            logger.info("event grid delivery to subscription %s: attempt %s %s (%s)", sub.config.name,
                        entry["attempt"], entry["outcome"], entry["error"])

