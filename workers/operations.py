"""Every command type callq can run: how to send it with the SDK and which ACS events resolve it.

An :class:`Operation` is data plus one ``send`` function, so the runtime, the API and the event
correlator all read the same table. ``repeatable`` says the request carries ACS repeatability headers,
so sending it again after an unclear failure cannot make ACS execute it twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.communication.callautomation import CallAutomationClient

from workers.settings import Settings

Record = dict[str, Any]  # a command: its stored fields, with ``params`` already parsed


@dataclass(frozen=True)
class Sent:
    """What the synchronous ACS response told us: fields to store on the command and the call."""

    call_connection_id: str | None = None
    recording_id: str | None = None
    result: dict[str, Any] | None = None
    resolved: bool = False  # True when the HTTP response itself is the outcome (no event expected)


@dataclass(frozen=True)
class Operation:
    type: str
    send: Callable[[CallAutomationClient, Record, Settings], Sent]
    succeeds_on: frozenset[str]
    fails_on: frozenset[str] = frozenset()
    repeatable: bool = False
    needs_call: bool = True  # addressed to an existing call connection


def _connect(client: CallAutomationClient, cmd: Record, settings: Settings) -> Sent:
    # room_id= sends the same roomCallLocator body as RoomCallLocator(...), which SDK 1.6 deprecates.
    props = client.connect_call(callback_url=settings.callback_url, room_id=cmd["room_id"],
                                operation_context=cmd["id"])
    return Sent(call_connection_id=props.call_connection_id)


def _hang_up(client: CallAutomationClient, cmd: Record, settings: Settings) -> Sent:
    client.get_call_connection(cmd["call_connection_id"]).hang_up(
        is_for_everyone=bool(cmd["params"].get("for_everyone", True))
    )
    return Sent()


OPERATIONS: dict[str, Operation] = {
    op.type: op
    for op in (
        Operation("connect", _connect, frozenset({"CallConnected"}), frozenset({"ConnectFailed"}),
                  repeatable=True, needs_call=False),
        # Terminate (for everyone) carries repeatability headers; hang up for self (DELETE) does not.
        Operation("hang_up", _hang_up, frozenset({"CallDisconnected"}), repeatable=True),
    )
}


def is_repeatable(cmd: Record) -> bool:
    if cmd["type"] == "hang_up":
        return bool(cmd["params"].get("for_everyone", True))
    return OPERATIONS[cmd["type"]].repeatable
