"""Every route of /openapi.json, fuzzed in-process by schemathesis, answers as its contract says.

The API runs on the session's real redis-server with the simulator as ACS (no worker: the commands are only
accepted; no deliverer: webhook messages are only made). Cases the schema calls valid are aimed at a call,
recording, command, webhook endpoint and delivery that exist, each with a fresh Idempotency-Key, so that valid
input must be accepted (``positive_data_acceptance``); invalid cases keep their generated ids and keys. No case
may get a 5xx, a status or body the schema does not publish.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks
from schemathesis.python.asgi import get_client, shutdown_lifespans
from starlette.applications import Starlette

from api.app import create_app
from api.openapi import document
from tests.conftest import TEST_API_KEY
from tests.integration.conftest import ThreadServer
from workers import keys, scripts, webhooks
from workers.acs import create_client
from workers.settings import Settings

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TEST_API_KEY}"}
ROOM = "room-contract"
# Nothing delivers to it here; a name (not an address) so that registering it asks the resolver, as a client's does.
HOOK_URL = "https://hooks.example.com/callq"
PEOPLE = ["8:acs:contract_alice", "4:+14255550123"]
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.response_schema_conformance,
          checks.content_type_conformance, checks.positive_data_acceptance]
# The seeded call, recording and command every valid case targets (filled in by the `ids` fixture).
IDS: dict[str, str] = {}
_KEYS = itertools.count()


class _AppUnderTest:
    """The ASGI app schemathesis calls in-process: the one the ``app`` fixture built for this test.

    (The schema is loaded at import, for ``parametrize``; the app needs the test's Redis and simulator.)
    """

    app: Starlette | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert self.app is not None, "the app fixture builds the app before any request"
        await self.app(scope, receive, send)


UNDER_TEST = _AppUnderTest()
schema = schemathesis.openapi.from_dict(document())
schema.app = UNDER_TEST


def _live_call(settings: Settings, simulator: ThreadServer) -> tuple[str, str, str]:
    """A call the simulator knows, connected to by the SDK, and recording: (call id, server call id, recording id)."""
    sim = f"{simulator.url}/_sim"
    httpx.post(f"{sim}/rooms", json={"room_id": ROOM}).raise_for_status()
    httpx.post(f"{sim}/rooms/{ROOM}/call", json={"participants": PEOPLE}).raise_for_status()
    acs = create_client(settings)
    try:
        # Nobody listens at the callback URL: the simulator's deliveries fail, which these reads do not need.
        call = acs.connect_call(room_id=ROOM, callback_url="http://127.0.0.1:9/v1/acs/events")
        cc = call.call_connection_id or ""
        recording = acs.start_recording(call_connection_id=cc)
        server_call_id = acs.get_call_connection(cc).get_call_properties().server_call_id
    finally:
        acs.close()
    assert cc and server_call_id and recording.recording_id, "the simulator names all three"
    return cc, server_call_id, recording.recording_id


@pytest.fixture
def app(stack_settings: Settings, simulator: ThreadServer) -> Iterator[Starlette]:
    # A budget far above what the fuzzer spends: reads must not wait in place for it (429 is tested elsewhere).
    settings = stack_settings.with_(acs_rate_per_s=10_000.0, acs_rate_burst=10_000)
    cc, server_call_id, rid = _live_call(settings, simulator)
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    r.hset(keys.call_key(cc), mapping={"client": "alice", "state": "connected", "server_call_id": server_call_id})
    r.hset(keys.recording_key(rid), mapping={"client": "alice", "call_connection_id": cc})
    # The event stream ends at CallDisconnected: the streaming route answers in full, then closes.
    r.xadd(keys.call_events_key(cc), {"event": json.dumps({"type": "Microsoft.Communication.CallDisconnected",
                                                           "data": {"callConnectionId": cc}})})
    r.close()
    app = UNDER_TEST.app = create_app(settings)
    with get_client(UNDER_TEST) as client:  # starts the app's lifespan, which schemathesis' requests then share
        command = client.post(f"http://testserver/v1/calls/{cc}/media/cancel",
                              headers={**AUTH, "Idempotency-Key": "seed"})
        assert command.status_code == 202, command.text
        hook = client.post("http://testserver/v1/webhooks", json={"url": HOOK_URL},
                           headers={**AUTH, "Idempotency-Key": "seed-webhook"})
        assert hook.status_code == 201, hook.text
        test = client.post(f"http://testserver/v1/webhooks/{hook.json()['id']}/test",
                           headers={**AUTH, "Idempotency-Key": "seed-webhook-test"})
        assert test.status_code == 202, test.text
    # Settled, as if a worker had run it: ?wait= on it answers at once instead of long-polling.
    redis.Redis.from_url(settings.redis_url).hset(keys.command_key(command.json()["id"]), "status", "succeeded")
    IDS.update(call_connection_id=cc, recording_id=rid, command_id=command.json()["id"], raw_id=PEOPLE[0],
               room_id=ROOM, webhook_id=hook.json()["id"], delivery_id=test.json()["id"])
    try:
        yield app
    finally:
        shutdown_lifespans()
        IDS.clear()
        UNDER_TEST.app = None


def _aim(case: schemathesis.Case[Any]) -> None:
    """A valid case goes to the seeded resources with an unused Idempotency-Key; an invalid one stays as made."""
    if not _positive(case):
        return
    for name in case.path_parameters or {}:
        if name in IDS and name != "room_id":
            case.path_parameters[name] = IDS[name]
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = f"contract-{next(_KEYS)}"
    if case.query and "cursor" in case.query:
        case.query["cursor"] = IDS["delivery_id"]  # a cursor is the last id of a page callq answered


def _new_webhook(settings: Settings) -> str:
    """An endpoint of alice's made as POST /v1/webhooks makes it (webhook_save.lua), for one DELETE to delete."""
    ep = webhooks.new_endpoint_id()
    r = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        saved = scripts.run(r, webhooks.save(
            client="alice", endpoint_id=ep, mode="create", max_endpoints=settings.webhook_max_endpoints,
            fields={"url": HOOK_URL, "events": "*", "enabled": "1", "state": "healthy",
                    "secret": webhooks.new_secret(), "created_ms": "1", "retention": "3600"}))
    finally:
        r.close()
    assert saved.outcome == "new"
    return ep


# Valid-looking schedules (and rooms, see _rooms) may still be refused: a start in the past, a cron the grammar
# rejects, an unknown timezone, overlapping pause windows are checked by the route (and the clock), not expressible in
# the schema.
SCHEDULE_CHECKS = [c for c in CHECKS if c is not checks.positive_data_acceptance]


@schema.parametrize()
@settings(max_examples=12, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_route_answers_as_its_contract_says(case: schemathesis.Case[Any], app: Starlette,
                                                  stack_settings: Settings) -> None:
    _aim(case)
    if case.method == "DELETE" and case.operation.path == "/v1/webhooks/{webhook_id}" and _positive(case):
        case.path_parameters["webhook_id"] = _new_webhook(stack_settings)  # the seeded one stays for the others
    schedule = case.operation.path == "/v1/recording-schedules" and case.method == "POST"
    refusable = schedule or _rooms(case) or _webhook_url(case)
    case.call_and_validate(headers=AUTH, checks=SCHEDULE_CHECKS if refusable else CHECKS)


def _positive(case: schemathesis.Case[Any]) -> bool:
    return case.meta is not None and case.meta.generation.mode.is_positive


def _webhook_url(case: schemathesis.Case[Any]) -> bool:
    """A webhook URL the schema calls valid may still be refused: one that resolves to a private, loopback or
    metadata address, a malformed host, or a 21st endpoint (too_many_webhooks). The route checks those."""
    return (case.method, case.operation.path) in {("POST", "/v1/webhooks"), ("PATCH", "/v1/webhooks/{webhook_id}")}


def _rooms(case: schemathesis.Case[Any]) -> bool:
    """Room and automation routes may refuse schema-valid requests: ACS answers for rooms (an id it never made, one
    of another length), and some rules need the clock or the whole list (a window in the past, a participant listed
    twice, connect first and only first) where a schema cannot say them."""
    path = case.operation.path
    return path == "/v1/automation" or (path.startswith("/v1/rooms") and not path.endswith("/connect"))
