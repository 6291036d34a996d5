"""Event Grid delivery rules: batching, CloudEvents batches, retry policy (scaled), codes never retried, faults,
the admin API, reset, and the subscription made from the environment."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import pytest
from eghook import Hook
from simharness import KEY, ServerThread, Sim

from simulator.app import create_app
from simulator.eventgrid import MAX_ATTEMPTS, retry_wait_s
from simulator.settings import ConfigError, Settings
from tests.conftest import free_port, wait_until

ALICE, BOB, CAROL = "8:acs:res_alice", "8:acs:res_bob", "8:acs:res_carol"


def _call(sim: Sim, *people: str) -> str:
    """A call in an open room: CallStarted then one CallParticipantAdded each, all published at once."""
    room_id, _ = sim.room(start=False)
    response = sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": list(people or (ALICE,))})
    assert response.status_code == 201
    return str(response.json()["server_call_id"])


def test_retry_schedule_is_event_grids() -> None:
    waits, elapsed, attempt = [], 0.0, 1
    while (wait := retry_wait_s(attempt, 500, elapsed_s=elapsed, scale=1.0)) is not None:
        waits.append(wait)
        elapsed += wait
        attempt += 1
    assert waits[:10] == [10, 30, 60, 300, 600, 1800, 3600, 10800, 21600, 43200]
    assert elapsed <= 86400 < elapsed + 43200  # the 24 h time to live ends it, before 30 attempts
    assert retry_wait_s(3, 503, elapsed_s=0, scale=0.001) == pytest.approx(0.06)
    assert retry_wait_s(MAX_ATTEMPTS, 500, elapsed_s=0, scale=1e-9) is None
    for status in (400, 401, 403, 413):
        assert retry_wait_s(1, status, elapsed_s=0, scale=1.0) is None
    for status in (None, 404, 408, 429, 500, 503, 301):
        assert retry_wait_s(1, status, elapsed_s=0, scale=1.0) == 10


def test_one_event_per_post_by_default_still_an_array(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("single", hook.url(path))
    _call(sim, ALICE, BOB, CAROL)
    hook.wait_events(path, lambda evs: len(evs) == 4)
    posts = hook.notifications(path)
    assert len(posts) == 4 and all(isinstance(p.body, list) and len(p.body) == 1 for p in posts)


def test_events_ready_together_share_a_batch(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("batched", hook.url(path), max_events_per_batch=3)
    _call(sim, ALICE, BOB, CAROL)
    hook.wait_events(path, lambda evs: len(evs) == 4)
    assert sorted(len(p.body) for p in hook.notifications(path)) == [1, 3]


def test_cloudevents_batches_are_arrays_of_their_own_content_type(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("ce-batched", hook.url(path), schema="CloudEventSchemaV1_0", max_events_per_batch=10)
    _call(sim, ALICE)
    [post] = hook.wait(path, lambda rs: any(r.method == "POST" for r in rs))[1:]
    assert post.headers["content-type"] == "application/cloudevents-batch+json; charset=utf-8"
    assert [e["type"].rsplit(".", 1)[1] for e in post.body] == ["CallStarted", "CallParticipantAdded"]


def test_failed_posts_are_retried_on_the_scaled_schedule(sim: Sim, hook: Hook) -> None:
    room_id, _ = sim.room(start=False)
    sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": [ALICE]})  # before the subscription: unseen
    path = hook.new_path(statuses=[500, 503, 429])
    sim.subscribe("retried", hook.url(path), retry_scale=0.001)
    sim.admin.post(f"/_sim/rooms/{room_id}/call/participants", json={"participants": [BOB]})  # exactly one event
    wait_until(lambda: sim.eg_log(subscription="retried", outcome="delivered"), timeout_s=5.0, what="delivery")
    attempts = sim.eg_log(subscription="retried", kind="notification")
    assert [(e["attempt"], e["status"], e["outcome"]) for e in attempts] == [
        (1, 500, "retrying"), (2, 503, "retrying"), (3, 429, "retrying"), (4, 200, "delivered")]
    assert len({e["event_ids"][0] for e in attempts}) == 1
    assert [e["retry_base_s"] for e in attempts[:3]] == pytest.approx([0.01, 0.03, 0.06])
    for entry in attempts[:3]:
        assert 0.9 * entry["retry_base_s"] <= entry["retry_in_s"] <= 1.1 * entry["retry_base_s"]  # jitter
    assert [p.headers["aeg-delivery-count"] for p in hook.notifications(path)] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_codes_event_grid_never_retries_drop_the_event(sim: Sim, hook: Hook, status: int) -> None:
    path = hook.new_path(statuses=[status])
    sim.subscribe(f"refuses-{status}", hook.url(path), retry_scale=0.001)
    _call(sim, ALICE)
    wait_until(lambda: sim.eg_log(subscription=f"refuses-{status}", outcome="delivered"), timeout_s=5.0,
               what="the other event delivered")
    [dropped] = wait_until(lambda: sim.eg_log(subscription=f"refuses-{status}", outcome="dropped"), timeout_s=5.0,
                           what="the refused event dropped")
    assert (dropped["attempt"], dropped["status"], dropped["retry_in_s"]) == (1, status, None)
    assert sim.eg_log(subscription=f"refuses-{status}", outcome="retrying") == []
    assert sim.admin.get("/_sim/stats").json()["eventgrid_events_dropped"] == 1


def test_drop_fault_sends_nothing(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("dropping", hook.url(path))
    sim.faults(eventgrid_drop_rate=1.0, drop_rate=0.0)
    _call(sim, ALICE)
    wait_until(lambda: len(sim.eg_log(subscription="dropping", outcome="dropped_by_fault")) == 2, timeout_s=5.0,
               what="both events dropped")
    assert hook.notifications(path) == []


def test_duplicate_fault_sends_each_event_twice_with_its_id(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("twice", hook.url(path))
    sim.faults(eventgrid_duplicate_rate=1.0)
    _call(sim, ALICE)
    events = hook.wait_events(path, lambda evs: len(evs) == 4)
    assert sorted(Counter(e["id"] for e in events).values()) == [2, 2]
    delivered = wait_until(lambda: len(sim.eg_log(subscription="twice", outcome="delivered")) == 4, timeout_s=5.0,
                           what="the log to note all four") and sim.eg_log(subscription="twice", outcome="delivered")
    assert sum(e["duplicate"] for e in delivered) == 2


def test_reorder_fault_shuffles_events_ready_together(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("shuffled", hook.url(path), max_events_per_batch=10)
    sim.faults(eventgrid_reorder=True, seed=3)
    _call(sim, ALICE, BOB, CAROL)
    [post] = hook.wait(path, lambda rs: any(r.headers.get("aeg-event-type") == "Notification" for r in rs))[1:]
    types = [e["eventType"].rsplit(".", 1)[1] for e in post.body]
    assert sorted(types) == sorted(["CallStarted"] + ["CallParticipantAdded"] * 3)
    published = ["CallStarted", ALICE, BOB, CAROL]
    seen = [e["data"]["user"]["communicationIdentifier"]["rawId"] if "user" in e["data"] else "CallStarted"
            for e in post.body]
    assert seen != published


def test_target_down_fault_fails_every_post_until_lifted(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("down", hook.url(path), retry_scale=0.001)
    sim.faults(eventgrid_target_down=True, eventgrid_delay_ms=1)
    _call(sim, ALICE)
    retrying = wait_until(lambda: sim.eg_log(subscription="down", outcome="retrying"), timeout_s=5.0,
                          what="failed attempts")
    assert retrying[0]["status"] is None and "eventgrid_target_down" in retrying[0]["error"]
    assert hook.notifications(path) == []
    sim.faults(eventgrid_target_down=False)
    hook.wait_events(path, lambda evs: len(evs) == 2)


def test_callback_faults_leave_event_grid_alone(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("separate", hook.url(path))
    sim.faults(drop_rate=1.0, callback_target_down=True)
    _call(sim, ALICE)
    hook.wait_events(path, lambda evs: len(evs) == 2)


def test_admin_api_validation_listing_deletion_and_reset(sim: Sim, hook: Hook) -> None:
    base = "/_sim/eventgrid/subscriptions"
    for name, body in (("ok-name", {}), ("ok-name", {"endpoint_url": "ftp://x"}),
                       ("ok-name", {"endpoint_url": hook.base, "schema": "Xml"}),
                       ("ok-name", {"endpoint_url": hook.base, "tenant_id": "t"}),
                       ("ok-name", {"endpoint_url": hook.base, "max_events_per_batch": 0}),
                       ("ok-name", {"endpoint_url": hook.base, "retry_scale": 0}),
                       ("ok-name", {"endpoint_url": hook.base, "colour": "red"}), ("x", {"endpoint_url": hook.base})):
        response = sim.admin.put(f"{base}/{name}", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (400, "bad_request"), body
    path = hook.new_path()
    assert sim.admin.put(f"{base}/first", json={"endpoint_url": hook.url(path)}).status_code == 201
    assert sim.admin.put(f"{base}/first", json={"endpoint_url": hook.url(path)}).status_code == 200  # replaced
    sim.subscribe("second", hook.url(path))
    assert [s["name"] for s in sim.admin.get(base).json()] == ["first", "second"]
    assert sim.admin.delete(f"{base}/second").status_code == 204
    assert sim.admin.delete(f"{base}/second").status_code == 404
    assert sim.admin.get(f"{base}/second").status_code == 404
    assert sim.eg_log(subscription="first", kind="validation")
    sim.admin.post("/_sim/reset")
    assert sim.admin.get(base).json() == [] and sim.eg_log() == []


def test_settings_from_env() -> None:
    env = {"CALLQ_ACS_ACCESS_KEY": KEY, "CALLQ_SIM_EVENTGRID_URL": "http://127.0.0.1:8000/v1/eg?code=x",
           "CALLQ_SIM_EVENTGRID_SCHEMA": "CloudEventSchemaV1_0", "CALLQ_SIM_EVENTGRID_TENANT_ID": "t",
           "CALLQ_SIM_EVENTGRID_AUDIENCE": "a", "CALLQ_SIM_EVENTGRID_MAX_EVENTS_PER_BATCH": "20",
           "CALLQ_SIM_RECORDING_FILE_DELAY_S": "0.5"}
    settings = Settings.from_env(env)
    assert (settings.eventgrid_schema, settings.eventgrid_max_events_per_batch) == ("CloudEventSchemaV1_0", 20)
    assert settings.recording_file_delay_s == 0.5
    assert "code=x" not in repr(settings)
    assert Settings.from_env({"CALLQ_ACS_ACCESS_KEY": KEY}).eventgrid_url == ""
    bad = [("CALLQ_SIM_EVENTGRID_URL", "not a url"), ("CALLQ_SIM_EVENTGRID_SCHEMA", "Xml"),
           ("CALLQ_SIM_EVENTGRID_TENANT_ID", "only-tenant"), ("CALLQ_SIM_EVENTGRID_MAX_EVENTS_PER_BATCH", "0"),
           ("CALLQ_SIM_EVENTGRID_MAX_EVENTS_PER_BATCH", "many"), ("CALLQ_SIM_RECORDING_FILE_DELAY_S", "-1")]
    for name, value in bad:
        with pytest.raises(ConfigError, match=name):
            Settings.from_env({"CALLQ_ACS_ACCESS_KEY": KEY, name: value})


@pytest.fixture
def env_sim(hook: Hook) -> Iterator[tuple[Sim, str]]:
    """A second simulator whose subscription comes from the environment, pointing at a hook path that, at start,
    refuses the handshake (the webhook is not up yet)."""
    path = hook.new_path(validation="refuse")
    port = free_port()
    settings = Settings.from_env({"CALLQ_ACS_ACCESS_KEY": KEY, "CALLQ_SIM_PORT": str(port),
                                  "CALLQ_SIM_EVENTGRID_URL": hook.url(path)})
    settings = Settings(**{**settings.__dict__, "eventgrid_retry_scale": 0.01})
    with ServerThread(create_app(settings), port):
        handle = Sim(f"http://127.0.0.1:{port}", settings, receiver=None)  # type: ignore[arg-type]
        yield handle, path
        handle.admin.close()


def test_environment_subscription_validates_once_up_and_survives_reset(env_sim: tuple[Sim, str], hook: Hook
                                                                       ) -> None:
    sim, path = env_sim
    wait_until(lambda: len(sim.eg_log(subscription="callq", outcome="retrying")) >= 2, timeout_s=5.0,
               what="handshake retries while the webhook is down")
    hook.behaviour[path].validation = "sync"
    wait_until(lambda: sim.subscription("callq")["status"] == "Succeeded", timeout_s=5.0, what="validation")
    assert sim.subscription("callq")["source"] == "env"
    handshakes = len([r for r in hook.at(path) if r.headers.get("aeg-event-type") == "SubscriptionValidation"])
    sim.admin.post("/_sim/reset")
    assert sim.subscription("callq")["status"] == "Succeeded"  # still validated: no new handshake
    _call(sim, ALICE)
    hook.wait_events(path, lambda evs: len(evs) == 2)
    assert handshakes == len([r for r in hook.at(path) if r.headers.get("aeg-event-type") == "SubscriptionValidation"])


def test_event_times_grow_with_each_event_published_together(sim: Sim, hook: Hook) -> None:
    path = hook.new_path()
    sim.subscribe("ordered-times", hook.url(path))
    _call(sim, ALICE, BOB, CAROL)
    events = hook.wait_events(path, lambda evs: len(evs) == 4)
    by_time = [e["eventType"].rsplit(".", 1)[1] for e in sorted(events, key=lambda e: e["eventTime"])]
    assert by_time == ["CallStarted"] + ["CallParticipantAdded"] * 3
    assert len({e["eventTime"] for e in events}) == 4
