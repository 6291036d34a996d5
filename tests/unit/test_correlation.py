"""Event correlation on both fakeredis and a real Redis: exactly one terminal state, only forward."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from tests import records
from workers import command, correlation, keys, ledger, scripts
from workers.command import Status
from workers.scripts import AutoPipeline


@pytest.fixture(params=["fake", "real"])
def any_redis(request: pytest.FixtureRequest) -> Iterator[tuple[redis.Redis, Callable[[], aioredis.Redis]]]:
    """The same contract on fakeredis and on the real redis-server (whose Lua is the one that counts).

    Yields a sync client for set-up and assertions, and a factory of async clients (one per event loop).
    """
    if request.param == "fake":
        server = fakeredis.FakeServer()
        yield (fakeredis.FakeRedis(server=server, decode_responses=True),
               lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True))
    else:
        url = request.getfixturevalue("redis_url")
        yield redis.Redis.from_url(url, decode_responses=True), lambda: aioredis.Redis.from_url(url,
                                                                                             decode_responses=True)


def make_command(r: redis.Redis, cid: str, type_: str, status: str = "waiting", cc: str = "cc-1") -> None:
    record = records.new_command(command_id=cid, client="alice", type_=type_, params={}, idempotency_key=cid,
                                call_connection_id=cc)
    r.hset(keys.command_key(cid), mapping=dict(zip(*[iter(command.flatten(record | {"status": status}))] * 2,
                                                   strict=True)))
    if cc:
        r.rpush(keys.call_commands_key(cc), cid)


def event(kind: str, *, eid: str, cc: str = "cc-1", ctx: str | None = None, **data: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"callConnectionId": cc, "serverCallId": "scid-1", "correlationId": "corr", **data}
    if ctx:
        payload["operationContext"] = ctx
    return {"id": eid, "type": f"Microsoft.Communication.{kind}", "source": f"calling/callConnections/{cc}",
            "time": "2026-11-25T10:00:00Z", "data": payload}


def ingest(new_client: Callable[[], aioredis.Redis], *events: dict[str, Any]) -> correlation.IngestReport:
    async def go() -> correlation.IngestReport:
        ar = new_client()
        try:
            return await correlation.ingest(AutoPipeline(ar), list(events), dedup_ttl_s=60, ttl_s=60, retention_s=3600)
        finally:
            await ar.aclose()
    return asyncio.run(go())


def status(r: redis.Redis, cid: str) -> str:
    return str(r.hget(keys.command_key(cid), "status"))


def test_event_resolves_the_command_named_by_operation_context(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_c", "connect", cc="")
    report = ingest(ar, event("CallConnected", eid="e1", ctx="cmd_c"))
    assert report.resolved == ["cmd_c"]
    record = r.hgetall(keys.command_key("cmd_c"))
    assert record["status"] == "succeeded"
    assert json.loads(record["result"])["server_call_id"] == "scid-1"
    assert json.loads(record["resolved_by"])["type"] == "CallConnected"
    assert r.hget(keys.call_key("cc-1"), "state") == "connected"
    assert r.hget(keys.call_key("cc-1"), "client") == "alice"


def test_early_event_resolves_a_command_still_running(any_redis) -> None:  # type: ignore[no-untyped-def]
    """The callback beat the HTTP response: the worker's later move to 'waiting' must not undo it."""
    r, ar = any_redis
    make_command(r, "cmd_c", "connect", status="running", cc="")
    ingest(ar, event("CallConnected", eid="e1", ctx="cmd_c"))
    outcome = scripts.run(r, ledger.transition("cmd_c", Status("waiting"), {}, only_from=(Status("running"),)))
    assert (outcome.outcome, outcome.status) == ("terminal", "succeeded")
    assert status(r, "cmd_c") == "succeeded"
    # The command names its call even though the HTTP response that would have said so has not arrived.
    assert r.hget(keys.command_key("cmd_c"), "call_connection_id") == "cc-1"


def test_duplicate_event_changes_nothing(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_c", "connect", cc="")
    first = event("CallConnected", eid="e1", ctx="cmd_c")
    report = ingest(ar, first, first)
    assert report.stored == 1 and report.duplicates == 1
    assert r.xlen(keys.call_events_key("cc-1")) == 1


def test_terminal_state_never_moves_and_the_late_event_is_kept(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_c", "connect", cc="")
    ingest(ar, event("ConnectFailed", eid="e1", ctx="cmd_c", resultInformation={"code": 500, "subCode": 8500}))
    ingest(ar, event("CallConnected", eid="e2", ctx="cmd_c"))
    record = r.hgetall(keys.command_key("cmd_c"))
    assert record["status"] == "failed"
    assert json.loads(record["error"])["acs_subcode"] == 8500
    assert r.xlen(keys.call_events_key("cc-1")) == 2


def test_call_disconnected_resolves_hang_up_and_fails_other_pending(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_h", "hang_up")
    make_command(r, "cmd_c", "connect", status="succeeded")
    make_command(r, "cmd_other", "connect", status="waiting")  # stands in for any other pending command
    report = ingest(ar, event("CallDisconnected", eid="e9", resultInformation={"code": 200, "subCode": 7000}))
    assert sorted(report.resolved) == ["cmd_h", "cmd_other"]
    assert status(r, "cmd_h") == "succeeded"
    assert status(r, "cmd_c") == "succeeded"
    assert status(r, "cmd_other") == "failed"
    assert json.loads(r.hget(keys.command_key("cmd_other"), "error"))["code"] == "call_ended"
    assert r.hget(keys.call_key("cc-1"), "state") == "disconnected"


def test_call_connected_without_operation_context_falls_back_to_the_call(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_c", "connect", cc="")
    r.hset(keys.call_key("cc-1"), mapping={"connect_command": "cmd_c", "client": "alice"})
    ingest(ar, event("CallConnected", eid="e1"))
    assert status(r, "cmd_c") == "succeeded"


def test_events_for_unknown_calls_are_kept(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    report = ingest(ar, event("PlayCompleted", eid="e1", cc="cc-unknown", ctx="cmd_nope"))
    assert report.stored == 1 and report.resolved == []
    assert r.xlen(keys.call_events_key("cc-unknown")) == 1


def test_a_connect_whose_answer_was_never_recorded_joins_its_call_on_call_connected(any_redis) -> None:  # type: ignore[no-untyped-def]
    """Its worker was killed after ACS made the call: only the event says which call it is."""
    r, ar = any_redis
    make_command(r, "cmd_c", "connect", status="running", cc="")
    r.hset(keys.command_key("cmd_c"), "room_id", "room-1")
    make_command(r, "cmd_p", "play")  # accepted for the call once CallConnected told the client of it
    ingest(ar, event("CallConnected", eid="e1", ctx="cmd_c"))
    assert status(r, "cmd_c") == "succeeded"
    assert r.lrange(keys.call_commands_key("cc-1"), 0, -1) == ["cmd_c", "cmd_p"]
    assert r.hget(keys.command_key("cmd_c"), "call_connection_id") == "cc-1"
    assert r.get(keys.room_call_key("room-1")) == "cc-1" and r.hget(keys.call_key("cc-1"), "room_id") == "room-1"
    ingest(ar, event("CallConnected", eid="e2", ctx="cmd_c"))  # a second one (duplicate by content) adds nothing
    assert r.lrange(keys.call_commands_key("cc-1"), 0, -1) == ["cmd_c", "cmd_p"]
    # Had the worker lived, its record of ACS's answer (after this early event) lists nothing twice either.
    conn = command.Command.from_hash(r.hgetall(keys.command_key("cmd_c")))
    scripts.run(r, ledger.sent(conn, Status.WAITING, {"sent_at": "now"}, made=ledger.SentTo(call_made="cc-1"), ttl_s=60,
                               wait_deadline_ms=0))
    assert r.lrange(keys.call_commands_key("cc-1"), 0, -1) == ["cmd_c", "cmd_p"]


def test_a_connect_already_listed_is_not_listed_twice(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_c", "connect")  # sent.lua listed it with its call
    ingest(ar, event("CallConnected", eid="e1", ctx="cmd_c"))
    assert r.lrange(keys.call_commands_key("cc-1"), 0, -1) == ["cmd_c"]


@pytest.mark.parametrize(("data", "expected"), [
    ({"recognitionType": "dtmf", "dtmfResult": {"tones": ["four", "two", "pound"]}},
     {"recognition_type": "dtmf", "tones": ["four", "two", "pound"], "digits": "42#"}),
    # Older events (the 2022 docs' sample) carry the same tones as collectTonesResult.
    ({"recognitionType": "dtmf", "collectTonesResult": {"tones": ["one", "asterisk"]}},
     {"recognition_type": "dtmf", "tones": ["one", "asterisk"], "digits": "1*"}),
    ({"recognitionType": "speech", "speechResult": {"speech": "check in", "confidence": 0.9}},
     {"recognition_type": "speech", "speech": {"text": "check in", "confidence": 0.9}}),
    ({"recognitionType": "choices", "choiceResult": {"label": "yes", "recognizedPhrase": "yep", "confidence": 0.8}},
     {"recognition_type": "choices", "choice": {"label": "yes", "recognized_phrase": "yep", "confidence": 0.8}}),
])
def test_recognize_completed_puts_what_was_recognized_in_the_result(any_redis, data: dict[str, Any],  # type: ignore[no-untyped-def]
                                                                     expected: dict[str, Any]) -> None:
    r, ar = any_redis
    make_command(r, "cmd_r", "recognize")
    ingest(ar, event("RecognizeCompleted", eid="e-rec", ctx="cmd_r", **data))
    result = json.loads(r.hget(keys.command_key("cmd_r"), "result"))
    assert {k: result[k] for k in expected} == expected
    assert result["server_call_id"] == "scid-1"


def _answered(r: redis.Redis, cid: str) -> None:
    """What the worker records when ACS answers an add: the invitation and the participant (sent.lua)."""
    cmd = command.Command.from_hash(r.hgetall(keys.command_key(cid)))
    answer = {"result": {"invitation_id": "inv-1", "participant": {"phone_number": "+14255550123"}}}
    scripts.run(r, ledger.sent(cmd, Status.WAITING, answer, made=ledger.SentTo(), ttl_s=60, wait_deadline_ms=10**13))


def test_an_adds_answer_survives_the_event_that_resolves_it(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_a", "add_participant", status="running")
    _answered(r, "cmd_a")
    ingest(ar, event("AddParticipantSucceeded", eid="e-add", ctx="cmd_a"))
    record = r.hgetall(keys.command_key("cmd_a"))
    assert record["status"] == "succeeded"
    assert json.loads(record["result"]) == {"invitation_id": "inv-1", "participant": {"phone_number": "+14255550123"},
                                            "call_connection_id": "cc-1", "server_call_id": "scid-1",
                                            "correlation_id": "corr"}


def test_an_adds_answer_arriving_after_its_event_joins_the_result(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_a", "add_participant", status="running")
    ingest(ar, event("AddParticipantSucceeded", eid="e-add", ctx="cmd_a"))
    _answered(r, "cmd_a")
    result = json.loads(r.hget(keys.command_key("cmd_a"), "result"))
    assert result["invitation_id"] == "inv-1" and result["server_call_id"] == "scid-1"


def test_a_recording_event_naming_another_connection_joins_callqs_call_timeline(any_redis) -> None:  # type: ignore[no-untyped-def]
    r, ar = any_redis
    make_command(r, "cmd_s", "start_recording", cc="cc-callq")
    r.hset(keys.recording_key("rec-1"), mapping={"call_connection_id": "cc-callq", "start_command": "cmd_s"})
    r.rpush(keys.recording_commands_key("rec-1"), "cmd_s")
    ingest(ar, event("RecordingStateChanged", eid="e-rsc", cc="cc-acs-other", recordingId="rec-1", state="active"))
    assert status(r, "cmd_s") == "succeeded"
    [(_, fields)] = r.xrange(keys.call_events_key("cc-callq"))
    assert json.loads(fields["event"])["id"] == "e-rsc"
    assert r.xlen(keys.call_events_key("cc-acs-other")) == 1  # and where ACS said


# Each failure event ACS sends and the command type it ends, with ACS's resultInformation.
_FAILURES = [
    ("PlayFailed", "play", {"code": 400, "subCode": 8535, "message": "Action failed, file format is invalid."},
     {"failedPlaySourceIndex": 0}),
    ("RecognizeFailed", "recognize", {"code": 400, "subCode": 8510,
                                      "message": "Action failed, initial silence timeout reached."}, {}),
    ("SendDtmfTonesFailed", "send_dtmf", {"code": 500, "subCode": 9999, "message": "Unknown internal server error."},
     {}),
    ("RemoveParticipantFailed", "remove_participant", {"code": 404, "subCode": 8522, "message": "Not found."},
     {"participant": {"rawId": "4:+14255550123"}}),
    ("CancelAddParticipantFailed", "cancel_add_participant", {"code": 400, "subCode": 8523, "message": "Too late."},
     {"invitationId": "inv-1"}),
    ("AddParticipantFailed", "add_participant", {"code": 480, "subCode": 8544,
                                                 "message": "Call failed, callee unreachable."}, {}),
]


@pytest.mark.parametrize(("kind", "type_", "info", "extra"), _FAILURES)
def test_a_failure_event_fails_its_command_with_acs_codes_and_message(any_redis, kind: str, type_: str,  # type: ignore[no-untyped-def]
                                                                     info: dict[str, Any],
                                                                     extra: dict[str, Any]) -> None:
    r, ar = any_redis
    make_command(r, "cmd_f", type_)
    report = ingest(ar, event(kind, eid="e-f", ctx="cmd_f", resultInformation=info, **extra))
    assert report.resolved == ["cmd_f"]
    record = r.hgetall(keys.command_key("cmd_f"))
    assert record["status"] == "failed"
    assert json.loads(record["error"]) == {"code": "acs_failed", "message": info["message"],
                                           "acs_code": info["code"], "acs_subcode": info["subCode"]}
    assert json.loads(record["resolved_by"])["type"] == kind


_START_FAILED = {"code": 500, "subCode": 8589, "message": "Record throttled."}


def _recording_started(r: redis.Redis, cid: str, rid: str, cc: str) -> None:
    """What the worker records when ACS answers a start (sent.lua): the command, listed under its recording."""
    cmd = command.Command.from_hash(r.hgetall(keys.command_key(cid)))
    scripts.run(r, ledger.sent(cmd, Status.WAITING, {"recording_id": rid, "result": {"recording_id": rid}},
                               made=ledger.SentTo(recording_id=rid), ttl_s=60, wait_deadline_ms=10**13))
    assert r.hget(keys.recording_key(rid), "call_connection_id") == cc


def test_start_recording_failed_fails_the_start_of_its_recording(any_redis) -> None:  # type: ignore[no-untyped-def]
    """It has no operationContext (a start cannot send one): its recordingId finds the start, whichever connection
    it names; the event joins callq's call timeline too."""
    r, ar = any_redis
    make_command(r, "cmd_s", "start_recording", status="running", cc="cc-callq")
    _recording_started(r, "cmd_s", "rec-1", "cc-callq")
    report = ingest(ar, event("StartRecordingFailed", eid="e-srf", cc="cc-acs-other", recordingId="rec-1",
                              resultInformation=_START_FAILED))
    assert report.resolved == ["cmd_s"]
    record = r.hgetall(keys.command_key("cmd_s"))
    assert record["status"] == "failed"
    assert json.loads(record["error"]) == {"code": "acs_failed", "message": "Record throttled.", "acs_code": 500,
                                           "acs_subcode": 8589}
    assert json.loads(record["result"]) == {"recording_id": "rec-1"}  # the answer stays: ACS did name it
    assert r.hget(keys.recording_key("rec-1"), "state") == "failed"
    [(_, fields)] = r.xrange(keys.call_events_key("cc-callq"))
    assert json.loads(fields["event"])["id"] == "e-srf"


def test_start_recording_failed_before_the_starts_answer_is_kept_for_it(any_redis) -> None:  # type: ignore[no-untyped-def]
    """ACS may send it before the start's answer names the recording: it is kept on the recording, and what it
    means for the start is what the worker applies once it registers the recording (Runtime._catch_up_recording)."""
    r, ar = any_redis
    make_command(r, "cmd_s", "start_recording", status="running")
    report = ingest(ar, event("StartRecordingFailed", eid="e-srf", recordingId="rec-1",
                              resultInformation=_START_FAILED))
    assert report.resolved == [] and status(r, "cmd_s") == "running"  # its recording is not known yet
    last = json.loads(r.hget(keys.recording_key("rec-1"), "last_event"))
    step = correlation.outcome("start_recording", last)
    assert step is not None and step[0] == Status.FAILED
    assert step[1]["error"] == {"code": "acs_failed", "message": "Record throttled.", "acs_code": 500,
                                "acs_subcode": 8589}


def test_a_recording_event_before_the_starts_answer_joins_callqs_timeline_once_the_answer_comes(any_redis) -> None:  # type: ignore[no-untyped-def]
    """Real ACS names the recorder's connection, not callq's; an event that beats the start's answer cannot tell
    whose call it is about yet. It is kept with the recording, and recording the answer puts it on the timeline of
    the call that started the recording (an event naming callq's own connection is there already)."""
    r, ar = any_redis
    make_command(r, "cmd_s", "start_recording", status="running", cc="cc-callq")
    ingest(ar, event("RecordingStateChanged", eid="e-early", cc="cc-acs-other", recordingId="rec-1", state="active"),
           event("RecordingStateChanged", eid="e-own", cc="cc-callq", recordingId="rec-1", state="active"))
    assert r.xlen(keys.call_events_key("cc-callq")) == 1  # only the one naming it, so far
    _recording_started(r, "cmd_s", "rec-1", "cc-callq")
    ids = [json.loads(fields["event"])["id"] for _, fields in r.xrange(keys.call_events_key("cc-callq"))]
    assert ids == ["e-own", "e-early"]
    assert not r.exists(keys.recording_early_events_key("rec-1"))
    ingest(ar, event("RecordingStateChanged", eid="e-late", cc="cc-acs-other", recordingId="rec-1", state="inactive"))
    assert r.xlen(keys.call_events_key("cc-callq")) == 3 and not r.exists(keys.recording_early_events_key("rec-1"))


def test_a_start_recording_failed_without_recording_id_fails_the_calls_pending_start(any_redis) -> None:  # type: ignore[no-untyped-def]
    """Designed for the worst case (no recordingId): the event falls back to its call's oldest pending start."""
    r, ar = any_redis
    make_command(r, "cmd_p", "play")
    make_command(r, "cmd_s", "start_recording")
    report = ingest(ar, event("StartRecordingFailed", eid="e-srf", resultInformation=_START_FAILED))
    assert report.resolved == ["cmd_s"] and status(r, "cmd_p") == "waiting"


def test_a_tone_failed_fails_no_command_and_joins_the_timeline(any_redis) -> None:  # type: ignore[no-untyped-def]
    """Continuous DTMF's start succeeded on its 200; recognition failing later is news for the call, not a
    verdict on that request (nor on a pending stop)."""
    r, ar = any_redis
    make_command(r, "cmd_start", "continuous_dtmf_start", status="succeeded")
    make_command(r, "cmd_stop", "continuous_dtmf_stop")
    report = ingest(ar, event("ContinuousDtmfRecognitionToneFailed", eid="e-tf", ctx="cmd_start",
                              resultInformation={"code": 500, "subCode": 9999, "message": "Unknown."}))
    assert report.resolved == [] and report.stored == 1
    assert (status(r, "cmd_start"), status(r, "cmd_stop")) == ("succeeded", "waiting")
    assert "late_event" not in r.hgetall(keys.command_key("cmd_start"))
    [(_, fields)] = r.xrange(keys.call_events_key("cc-1"))
    assert json.loads(fields["event"])["type"].endswith("ContinuousDtmfRecognitionToneFailed")
