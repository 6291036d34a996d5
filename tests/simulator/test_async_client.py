"""The async SDK client (aiohttp) signs one path and sends another; the simulator must accept both."""

from __future__ import annotations

import asyncio

import pytest
from azure.communication.callautomation import CommunicationUserIdentifier, PhoneNumberIdentifier
from azure.core.credentials import AzureKeyCredential
from simharness import KEY, Sim

aio = pytest.importorskip("azure.communication.callautomation.aio")
pytest.importorskip("aiohttp")


def test_async_client_get_participant_with_unescaped_colons(sim: Sim, client) -> None:
    room_id, _ = sim.room(participants=("8:acs:res_alice",))
    cc = sim.connect(client, room_id).get_call_properties().call_connection_id

    async def run() -> tuple[str, str]:
        async with aio.CallAutomationClient(sim.base, AzureKeyCredential(KEY), retry_total=0) as async_client:
            conn = async_client.get_call_connection(cc)
            user = await conn.get_participant(CommunicationUserIdentifier("8:acs:res_alice"))
            props = await conn.get_call_properties()
            return user.identifier.raw_id, props.call_connection_state

    assert asyncio.run(run()) == ("8:acs:res_alice", "connected")


def test_async_client_phone_participant(sim: Sim, client) -> None:
    room_id, _ = sim.room()
    conn = sim.connect(client, room_id)
    sim.add_phone(conn, "+16045550100")
    cc = conn.get_call_properties().call_connection_id

    async def run() -> str:
        async with aio.CallAutomationClient(sim.base, AzureKeyCredential(KEY), retry_total=0) as async_client:
            found = await async_client.get_call_connection(cc).get_participant(PhoneNumberIdentifier("+16045550100"))
            return found.identifier.raw_id

    assert asyncio.run(run()) == "4:+16045550100"
