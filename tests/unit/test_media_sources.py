"""How play and recognize commands hand their sources to the SDK: text-to-speech options on each TextSource (callq's
default voice only where the body chose none), and a recognize's several prompts as a list, which the SDK sends as
``playPrompts`` (one prompt stays ``playPrompt``). Checked through the SDK's own serialization to ACS's JSON."""

from __future__ import annotations

from typing import Any

from workers.command import Command, Status
from workers.operations import OPERATIONS
from workers.settings import Settings

ENDPOINT = "2c3a9a6e-5d1f-4b1e-9f7e-0c5b3a1d2e4f"


class _Connection:
    """Records what the operation asked of the SDK's call connection."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def play_media(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("play_media", args, kwargs))

    def start_recognizing_media(self, *args: Any, **kwargs: Any) -> None:
        self.calls.append(("start_recognizing_media", args, kwargs))


class _Client:
    def __init__(self) -> None:
        self.connection = _Connection()

    def get_call_connection(self, call_connection_id: str) -> _Connection:
        return self.connection


def _wire(source: Any) -> dict[str, Any]:
    """A play source as the SDK puts it on the wire (ACS's camelCase names)."""
    serialized: dict[str, Any] = source._to_generated().serialize()  # the SDK's own step before sending
    return serialized


def _sent(type_: str, params: dict[str, Any], settings: Settings) -> tuple[tuple[Any, ...], dict[str, Any]]:
    client = _Client()
    cmd = Command(id="cmd-1", type=type_, status=Status.RUNNING, params=params, call_connection_id="cc-1")
    OPERATIONS[type_].send(client, cmd, settings)  # type: ignore[arg-type]  # a stand-in for the SDK client
    [(_, args, kwargs)] = client.connection.calls
    return args, kwargs


def test_text_to_speech_options_reach_the_text_source(settings: Settings) -> None:
    args, _ = _sent("play", {"loop": False, "targets": [], "sources": [
        {"text": "Bonjour", "source_locale": "fr-FR", "voice_kind": "female"},
        {"text": "Hi", "voice_name": "ContosoNeural", "custom_voice_endpoint_id": ENDPOINT},
        {"text": "Plain"}]}, settings)
    assert [_wire(s) for s in args[0]] == [
        {"kind": "text", "text": {"text": "Bonjour", "sourceLocale": "fr-FR", "voiceKind": "female"}},
        {"kind": "text", "text": {"text": "Hi", "voiceName": "ContosoNeural", "customVoiceEndpointId": ENDPOINT}},
        {"kind": "text", "text": {"text": "Plain", "voiceName": "en-US-NancyNeural"}}]  # no choice: callq's default


def test_a_recognize_sends_several_prompts_as_a_list_and_one_as_one(settings: Settings) -> None:
    base = {"participant": "4:+14255550123", "input_type": "dtmf", "max_tones": 1}
    _, kwargs = _sent("recognize", {**base, "prompts": [{"text": "Welcome.", "voice_kind": "male"},
                                                        {"file_url": "https://example.org/menu.wav"}]}, settings)
    assert [_wire(s) for s in kwargs["play_prompt"]] == [
        {"kind": "text", "text": {"text": "Welcome.", "voiceKind": "male"}},
        {"kind": "file", "file": {"uri": "https://example.org/menu.wav"}}]
    _, kwargs = _sent("recognize", {**base, "prompt": {"text": "Press 1."}}, settings)
    assert _wire(kwargs["play_prompt"]) == {"kind": "text", "text": {"text": "Press 1.",
                                                                      "voiceName": "en-US-NancyNeural"}}
