"""The chaos suite's plumbing: scale selection, the report's table, and ``callq chaos`` refusing what it cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from callq import cli
from tests.chaos import scale
from tests.chaos.harness import honest
from tests.chaos.report import Figures, Report


def test_scale_is_bounded_unless_told_and_refuses_unknown_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(scale.SCALE_ENV, raising=False)
    assert scale.pick(bounded=1, long=2) == 1
    monkeypatch.setenv(scale.SCALE_ENV, "long")
    assert scale.pick(bounded=1, long=2) == 2
    monkeypatch.setenv(scale.SCALE_ENV, "huge")
    with pytest.raises(ValueError, match="CALLQ_CHAOS_SCALE must be one of bounded, long, got 'huge'"):
        scale.pick(bounded=1, long=2)


def test_report_path_is_scratch_unless_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(scale.REPORT_ENV, raising=False)
    assert scale.report_path() == scale.SCRATCH_REPORT
    monkeypatch.setenv(scale.REPORT_ENV, f"{tmp_path}/r.md")
    assert str(scale.report_path()) == f"{tmp_path}/r.md"


def test_report_rows_carry_figures_notes_and_the_test_outcome() -> None:
    report = Report(scale="long")
    report.record("tests/chaos/test_x.py::test_a", Figures(
        "worker kills", "2 workers | 20 calls", commands=1000, faults="31 worker SIGKILLs", lost=0, duplicated=0,
        http_5xx=0, notes={"mid-send at a kill": 1234, "429 fraction": "6.2%"}))
    report.finished("tests/chaos/test_x.py::test_a", "passed", 61.4)
    report.finished("tests/chaos/test_x.py::test_b", "failed", 1.0)
    text = report.markdown(command="callq chaos")
    row = next(line for line in text.splitlines() if line.startswith("| worker kills"))
    assert row == ("| worker kills | 2 workers / 20 calls | 1,000 | 31 worker SIGKILLs | 0 | 0 | 0 | "
                   "mid-send at a kill 1,234; 429 fraction 6.2% | pass (61 s) |")
    assert "| `tests/chaos/test_x.py` | 1 | 1 | 0 |" in text
    assert "`callq chaos` at scale **long**" in text


def test_callq_chaos_names_the_scenarios_when_given_an_unknown_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["chaos", "--only", "meteor"]) == 1
    err = capsys.readouterr().err
    assert "no chaos scenario meteor" in err and "worker_kills" in err and "api_restarts" in err


def _failed_add(**resolved_by: str) -> dict[str, str]:
    return {"id": "add", "type": "add_participant", "status": "failed", "call_connection_id": "cc-1",
            "created_at": "2026-01-01T00:00:01.000Z", "resolved_at": "2026-01-01T00:00:09.000Z",
            "error": json.dumps({"code": "callback_timeout"}), "resolved_by": json.dumps(resolved_by)}


def _later(type_: str, call: str = "cc-1", at: str = "2026-01-01T00:00:02.000Z") -> dict[str, str]:
    return {"id": "later", "type": type_, "call_connection_id": call, "created_at": at}


def test_a_timeout_blamed_on_a_later_command_is_honest_only_if_that_command_changed_what_was_read() -> None:
    add = _failed_add(type="timeout", after="later")
    assert honest(add, [], {}, records={"later": _later("remove_participant")}, executed={"later": 1})
    assert not honest(add, [], {}, records={"later": _later("remove_participant")}, executed={"later": 0})
    assert not honest(add, [], {}, records={"later": _later("send_dtmf")}, executed={"later": 1})
    assert not honest(add, [], {}, records={"later": _later("remove_participant", call="cc-2")}, executed={"later": 1})
    assert not honest(add, [], {}, records={"later": _later("remove_participant", at="2026-01-01T00:00:00.000Z")},
                      executed={"later": 1})
    assert not honest(_failed_add(type="timeout"), [], {}, records={"later": _later("remove_participant")},
                      executed={"later": 1})


def test_a_later_recording_action_counts_as_executed_by_its_operation_on_its_recording() -> None:
    """ACS's pause/resume/stop carry no id of callq's: the simulator's log names the operation and recording."""
    resume = {"id": "resume", "type": "resume_recording", "status": "failed", "call_connection_id": "cc-1",
              "created_at": "2026-01-01T00:00:01.000Z", "resolved_at": "2026-01-01T00:00:09.000Z",
              "error": json.dumps({"code": "callback_timeout"}),
              "resolved_by": json.dumps({"type": "timeout", "after": "stop"})}
    stop = {"id": "stop", "type": "stop_recording", "call_connection_id": "cc-1", "recording_id": "rec-1",
            "created_at": "2026-01-01T00:00:02.000Z"}
    log = [{"operation": "stopRecording", "path": "/calling/recordings/rec-1"}]
    assert honest(resume, [], {}, records={"stop": stop}, executed={}, log=log)
    assert not honest(resume, [], {}, records={"stop": stop}, executed={},
                      log=[{"operation": "stopRecording", "path": "/calling/recordings/rec-2"}])
    assert not honest(resume, [], {}, records={"stop": stop}, executed={},
                      log=[{"operation": "pauseRecording", "path": "/calling/recordings/rec-1"}])


def test_a_media_operation_ended_unsent_is_honest_only_if_a_later_media_cutting_interrupt_did_it() -> None:
    play = {"id": "p", "type": "play", "status": "failed", "call_connection_id": "cc-1",
            "created_at": "2026-01-01T00:00:01.000Z", "resolved_at": "2026-01-01T00:00:02.000Z",
            "error": json.dumps({"code": "interrupted", "by": "later"})}
    assert honest(play, [], {}, records={"later": _later("hang_up")}, executed={})
    assert honest(play, [], {}, records={"later": _later("cancel_media")}, executed={})
    assert not honest(play, [], {}, records={"later": _later("hang_up")}, executed={"p": 1})  # ACS ran it
    assert not honest(play, [], {}, records={"later": _later("cancel_add_participant")}, executed={})
    assert not honest(play, [], {}, records={"later": _later("hang_up", call="cc-2")}, executed={})
    assert not honest(play, [], {}, records={"later": _later("hang_up", at="2026-01-01T00:00:00.000Z")}, executed={})
    assert not honest(play | {"type": "send_dtmf"}, [], {}, records={"later": _later("hang_up")}, executed={})
