"""Pure rules turning a recognize request and a phone's script into the event ACS would send."""

from __future__ import annotations

import re
from typing import Any

from .events import Result
from .model import PhoneScript

TONES = frozenset("zero one two three four five six seven eight nine a b c d pound asterisk".split())
# A speech locale: language, optional script, region (en-US, zh-Hans-CN, es-419).
LOCALE = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z]{4})?-(?:[A-Za-z]{2}|[0-9]{3})")

DEFAULT_SILENCE_S = 5.0
SILENCE = (400, 8510, "Action failed, initial silence timeout reached.")
STOP_TONE = (200, 8514, "Action completed as stop tone was detected.")
MAX_DIGITS = (200, 8531, "Action completed, max digits received.")
INTER_DIGIT_TIMEOUT = (400, 8532, "Action failed, inter-digit silence timeout reached.")
DTMF_OPTION = (200, 8533, "Action completed, DTMF option matched.")
SPEECH_OPTION = (200, 8545, "Action completed, speech option matched.")
SPEECH = (200, 8569, "Action completed, speech was recognized.")
NO_MATCH = (400, 8547, "Action failed, recognized phrase does not match a valid option.")
WRONG_TONE = (500, 8534, "Action failed, incorrect tone entered.")
CONFIDENCE = 0.95
_KEYS = {
    **{str(d): n for d, n in enumerate("zero one two three four five six seven eight nine".split())},
    "#": "pound",
    "*": "asterisk",
    "a": "a",
    "b": "b",
    "c": "c",
    "d": "d",
}

Outcome = tuple[float, str, Result, dict[str, Any]]  # delay_s, event name, result, extra data fields


def tones_of(keys: str) -> list[str]:
    """``"12#"`` → ``["one", "two", "pound"]`` (unknown characters are ignored)."""
    return [_KEYS[k] for k in keys.lower() if k in _KEYS]


def recognition_outcome(input_type: str, options: dict[str, Any], script: PhoneScript | None) -> Outcome:
    """What happens after a recognize; without scripted input it fails after the initial silence timeout."""
    silence_s = options.get("initialSilenceTimeoutInSeconds")
    silence_s = float(silence_s) if isinstance(silence_s, int | float) else DEFAULT_SILENCE_S
    silent: Outcome = (silence_s, "RecognizeFailed", SILENCE, {})
    if script is None or not (script.dtmf or script.speech):
        return silent
    delay_s = script.input_delay_ms / 1000.0
    if input_type == "choices":
        return _choices(delay_s, options.get("choices") or [], script)
    if script.speech and input_type in ("speech", "speechOrDtmf"):
        return delay_s, "RecognizeCompleted", SPEECH, _speech(script.speech)
    if script.dtmf and input_type in ("dtmf", "speechOrDtmf"):
        return _dtmf(delay_s, options.get("dtmfOptions") or {}, tones_of(script.dtmf))
    return silent


def recognition_delay_s(outcome: Outcome, options: dict[str, Any], *, prompt_s: float) -> float:
    """How long after the request ``outcome`` happens, with a prompt lasting ``prompt_s``.

    The initial silence timer runs once the prompt has played. The caller's input counts from when it is heard:
    at once with ``interruptPrompt`` (input cuts the prompt short), else after the prompt. Speech is recognized
    once the caller has been silent for ``speechOptions.endSilenceTimeoutInMs`` after it."""
    delay_s, _, result, extra = outcome
    if result == SILENCE:
        return prompt_s + delay_s
    heard_from_s = 0.0 if options.get("interruptPrompt") else prompt_s
    speech = options.get("speechOptions")
    end_silence_ms = speech.get("endSilenceTimeoutInMs") if isinstance(speech, dict) else None
    if "speechResult" not in extra or not isinstance(end_silence_ms, int):
        end_silence_ms = 0
    return heard_from_s + delay_s + end_silence_ms / 1000.0


def _speech(text: str) -> dict[str, Any]:
    return {"recognitionType": "speech", "speechResult": {"speech": text, "confidence": CONFIDENCE}}


def _dtmf(delay_s: float, dtmf_options: dict[str, Any], tones: list[str]) -> Outcome:
    max_tones = dtmf_options.get("maxTonesToCollect") or 1
    stop_tones = set(dtmf_options.get("stopTones") or [])
    collected: list[str] = []
    result = INTER_DIGIT_TIMEOUT
    for tone in tones:
        if tone in stop_tones:
            result = STOP_TONE
            break
        collected.append(tone)
        if len(collected) >= max_tones:
            result = MAX_DIGITS
            break
    return delay_s, "RecognizeCompleted", result, {"recognitionType": "dtmf", "dtmfResult": {"tones": collected}}


def _choices(delay_s: float, choices: list[Any], script: PhoneScript) -> Outcome:
    valid = [c for c in choices if isinstance(c, dict)]
    if script.speech:
        said = script.speech.strip().lower()
        for choice in valid:
            if said in (str(p).strip().lower() for p in choice.get("phrases") or []):
                matched = {"label": choice.get("label"), "recognizedPhrase": script.speech, "confidence": CONFIDENCE}
                return delay_s, "RecognizeCompleted", SPEECH_OPTION, _choice(matched)
        return delay_s, "RecognizeFailed", NO_MATCH, {}
    pressed = tones_of(script.dtmf)[:1]
    for choice in valid:
        if pressed and choice.get("tone") == pressed[0]:
            return delay_s, "RecognizeCompleted", DTMF_OPTION, _choice({"label": choice.get("label")})
    return delay_s, "RecognizeFailed", WRONG_TONE, {}


def _choice(choice_result: dict[str, Any]) -> dict[str, Any]:
    return {"recognitionType": "choices", "choiceResult": choice_result}
