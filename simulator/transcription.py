"""Live transcription: the options a connect sets it up with, and start / stop / update with their events.

ACS streams the transcript to the WebSocket named at connect (``transcriptionOptions.transportUrl``); the simulator
opens no WebSocket and sends no transcript, only the Call Automation events (TranscriptionStarted / Stopped /
Updated / Failed). Codes and messages are those of ACS's "Event codes" table (MicrosoftDocs how-to
"real-time-transcription-tutorial"). ACS accepts the request (202) and reports a refusal as TranscriptionFailed.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from . import events
from .errors import invalid_request
from .model import Connection, Transcription
from .operation import Reply, Req, callback_url, connected, optional_str
from .recognition import LOCALE
from .world import Sim

URL_NOT_SET = (405, 8522, "Request not allowed when Transcription url not set during call setup.")
COGNITIVE_NOT_SET = (405, 8522, "Request not allowed when Cognitive Service Configuration not set during call "
                                "setup.")
LOCALE_MISSING = (400, 8523, "Invalid Request, locale is missing.")
LOCALE_WITHOUT_REGION = (400, 8523, "Invalid Request, only locales that contain region information are supported.")
UPDATE_ON_CONNECT = (405, 8520, "UpdateTranscription is not supported for connection created with Connect "
                                "interface.")


def setup(body: dict[str, Any]) -> Transcription | None:
    """The connect request's ``transcriptionOptions`` (None when absent); 400/8523 when malformed."""
    options = body.get("transcriptionOptions")
    if options is None:
        return None
    if not isinstance(options, dict):
        raise invalid_request("transcriptionOptions must be an object")
    url = optional_str(options, "transportUrl") or ""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.netloc:
        raise invalid_request("The field TranscriptionOptions.TransportUrl is invalid")
    if str(options.get("transportType", "")).lower() != "websocket":
        raise invalid_request("TranscriptionOptions.TransportType must be websocket")
    locale = optional_str(options, "locale")
    if not locale:
        raise invalid_request("TranscriptionOptions.Locale is required")
    for flag in ("startTranscription", "enableIntermediateResults"):
        if not isinstance(options.get(flag, False), bool):
            raise invalid_request(f"TranscriptionOptions.{flag} must be true or false")
    if "startTranscription" not in options:
        raise invalid_request("TranscriptionOptions.StartTranscription is required")
    return Transcription(url, locale, intermediate_results=bool(options.get("enableIntermediateResults")),
                         start_on_connect=bool(options["startTranscription"]))


def cognitive_endpoint(body: dict[str, Any]) -> str | None:
    """``callIntelligenceOptions.cognitiveServicesEndpoint`` of a connect request; 400/8523 when malformed."""
    options = body.get("callIntelligenceOptions")
    if options is None:
        return None
    if not isinstance(options, dict):
        raise invalid_request("callIntelligenceOptions must be an object")
    return callback_url(options, "cognitiveServicesEndpoint")


def subscription(conn: Connection) -> dict[str, Any] | None:
    """``transcriptionSubscription`` of the call's properties, when the connection was set up for transcription."""
    found = conn.transcription
    if found is None:
        return None
    types = ["final", "intermediate"] if found.intermediate_results else ["final"]
    return {"id": found.subscription_id, "state": found.state, "subscribedResultTypes": types,
            "locale": found.locale}


def _event(conn: Connection, name: str, result: events.Result, context: str | None, status: str,
           details: str) -> dict[str, Any]:
    return events.call_event(conn, name, result=result, operation_context=context, transcriptionUpdate={
        "transcriptionStatus": status, "transcriptionStatusDetails": details})


def _failed(sim: Sim, conn: Connection, result: events.Result, context: str | None, url: str | None,
            details: str = "unspecifiedError") -> None:
    sim.emit(conn, _event(conn, "TranscriptionFailed", result, context, "transcriptionFailed", details), url)


def _refusal(sim: Sim, conn: Connection, locale: str | None) -> tuple[events.Result, str] | None:
    """Why ACS would refuse to transcribe ``conn`` in ``locale`` (result and status details), if it would."""
    if conn.transcription is None:
        return URL_NOT_SET, "streamUrlMissing"
    if not conn.cognitive_services_endpoint:
        return COGNITIVE_NOT_SET, "unspecifiedError"
    if not locale:
        return LOCALE_MISSING, "badRequest"
    if not LOCALE.fullmatch(locale):
        return LOCALE_WITHOUT_REGION, "badRequest"
    return None


def begin(sim: Sim, conn: Connection, locale: str | None, context: str | None, url: str | None) -> None:
    """Start transcribing (a start request, or ``startTranscription`` at connect): TranscriptionStarted, or
    TranscriptionFailed with ACS's reason. Starting while it runs starts it again (ACS documents no refusal)."""
    transcription = conn.transcription
    locale = locale or (transcription.locale if transcription else None)
    refused = _refusal(sim, conn, locale)
    if refused is None:
        failure = sim.scripted_failure("startTranscription", targets=(), connections=[conn.call_connection_id])
        refused = (failure.result, "unspecifiedError") if failure else None
    if refused is not None:
        _failed(sim, conn, refused[0], context, url, refused[1])
        return
    assert transcription is not None and locale is not None
    transcription.state, transcription.locale = "active", locale
    transcription.subscription_id = transcription.subscription_id or sim.store.ids.uuid()
    sim.emit(conn, _event(conn, "TranscriptionStarted", events.COMPLETED, context, "transcriptionStarted",
                          "subscriptionStarted"), url)


def _request(sim: Sim, req: Req) -> tuple[Connection, str | None, str | None]:
    conn, _ = connected(sim, req.call_connection_id)
    return conn, optional_str(req.body, "operationContext"), callback_url(req.body, "operationCallbackUri")


def start(sim: Sim, req: Req) -> Reply:
    """``POST …:startTranscription``: 202, then TranscriptionStarted or TranscriptionFailed."""
    conn, context, url = _request(sim, req)
    begin(sim, conn, optional_str(req.body, "locale"), context, url)
    return Reply(202, None, conn.call_connection_id)


def stop(sim: Sim, req: Req) -> Reply:
    """``POST …:stopTranscription``: 202, then TranscriptionStopped (also when none runs: nothing is left to
    stop; ACS documents no refusal), or TranscriptionFailed when the call was not set up for transcription."""
    conn, context, url = _request(sim, req)
    transcription = conn.transcription
    failure = sim.scripted_failure("stopTranscription", targets=(), connections=[conn.call_connection_id])
    if transcription is None or failure is not None:
        result, details = (URL_NOT_SET, "streamUrlMissing") if failure is None else (failure.result,
                                                                                     "unspecifiedError")
        _failed(sim, conn, result, context, url, details)
    else:
        transcription.state = "inactive"
        sim.emit(conn, _event(conn, "TranscriptionStopped", events.COMPLETED, context, "transcriptionStopped",
                              "subscriptionStopped"), url)
    return Reply(202, None, conn.call_connection_id)


def update(sim: Sim, req: Req) -> Reply:
    """``POST …:updateTranscription``: 202, then TranscriptionFailed 405/8520: ACS does not update the
    transcription of a connection made with Connect, and Connect is the only way the simulator makes one."""
    conn, context, url = _request(sim, req)
    if not optional_str(req.body, "locale"):
        raise invalid_request("locale is required")
    _failed(sim, conn, UPDATE_ON_CONNECT, context, url)
    return Reply(202, None, conn.call_connection_id)
