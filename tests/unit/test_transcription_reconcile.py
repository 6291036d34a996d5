"""How a transcription command whose event never came ended, read from the call's transcription subscription."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from workers.command import Command, Status
from workers.operations import reconcile


class _Acs:
    """A connected call whose transcription subscription is in ``state`` with ``locale`` (None: no subscription)."""

    def __init__(self, state: str | None, locale: str = "en-US") -> None:
        self.subscription = None if state is None else SimpleNamespace(state=state, locale=locale)

    def get_call_connection(self, call_connection_id: str) -> Any:
        props = SimpleNamespace(call_connection_state="connected", transcription_subscription=self.subscription)
        return SimpleNamespace(get_call_properties=lambda: props)


def _command(type_: str, **params: str) -> Command:
    return Command(id="t1", type=type_, status=Status.WAITING, call_connection_id="cc-1", params=params)


@pytest.mark.parametrize(("type_", "acs", "params", "status", "code"), [
    ("transcription_start", _Acs("active"), {}, Status.SUCCEEDED, None),
    ("transcription_start", _Acs("inactive"), {}, Status.FAILED, "transcription_not_started"),
    ("transcription_start", _Acs(None), {}, Status.FAILED, "transcription_not_started"),
    ("transcription_stop", _Acs("inactive"), {}, Status.SUCCEEDED, None),
    ("transcription_stop", _Acs("active"), {}, Status.FAILED, "transcription_not_stopped"),
    ("transcription_update", _Acs("active", "fr-FR"), {"locale": "fr-fr"}, Status.SUCCEEDED, None),
    ("transcription_update", _Acs("active", "en-US"), {"locale": "fr-FR"}, Status.FAILED,
     "transcription_not_updated"),
])
def test_a_transcription_command_is_told_by_the_calls_subscription(type_: str, acs: _Acs, params: dict[str, str],
                                                                   status: Status, code: str | None) -> None:
    verdict = reconcile(acs, _command(type_, **params), lambda part: None)  # type: ignore[arg-type]
    assert verdict is not None
    found, fields = verdict
    assert found == status and fields["resolved_by"] == {"type": "reconciled", "how": "read call"}
    assert (fields.get("error") or {}).get("code") == code


def test_a_transcription_command_cannot_be_told_once_a_later_one_may_have_changed_it() -> None:
    asked: list[str] = []

    def later(part: str) -> str | None:
        asked.append(part)
        return "t2"

    verdict = reconcile(_Acs("inactive"), _command("transcription_start"), later)  # type: ignore[arg-type]
    assert asked == ["transcription"]
    assert verdict is not None and verdict[1]["error"]["code"] == "callback_timeout"
