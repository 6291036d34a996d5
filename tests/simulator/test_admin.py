"""The /_sim admin API: rooms and their calls, phone scripts, logs, stats, reset, health."""

from __future__ import annotations

from azure.communication.callautomation import PhoneNumberIdentifier
from simharness import CALLER_ID, Sim

from tests.conftest import wait_until


def test_health(sim: Sim) -> None:
    response = sim.admin.get("/_sim/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


def test_create_room_and_start_its_call(sim: Sim) -> None:
    created = sim.admin.post("/_sim/rooms", json={"pstn_dial_out_enabled": True})
    assert created.status_code == 201
    room_id = created.json()["room_id"]
    assert len(room_id) == 17 and room_id.isdigit()
    started = sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": ["8:acs:res_alice"]})
    assert started.status_code == 201 and started.json()["server_call_id"]
    again = sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": ["8:acs:res_alice"]})
    assert again.status_code == 409
    room = sim.admin.get(f"/_sim/rooms/{room_id}").json()
    assert room["pstn_dial_out_enabled"] is True
    assert room["call"]["participants"] == ["8:acs:res_alice"]


def test_admin_errors(sim: Sim) -> None:
    assert sim.admin.post("/_sim/rooms/00000000000000000/call", json={"participants": []}).status_code == 404
    assert sim.admin.post("/_sim/rooms", json={"pstn_dial_out_enabled": "yes"}).status_code == 400
    room_id, _ = sim.room(start=False)
    assert sim.admin.post(f"/_sim/rooms/{room_id}/call", json={"participants": "8:acs:x"}).status_code == 400
    assert sim.admin.delete(f"/_sim/rooms/{room_id}/call").status_code == 409
    assert sim.admin.put("/_sim/phones/12345", json={}).status_code == 400
    assert sim.admin.put("/_sim/phones/+16045550100", json={"behaviour": "sing"}).status_code == 400


def test_phone_scripts_are_listed(sim: Sim) -> None:
    sim.phone("+16045550100", behaviour="busy", delay_ms=200)
    phones = sim.admin.get("/_sim/phones").json()
    assert phones["+16045550100"]["behaviour"] == "busy"
    assert phones["+16045550100"]["delay_ms"] == 200


def test_participants_join_and_leave_the_running_call(sim: Sim, client) -> None:
    room_id, _ = sim.room(participants=("8:acs:res_alice",))
    sim.connect(client, room_id)
    sim.admin.post(f"/_sim/rooms/{room_id}/call/participants", json={"participants": ["8:acs:res_bob"]})
    joined = sim.receiver.wait_for(sim.path, "ParticipantsUpdated", count=2)[-1]["data"]["participants"]
    assert [p["identifier"]["rawId"] for p in joined] == ["8:acs:res_alice", "8:acs:res_bob"]
    assert sim.admin.delete(f"/_sim/rooms/{room_id}/call/participants/8:acs:res_alice").status_code == 200
    left = sim.receiver.wait_for(sim.path, "ParticipantsUpdated", count=3)[-1]["data"]["participants"]
    assert [p["identifier"]["rawId"] for p in left] == ["8:acs:res_bob"]


def test_log_lists_executed_state_changes_in_order(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id, context="join")
    cc = conn.get_call_properties().call_connection_id
    conn.add_participant(PhoneNumberIdentifier("+16045550100"), operation_context="add",
                         source_caller_id_number=PhoneNumberIdentifier(CALLER_ID))
    conn.hang_up(is_for_everyone=True)
    entries = sim.log()
    assert [e["operation"] for e in entries] == ["connect", "addParticipant", "terminate"]
    connect = entries[0]
    assert set(connect) >= {"t", "method", "path", "operation", "body", "call_connection_id", "repeatability_id",
                            "operation_context"}
    assert (connect["method"], connect["path"]) == ("POST", "/calling/callConnections:connect")
    assert connect["body"]["callLocator"]["roomId"] == room_id
    assert connect["operation_context"] == "join" and connect["call_connection_id"] == cc
    assert connect["repeatability_id"]  # the SDK sends one on connect
    assert entries[2]["body"] is None and entries[2]["path"] == f"/calling/callConnections/{cc}:terminate"
    assert [e["operation"] for e in sim.log(operation="addParticipant")] == ["addParticipant"]
    assert entries[0]["t"] <= entries[1]["t"] <= entries[2]["t"]


def test_callbacks_log_and_stats(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.connect(client, room_id)
    delivered = wait_until(lambda: sim.deliveries(target=sim.callback_url, outcome="delivered"), timeout_s=5.0,
                           what="deliveries")
    assert "Microsoft.Communication.CallConnected" in [t for d in delivered for t in d["types"]]
    assert delivered[0]["status"] == 200
    stats = sim.admin.get("/_sim/stats").json()
    assert stats["requests"] >= 1 and stats["events_delivered"] >= 1


def test_reset_clears_everything(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    sim.connect(client, room_id)
    sim.faults(throttle_rate=0.1)
    sim.phone("+16045550100", behaviour="busy")
    assert sim.admin.post("/_sim/reset").json() == {"status": "reset"}
    assert sim.admin.get(f"/_sim/rooms/{room_id}").status_code == 404
    assert sim.log() == [] and sim.deliveries() == []
    assert sim.admin.get("/_sim/faults").json()["throttle_rate"] == 0
    assert sim.admin.get("/_sim/phones").json() == {}
