"""Scripted failures (``/_sim/failures``): an operation ACS accepted ends in the failure event real ACS sends.

A rule names an operation (the request log's names), optionally a phone number (the operation's target: the
participant added, removed, sent tones or recognized; for play, one named in ``playTo`` or, playing to everyone,
one in the call; for start recording, one in the recorded call) and a call connection (for start recording, any
connection of the recorded call), and how many matching requests it fails (``times``, default 1; null: all).
The request is still validated and answered as ACS answers it; what it would have done does not happen, and its
failure event goes where its success event would have gone. The oldest rule that matches is used.

Codes: ``PlayFailed`` 400/8535 and 400/8536 and ``RecognizeFailed`` 400/8510 and 400/8532 with their messages are
ACS's (MicrosoftDocs how-tos "play-action" and "recognize-action", "Event codes"), as are ``TranscriptionFailed``'s
500/8578 (no WebSocket connection: the default for a start) and 400/8565 for SSML the speech service refuses
("real-time-transcription-tutorial" and "play-action", "Event codes"). ACS documents no code for the
other failure events; their defaults are the simulator's choice: ACS's generic 500/9999 "Unknown internal server
error." (its message for an unknown failure), and for ``AddParticipantFailed`` the documented subcode 8544 (callee
unreachable) with SIP's 480, as the busy (486) and declined (603) answers carry SIP codes. A rule may set any
``code``, ``sub_code`` and ``message``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

Result = tuple[int, int, str]  # code, subCode, message (as events.Result)

UNKNOWN = (500, 9999, "Unknown internal server error.")
FILE_FORMAT = (400, 8535, "Action failed, file format is invalid.")
FILE_DOWNLOAD = (400, 8536, "Action failed, file could not be downloaded.")
INITIAL_SILENCE = (400, 8510, "Action failed, initial silence timeout reached.")
PROMPT_FAILED = (500, 8511, "Action failed, encountered failure while trying to play the prompt.")
UNREACHABLE = (480, 8544, "Call failed, callee unreachable.")
WEBSOCKET = (500, 8578, "Action failed, not able to establish WebSocket connection.")
SPEECH_SERVICE = (400, 8565, "Action failed due to a bad request to Cognitive Services. Check your input parameters.")

# operation (as /_sim/log names it) -> (the failure event ACS sends for it, the default result)
EVENTS: dict[str, tuple[str, Result]] = {
    "addParticipant": ("AddParticipantFailed", UNREACHABLE),
    "removeParticipant": ("RemoveParticipantFailed", UNKNOWN),
    "cancelAddParticipant": ("CancelAddParticipantFailed", UNKNOWN),
    "sendDtmfTones": ("SendDtmfTonesFailed", UNKNOWN),
    "play": ("PlayFailed", FILE_DOWNLOAD),
    "recognize": ("RecognizeFailed", INITIAL_SILENCE),
    "startContinuousDtmfRecognition": ("ContinuousDtmfRecognitionToneFailed", UNKNOWN),
    "startRecording": ("StartRecordingFailed", UNKNOWN),
    "startTranscription": ("TranscriptionFailed", WEBSOCKET),
    "stopTranscription": ("TranscriptionFailed", UNKNOWN),
}
_WITH_PLAY_SOURCE = ("play", "recognize")  # their failure events carry failedPlaySourceIndex
_E164 = re.compile(r"\+[1-9]\d{6,14}")
_KEYS = ("operation", "phone_number", "call_connection_id", "times", "code", "sub_code", "message",
         "failed_play_source_index")
# A file play source the simulator cannot play, without fetching it (it never does): a host under ``.invalid``
# (RFC 2606: never resolves, so ACS could not download it either), or a path naming a format that is not audio.
_NOT_AUDIO = (".txt", ".html", ".htm", ".json", ".xml", ".pdf", ".png", ".jpg", ".jpeg", ".gif", ".svg", ".zip")


@dataclass
class Rule:
    """One scripted failure: which requests it matches, what their failure event says, how often it fires."""

    id: str
    operation: str
    result: Result
    phone_number: str | None = None
    call_connection_id: str | None = None
    times: int | None = 1  # None: every matching request
    failed_play_source_index: int | None = None
    matched: int = 0

    @property
    def event(self) -> str:
        """The failure event's name (``PlayFailed``, ...)."""
        return EVENTS[self.operation][0]

    @property
    def spent(self) -> bool:
        return self.times is not None and self.matched >= self.times

    def applies(self, operation: str, phones: Iterable[str], call_connection_ids: Iterable[str]) -> bool:
        """True when a request of ``operation`` targeting ``phones`` on ``call_connection_ids`` is this rule's."""
        if self.spent or operation != self.operation:
            return False
        if self.phone_number is not None and self.phone_number not in phones:
            return False
        return self.call_connection_id is None or self.call_connection_id in call_connection_ids

    def extra(self) -> dict[str, Any]:
        """Fields the failure event carries besides ``resultInformation``."""
        index = self.failed_play_source_index
        if index is None and (self.operation == "play" or self.result[1] == PROMPT_FAILED[1]):
            index = 0
        return {} if index is None else {"failedPlaySourceIndex": index}

    def to_json(self) -> dict[str, Any]:
        """As ``/_sim/failures`` shows it."""
        code, sub_code, message = self.result
        return {"id": self.id, "operation": self.operation, "event": self.event, "phone_number": self.phone_number,
                "call_connection_id": self.call_connection_id, "times": self.times, "matched": self.matched,
                "result_information": {"code": code, "subCode": sub_code, "message": message},
                "failed_play_source_index": self.extra().get("failedPlaySourceIndex")}


def _int(value: Any, key: str, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{key} must be an integer >= {low}, got {value!r}")
    return value


def _optional_int(value: Any, key: str, low: int) -> int | None:
    return None if value is None else _int(value, key, low)


def parse_rule(data: object, rule_id: str) -> Rule:
    """A rule from ``POST /_sim/failures``'s body; raises ValueError naming the first bad key or value."""
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    unknown = sorted(set(data) - set(_KEYS))
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; known: {list(_KEYS)}")
    operation = data.get("operation")
    if operation not in EVENTS:
        raise ValueError(f"operation must be one of {sorted(EVENTS)}, got {operation!r}")
    phone = data.get("phone_number")
    if phone is not None and not (isinstance(phone, str) and _E164.fullmatch(phone)):
        raise ValueError(f"phone_number must be an E.164 number like +16045550100, got {phone!r}")
    cc = data.get("call_connection_id")
    if cc is not None and not (isinstance(cc, str) and cc):
        raise ValueError("call_connection_id must be a non-empty string")
    if "failed_play_source_index" in data and operation not in _WITH_PLAY_SOURCE:
        raise ValueError(f"failed_play_source_index applies to {list(_WITH_PLAY_SOURCE)} only")
    message = data.get("message")
    if message is not None and not isinstance(message, str):
        raise ValueError("message must be a string")
    code, sub_code, default_message = EVENTS[operation][1]
    result = (_int(data.get("code", code), "code", 100), _int(data.get("sub_code", sub_code), "sub_code", 0),
              default_message if message is None else message)
    return Rule(rule_id, operation, result, phone, cc, _optional_int(data.get("times", 1), "times", 1),
                _optional_int(data.get("failed_play_source_index"), "failed_play_source_index", 0))


@dataclass
class FailureRules:
    """Every rule made since the last reset, spent ones included (``matched`` shows what each did)."""

    rules: list[Rule] = field(default_factory=list)
    made: int = 0

    def add(self, data: object) -> Rule:
        """Parse and keep a rule (ValueError when the body is bad)."""
        rule = parse_rule(data, f"failure-{self.made + 1}")
        self.made += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: str) -> bool:
        """Forget one rule; False when there is none by that id."""
        kept = [r for r in self.rules if r.id != rule_id]
        found, self.rules = len(kept) < len(self.rules), kept
        return found

    def take(self, operation: str, *, phones: Iterable[str] = (), call_connection_ids: Iterable[str] = ()
             ) -> Rule | None:
        """The oldest rule matching this request, counted as used once more; None when no rule fails it."""
        phones, ccs = set(phones), set(call_connection_ids)
        for rule in self.rules:
            if rule.applies(operation, phones, ccs):
                rule.matched += 1
                return rule
        return None


def unplayable(sources: list[Any]) -> tuple[int, Result] | None:
    """The first source ACS could not play (its index and PlayFailed's result): a file judged from its URL alone,
    SSML that is not one well-formed ``<speak>`` document (the speech service refuses it: 400/8565)."""
    for index, source in enumerate(sources):
        if not isinstance(source, dict):
            continue
        ssml = (source.get("ssml") or {}).get("ssmlText") if isinstance(source.get("ssml"), dict) else None
        if isinstance(ssml, str) and not _speakable(ssml):
            return index, SPEECH_SERVICE
        uri = (source.get("file") or {}).get("uri") if isinstance(source.get("file"), dict) else None
        if not isinstance(uri, str):
            continue
        parts = urlsplit(uri)
        if (parts.hostname or "").endswith(".invalid"):
            return index, FILE_DOWNLOAD
        if parts.path.lower().endswith(_NOT_AUDIO):
            return index, FILE_FORMAT
    return None


def _speakable(ssml: str) -> bool:
    """Well-formed XML whose root is SSML's ``speak`` (in its namespace or none). No DTD is allowed: the
    simulator parses what any client sends, and entity expansion is not something it needs."""
    if "<!DOCTYPE" in ssml.upper():
        return False
    try:
        root = ElementTree.fromstring(ssml)
    except ElementTree.ParseError:
        return False
    return root.tag in ("speak", "{http://www.w3.org/2001/10/synthesis}speak")
