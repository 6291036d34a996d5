"""Per-type rules of the Operation table that decide how a command whose event never came ended."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from workers.command import Command, Status
from workers.operations import reconcile


class _Acs:
    """Just the reads reconcile makes: a recording in ``state`` (None: unknown to ACS) on a connected call."""

    def __init__(self, state: str | None) -> None:
        self.state = state

    def get_recording_properties(self, recording_id: str) -> Any:
        if self.state is None:
            raise ResourceNotFoundError("no such recording")
        return SimpleNamespace(recording_state=self.state)

    def get_call_connection(self, call_connection_id: str) -> Any:
        return SimpleNamespace(get_call_properties=lambda: SimpleNamespace(call_connection_state="connected"))


def _start() -> Command:
    return Command(id="c1", type="start_recording", status=Status.WAITING, call_connection_id="cc-1",
                   recording_id="rec-1")


def test_a_started_recording_that_a_later_pause_made_inactive_reconciles_as_started() -> None:
    verdict = reconcile(_Acs("inactive"), _start())  # type: ignore[arg-type]
    assert verdict is not None
    status, fields = verdict
    assert status == Status.SUCCEEDED
    assert fields["result"] == {"recording_id": "rec-1", "state": "inactive"}
    assert fields["resolved_by"] == {"type": "reconciled", "how": "read recording"}


def test_a_start_whose_recording_acs_does_not_know_on_a_live_call_cannot_be_told() -> None:
    assert reconcile(_Acs(None), _start()) is None  # type: ignore[arg-type]


def _resume() -> Command:
    return Command(id="c2", type="resume_recording", status=Status.WAITING, call_connection_id="cc-1",
                   recording_id="rec-1")


def test_a_resume_whose_recording_is_not_active_failed_when_no_later_recording_command_was_sent() -> None:
    verdict = reconcile(_Acs("inactive"), _resume(), lambda part: None)  # type: ignore[arg-type]
    assert verdict is not None
    status, fields = verdict
    assert status == Status.FAILED and fields["error"]["code"] == "recording_state_unchanged"


def test_a_resume_cannot_be_told_once_a_later_recording_command_may_have_changed_the_state() -> None:
    asked: list[str] = []

    def changed(part: str) -> str:
        asked.append(part)
        return "c3"

    for state in ("inactive", "active", None):  # None: the recording is gone (a later stop)
        verdict = reconcile(_Acs(state), _resume(), changed)  # type: ignore[arg-type]
        assert verdict is not None
        status, fields = verdict
        assert status == Status.FAILED and fields["error"]["code"] == "callback_timeout"
        assert fields["resolved_by"] == {"type": "timeout", "after": "c3"}
    assert asked == ["recording", "recording", "recording"]


def test_a_start_is_told_by_its_own_recording_whatever_came_later() -> None:
    verdict = reconcile(_Acs("inactive"), _start(), lambda part: "c3")  # type: ignore[arg-type]
    assert verdict is not None and verdict[0] == Status.SUCCEEDED
