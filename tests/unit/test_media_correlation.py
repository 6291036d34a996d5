"""Events of the new media commands resolve them, on fakeredis and a real Redis: barge-ins as plays and recognizes,
transcription commands on their Transcription* events (TranscriptionUpdated too, which the simulator never sends:
ACS refuses updates on connections made with Connect)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.unit.test_correlation import any_redis, event, ingest, make_command  # noqa: F401  (any_redis: a fixture)
from workers import keys

_UPDATE = {"transcriptionStatus": "transcriptionStarted", "transcriptionStatusDetails": "subscriptionStarted"}


@pytest.mark.parametrize(("kind", "type_", "update"), [
    ("TranscriptionStarted", "transcription_start", _UPDATE),
    ("TranscriptionStopped", "transcription_stop",
     {"transcriptionStatus": "transcriptionStopped", "transcriptionStatusDetails": "subscriptionStopped"}),
    ("TranscriptionUpdated", "transcription_update",
     {"transcriptionStatus": "transcriptionUpdated", "transcriptionStatusDetails": "transcriptionLocaleUpdated"}),
])
def test_a_transcription_event_resolves_its_command_with_what_it_says(any_redis, kind: str, type_: str,  # type: ignore[no-untyped-def]  # noqa: F811
                                                                      update: dict[str, str]) -> None:
    r, ar = any_redis
    make_command(r, "cmd_t", type_)
    report = ingest(ar, event(kind, eid="e-t", ctx="cmd_t", transcriptionUpdate=update,
                              resultInformation={"code": 200, "subCode": 0, "message": "ok"}))
    assert report.resolved == ["cmd_t"]
    record = r.hgetall(keys.command_key("cmd_t"))
    assert record["status"] == "succeeded" and json.loads(record["resolved_by"])["type"] == kind
    assert json.loads(record["result"])["transcription"] == {"status": update["transcriptionStatus"],
                                                             "status_details": update["transcriptionStatusDetails"]}


@pytest.mark.parametrize("type_", ["transcription_start", "transcription_stop", "transcription_update"])
def test_transcription_failed_fails_its_command_with_acs_codes(any_redis, type_: str) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    r, ar = any_redis
    make_command(r, "cmd_t", type_)
    info = {"code": 405, "subCode": 8522,
            "message": "Request not allowed when Transcription url not set during call setup."}
    ingest(ar, event("TranscriptionFailed", eid="e-f", ctx="cmd_t", resultInformation=info,
                     transcriptionUpdate={"transcriptionStatus": "transcriptionFailed",
                                          "transcriptionStatusDetails": "streamUrlMissing"}))
    record = r.hgetall(keys.command_key("cmd_t"))
    assert record["status"] == "failed"
    assert json.loads(record["error"]) == {"code": "acs_failed", "message": info["message"], "acs_code": 405,
                                           "acs_subcode": 8522}


@pytest.mark.parametrize(("type_", "kind", "data", "status"), [
    ("play_barge_in", "PlayCompleted", {}, "succeeded"),
    ("play_barge_in", "PlayCanceled", {"resultInformation": {"code": 400, "subCode": 8508, "message": "x"}},
     "failed"),
    ("recognize_barge_in", "RecognizeCompleted", {"recognitionType": "dtmf", "dtmfResult": {"tones": ["seven"]}},
     "succeeded"),
])
def test_a_barge_in_resolves_as_its_play_or_recognize(any_redis, type_: str, kind: str, data: dict[str, Any],  # type: ignore[no-untyped-def]  # noqa: F811
                                                      status: str) -> None:
    r, ar = any_redis
    make_command(r, "cmd_b", type_)
    ingest(ar, event(kind, eid="e-b", ctx="cmd_b", **data))
    assert r.hget(keys.command_key("cmd_b"), "status") == status
    if kind == "RecognizeCompleted":
        assert json.loads(r.hget(keys.command_key("cmd_b"), "result"))["digits"] == "7"
