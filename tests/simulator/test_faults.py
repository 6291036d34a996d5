"""Every /_sim/faults knob, for ACS requests and for callback delivery."""

from __future__ import annotations

import pytest
from azure.communication.callautomation import FileSource, PhoneNumberIdentifier
from azure.core.exceptions import AzureError, HttpResponseError
from simharness import CALLER_ID, Sim

from tests.conftest import wait_until

PHONE = PhoneNumberIdentifier("+16045550100")
CALLER = PhoneNumberIdentifier(CALLER_ID)


def _get(sim: Sim) -> int:
    return sim.acs("GET", "/calling/callConnections/none?api-version=1").status_code


def test_knobs_get_put_delete_and_validation(sim: Sim) -> None:
    defaults = sim.admin.get("/_sim/faults").json()
    assert defaults["throttle_rate"] == 0 and defaults["participants_page_size"] == 100
    assert sim.faults(throttle_rate=0.5, reorder=True)["throttle_rate"] == 0.5
    assert sim.faults(seed=7)["reorder"] is True  # PUT changes only the keys given
    for bad in ({"throttle_rate": 2}, {"nope": 1}, {"reorder": "yes"}, {"execute_then_fail_mode": "boom"}):
        response = sim.admin.put("/_sim/faults", json=bad)
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "bad_request"
    assert sim.admin.delete("/_sim/faults").json() == defaults
    assert sim.faults(**defaults) == defaults  # every knob GET shows can be PUT back


def test_rate_limit_per_s_answers_429_with_retry_after(sim: Sim) -> None:
    sim.faults(rate_limit_per_s=0.001, retry_after_s=2)  # a burst of one, then one token per 1000 s
    assert _get(sim) == 404
    throttled = sim.acs("GET", "/calling/callConnections/none?api-version=1")
    assert throttled.status_code == 429
    assert throttled.headers["retry-after"] == "2"
    assert throttled.json()["error"]["code"] == "8516"


def test_throttle_rate_through_the_sdk(sim: Sim, client) -> None:
    sim.faults(throttle_rate=1.0, retry_after_s=0)
    with pytest.raises(HttpResponseError) as err:
        client.get_call_connection("x").get_call_properties()
    assert err.value.status_code == 429


def test_error_rate_answers_500_or_503(sim: Sim) -> None:
    sim.faults(error_rate=1.0, seed=1)
    statuses = {sim.acs("GET", "/calling/callConnections/x?api-version=1").status_code for _ in range(12)}
    assert statuses <= {500, 503} and statuses


def test_latency_ms_still_answers(sim: Sim) -> None:
    sim.faults(latency_ms=5)
    assert _get(sim) == 404


def test_seed_makes_random_faults_reproducible(sim: Sim) -> None:
    def pattern() -> list[int]:
        sim.faults(throttle_rate=0.5, seed=1234)
        return [_get(sim) for _ in range(20)]

    first = pattern()
    assert set(first) == {404, 429}
    assert pattern() == first


def test_execute_then_fail_503_takes_effect_but_client_fails(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    sim.faults(execute_then_fail=1.0, execute_then_fail_operations=["addParticipant"])
    conn.play_media(FileSource("https://example.org/a.wav"))  # not in the filter: unaffected
    with pytest.raises(HttpResponseError) as err:
        conn.add_participant(PHONE, source_caller_id_number=CALLER)
    assert err.value.status_code == 503
    sim.receiver.wait_for(sim.path, "AddParticipantSucceeded")  # it did take effect
    assert [e["fault"] for e in sim.log(operation="addParticipant")] == ["503"]


def test_execute_then_fail_drop_loses_the_response(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    sim.faults(execute_then_fail_count=1, execute_then_fail_mode="drop")
    with pytest.raises(AzureError) as err:
        conn.play_media(FileSource("https://example.org/a.wav"))
    assert getattr(err.value, "status_code", None) is None  # no HTTP answer: a transport-level failure
    sim.receiver.wait_for(sim.path, "PlayStarted")
    conn.play_media(FileSource("https://example.org/b.wav"), interrupt_call_media_operation=True)  # count used up
    assert [e["fault"] for e in sim.log(operation="play")] == ["drop", None]


def test_execute_then_fail_count_skips_reads_without_filter(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    sim.faults(execute_then_fail_count=1)
    conn.get_call_properties()  # reads are not hit unless named
    with pytest.raises(HttpResponseError):
        conn.play_media(FileSource("https://example.org/a.wav"))


def test_drop_rate_drops_callbacks_and_logs_them(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.faults(drop_rate=1.0)
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    wait_until(lambda: len(sim.deliveries(outcome="dropped_by_fault")) >= 2, timeout_s=5.0, what="dropped events")
    dropped = sim.deliveries(outcome="dropped_by_fault")
    assert [t for d in dropped for t in d["types"]] == [
        "Microsoft.Communication.CallConnected", "Microsoft.Communication.ParticipantsUpdated"]
    assert sim.receiver.events(sim.path) == []


def test_duplicate_rate_redelivers_same_event_ids(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.faults(duplicate_rate=1.0)
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    connected = sim.receiver.wait_for(sim.path, "CallConnected", count=2)
    assert connected[0]["id"] == connected[1]["id"]
    wait_until(lambda: any(d["duplicate"] for d in sim.deliveries(outcome="delivered")), timeout_s=5.0,
               what="a duplicate logged")


def test_reorder_delivers_a_batch_out_of_order(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.faults(reorder=True, seed=3)
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    events = sim.receiver.wait_events(sim.path, lambda evs: len(evs) >= 2)
    assert [e["type"].rsplit(".", 1)[1] for e in events] == ["ParticipantsUpdated", "CallConnected"]


def test_delay_ms_still_delivers(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.faults(delay_ms=20)
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    sim.receiver.wait_for(sim.path, "CallConnected")


def test_early_delivery_sends_events_before_the_response(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.faults(early_delivery=True)
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    # No waiting: with early delivery the events were received before connect_call returned.
    types = [e["type"].rsplit(".", 1)[1] for e in sim.receiver.events(sim.path)]
    assert types == ["CallConnected", "ParticipantsUpdated"]


def test_callback_target_down_retries_then_drops(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.faults(callback_target_down=True)
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    dropped = wait_until(lambda: sim.deliveries(outcome="dropped"), timeout_s=5.0, what="a dropped delivery")
    attempts = [d["attempt"] for d in sim.deliveries(target=sim.callback_url)]
    assert attempts[: dropped[0]["attempt"]] == list(range(1, dropped[0]["attempt"] + 1))
    assert dropped[0]["status"] is None and "callback_target_down" in dropped[0]["error"]
    assert sim.receiver.events(sim.path) == []
    sim.faults(callback_target_down=False)
    sim.connect(client, room_id)  # delivery works again


def test_failing_target_is_retried_until_it_accepts(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.receiver.fail_next[sim.path] = 2
    client.connect_call(callback_url=sim.callback_url, room_id=room_id)
    sim.receiver.wait_for(sim.path, "CallConnected")
    wait_until(lambda: sim.deliveries(outcome="delivered"), timeout_s=5.0, what="the delivery to be logged")
    outcomes = [(d["attempt"], d["status"], d["outcome"]) for d in sim.deliveries(target=sim.callback_url)]
    assert outcomes[:3] == [(1, 500, "retrying"), (2, 500, "retrying"), (3, 200, "delivered")]
    assert len(sim.receiver.wait_for(sim.path, "CallConnected")) == 1


def test_putting_execute_then_fail_count_again_rearms_it(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    for _ in range(2):
        sim.faults(execute_then_fail_count=1, execute_then_fail_operations=["cancelAllMediaOperations"])
        with pytest.raises(HttpResponseError):
            conn.cancel_all_media_operations()
        conn.cancel_all_media_operations()  # the one failure was used up
    assert [e["fault"] for e in sim.log(operation="cancelAllMediaOperations")] == ["503", None, "503", None]
