"""Webhooks on the real stack: simulator, API, a Celery worker (whose deliverer posts), a receiver verifying every
signature. What a receiver sees: each lane in order with seq 1, 2, 3 …, retries with the same webhook-id, a 410 that
disables the endpoint, history, retry and replay; and the SSRF guard."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from callq import cli
from callq.client import CallqAPIError, Client
from callq.receiver import Answer, Delivery, Receiver
from tests.conftest import TEST_API_KEY, wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import sim_room_call

pytestmark = pytest.mark.integration
WAIT_S = 30


@pytest.fixture
def stack_env(stack_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    extra = {"CALLQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
             "CALLQ_WEBHOOK_RETRY_SCHEDULE": "0.05,0.05,0.05",
             "CALLQ_WEBHOOK_TIMEOUT_SECONDS": "5"}
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return {**stack_env, **extra}


@pytest.fixture
def callq(simulator: ThreadServer, api_server: ThreadServer, start_worker: Callable[..., Any]) -> Iterator[Client]:
    start_worker()
    with Client(api_server.url, TEST_API_KEY) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rx:
        yield rx


def subscribe(callq: Client, rx: Receiver, **kw: Any) -> dict[str, Any]:
    hook = callq.create_webhook(rx.url, **kw)
    assert hook["secret"].startswith("whsec_")
    rx.secrets = [hook["secret"]]
    return hook


def in_lane(received: list[Delivery], lane: str) -> list[Delivery]:
    return [d for d in received if d.lane == lane]


def firsts(deliveries: list[Delivery]) -> list[Delivery]:
    """Each message's first arrival (a redelivery repeats an id)."""
    seen: set[str] = set()
    out = []
    for d in deliveries:
        if d.id not in seen:
            seen.add(d.id)
            out.append(d)
    return out


def test_a_calls_events_and_commands_arrive_signed_in_order_with_contiguous_seqs(
        simulator: ThreadServer, callq: Client, receiver: Receiver) -> None:
    subscribe(callq, receiver)
    connected = callq.wait(callq.connect(sim_room_call(simulator))["id"], timeout_s=WAIT_S)
    cc = connected["call_connection_id"]
    played = callq.wait(callq.play(cc, text="hello")["id"], timeout_s=WAIT_S)
    hung_up = callq.wait(callq.hang_up(cc)["id"], timeout_s=WAIT_S)
    assert played["status"] == hung_up["status"] == "succeeded"

    got = receiver.wait_for(lambda rs: any(d.body.get("data", {}).get("command", {}).get("id") == hung_up["id"]
                                           for d in rs), timeout_s=WAIT_S)
    lane = in_lane(got, cc)
    assert all(d.valid for d in got), "every signature verifies with the endpoint's secret"
    assert [d.seq for d in lane] == list(range(1, len(lane) + 1)), [(d.seq, d.type) for d in lane]
    told = [(d.type, (d.body["data"].get("command") or {}).get("id")
             or d.body["data"]["event"]["type"].rsplit(".", 1)[-1]) for d in lane]
    # Each event comes before the command it resolved.
    assert told.index(("call.event", "CallConnected")) < told.index(("command.succeeded", connected["id"]))
    assert told.index(("call.event", "PlayCompleted")) < told.index(("command.succeeded", played["id"]))
    assert told[-1] == ("command.succeeded", hung_up["id"])
    command = lane[-1].body["data"]["command"]
    assert command == callq.get_command(hung_up["id"]), "data is the command resource as the API serves it"


def deliveries_counted(api_url: str) -> dict[str, float]:
    """callq_webhook_deliveries_total by outcome, as /metrics shows every worker's figures."""
    text = httpx.get(f"{api_url}/metrics", headers={"Authorization": f"Bearer {TEST_API_KEY}"}).text
    return {s.labels["outcome"]: s.value for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "callq_webhook_deliveries_total"}


def test_a_failing_receiver_gets_each_message_again_with_the_same_id_and_order_holds(
        simulator: ThreadServer, api_server: ThreadServer, callq: Client, receiver: Receiver) -> None:
    tried: set[str] = set()

    def first_attempt_fails(d: Delivery) -> Answer:
        if d.id in tried:
            return Answer(204)
        tried.add(d.id)
        return Answer(500)

    receiver.answer = first_attempt_fails
    hook = subscribe(callq, receiver, events=["command.succeeded", "command.failed"])
    connected = callq.wait(callq.connect(sim_room_call(simulator))["id"], timeout_s=WAIT_S)
    cc = connected["call_connection_id"]
    ids = [callq.play(cc, text=f"prompt {i}")["id"] for i in range(3)]
    for cid in ids:
        callq.wait(cid, timeout_s=WAIT_S)

    got = receiver.wait_for(lambda rs: len([d for d in rs if d.status == 204]) == 4, timeout_s=WAIT_S)
    assert all(d.valid for d in got)
    accepted = [d for d in got if d.status == 204]
    assert [d.body["data"]["command"]["id"] for d in accepted] == [connected["id"], *ids]
    assert [d.seq for d in accepted] == [1, 2, 3, 4]
    for d in accepted:
        attempts = [x for x in got if x.id == d.id]
        assert [x.status for x in attempts] == [500, 204], "a redelivery carries the same webhook-id"
        assert attempts[0].headers["webhook-id"] == attempts[1].headers["webhook-id"]
    wait_until(lambda: {h["status"] for h in callq.webhook_deliveries(hook["id"])} == {"succeeded"},
               timeout_s=WAIT_S, what="every success recorded")
    history = list(callq.webhook_deliveries(hook["id"]))
    assert {h["status"] for h in history} == {"succeeded"} and {h["attempts"] for h in history} == {2}
    # The worker's deliverer counted each attempt; its flusher writes the counts about once a second.
    wait_until(lambda: deliveries_counted(api_server.url) == {"retry": 4, "succeeded": 4}, timeout_s=WAIT_S,
               what="every attempt counted in /metrics")


def test_history_retry_and_replay_resend_the_same_messages(simulator: ThreadServer, callq: Client,
                                                           receiver: Receiver) -> None:
    hook = subscribe(callq, receiver, events=["command.succeeded"])
    test = callq.test_webhook(hook["id"])
    receiver.wait_for(lambda rs: any(d.id == test["id"] for d in rs), timeout_s=WAIT_S)
    connected = callq.wait(callq.connect(sim_room_call(simulator))["id"], timeout_s=WAIT_S)
    cc = connected["call_connection_id"]
    receiver.wait_for(lambda rs: any(d.lane == cc for d in rs), timeout_s=WAIT_S)
    delivered = wait_until(lambda: [h for h in callq.webhook_deliveries(hook["id"])
                                    if h["call_connection_id"] == cc and h["status"] == "succeeded"],
                           timeout_s=WAIT_S, what="the delivery recorded")
    first_id = delivered[0]["id"]

    callq.retry_webhook_delivery(hook["id"], first_id)
    receiver.wait_for(lambda rs: len([d for d in rs if d.id == first_id]) == 2, timeout_s=WAIT_S)
    wait_until(lambda: callq.webhook_delivery(hook["id"], first_id)["status"] == "succeeded", timeout_s=WAIT_S,
               what="the retry's success recorded")  # until then it is still waiting in its lane: not replayed

    before = len(receiver.received)
    replayed = callq.replay_webhook(hook["id"], since_seq=1, call_connection_id=cc)
    assert replayed["queued"] == 1
    got = receiver.wait_for(lambda rs: len(rs) == before + 1, timeout_s=WAIT_S)
    assert got[-1].id == first_id and got[-1].seq == 1 and got[-1].valid


def test_410_disables_the_endpoint_and_enabling_it_sends_what_waited(simulator: ThreadServer, callq: Client,
                                                                       receiver: Receiver) -> None:
    gone = [True]
    receiver.answer = lambda d: Answer(410 if gone[0] else 200)
    hook = subscribe(callq, receiver, events=["command.succeeded"])
    callq.test_webhook(hook["id"])
    receiver.wait_for(lambda rs: len(rs) == 1, timeout_s=WAIT_S)
    disabled = wait_until(lambda: (h := callq.get_webhook(hook["id"]))["state"] == "disabled" and h,
                          timeout_s=WAIT_S, what="the 410 recorded")
    assert (disabled["enabled"], disabled["state"], disabled["disabled_reason"]) == (False, "disabled", "gone")
    with pytest.raises(CallqAPIError) as refused:
        callq.test_webhook(hook["id"])
    assert refused.value.code == "webhook_disabled"

    gone[0] = False
    callq.update_webhook(hook["id"], enabled=True)
    got = receiver.wait_for(lambda rs: len(rs) == 2, timeout_s=WAIT_S)
    assert got[0].id == got[1].id and got[1].status == 200
    wait_until(lambda: callq.get_webhook(hook["id"])["health"]["last_success_at"], timeout_s=WAIT_S,
               what="the success recorded")
    assert callq.get_webhook(hook["id"])["state"] == "healthy"


def test_rotation_signs_with_both_secrets_during_the_grace_period(callq: Client, receiver: Receiver) -> None:
    hook = subscribe(callq, receiver)
    old = hook["secret"]
    rotated = callq.rotate_webhook_secret(hook["id"])
    assert rotated["secret"] != old and rotated["previous_secret_expires_at"]
    receiver.secrets = [old]  # a receiver not yet told of the new secret still verifies
    test = callq.test_webhook(hook["id"])
    [d] = receiver.wait_for(lambda rs: len(rs) == 1, timeout_s=WAIT_S)
    assert d.id == test["id"] and d.valid
    assert len(d.headers["webhook-signature"].split(" ")) == 2


def test_urls_that_reach_private_or_metadata_addresses_are_refused(callq: Client) -> None:
    for url, code in [("http://169.254.169.254/latest/meta-data", "webhook_url_forbidden"),
                      ("http://10.0.0.7/hook", "webhook_url_forbidden"),
                      ("ftp://example.com/hook", "webhook_url_invalid"),
                      ("http://user:pw@example.com/hook", "webhook_url_invalid")]:
        with pytest.raises(CallqAPIError) as refused:
            callq.create_webhook(url)
        assert (refused.value.status, refused.value.code) == (422, code), url
    assert callq.list_webhooks()["items"] == []


def test_cli_creates_tests_and_lists_deliveries(callq: Client, receiver: Receiver,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["webhooks", "create", receiver.url, "--event", "command.failed"]) == 0
    hook = json.loads(capsys.readouterr().out)
    receiver.secrets = [hook["secret"]]
    assert cli.main(["webhooks", "test", hook["id"]]) == 0
    test = json.loads(capsys.readouterr().out)
    [d] = receiver.wait_for(lambda rs: len(rs) == 1, timeout_s=WAIT_S)
    assert d.id == test["id"] and d.valid and d.type == "webhook.test"
    wait_until(lambda: callq.webhook_delivery(hook["id"], test["id"])["status"] == "succeeded", timeout_s=WAIT_S,
               what="the test's success recorded")
    assert cli.main(["webhooks", "deliveries", hook["id"]]) == 0
    assert capsys.readouterr().out.split()[:3] == [test["id"], "webhook.test", "succeeded"]
    assert cli.main(["webhooks", "list"]) == 0
    assert capsys.readouterr().out.split()[:3] == [hook["id"], "healthy", "command.failed"]


def test_a_receiver_gone_down_refuses_and_cuts_connections_then_serves_again_on_its_port() -> None:
    with Receiver() as rx, httpx.Client() as http:
        url, port = rx.url, rx.port
        assert http.post(url, content=b"{}").status_code == 200  # a kept-alive connection now
        rx.go_down()
        with pytest.raises(httpx.ConnectError):
            http.post(url, content=b"{}")  # the kept-alive connection was cut, and a new one is refused
        rx.come_back()
        assert rx.port == port and http.post(url, content=b"{}").status_code == 200
        assert [d.status for d in rx.received] == [200, 200]
