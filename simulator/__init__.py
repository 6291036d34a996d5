"""Local Azure Communication Services Call Automation simulator for callq (full guide: docs/simulator.md).

Run: ``python -m simulator``, ``uvicorn --factory simulator.app:create_app`` or ``simulator.app.run(settings)``.
Talk to it with the unmodified SDKs: ``CallAutomationClient("http://127.0.0.1:8089", AzureKeyCredential(key))``,
``RoomsClient("http://127.0.0.1:8089", AzureKeyCredential(key), api_version="2025-03-13")``. It is also the
resource's Event Grid: webhook subscriptions get CallStarted, CallEnded, CallParticipantAdded/Removed and
RecordingFileStatusUpdated, whose locations it serves (a WAV, MP3 or MP4 of the recorded time, its metadata, delete)
to HMAC-signed requests (``files_api``; MP3 and MP4 are encoded by ffmpeg: ``encoder``).

Environment (read only by ``simulator.settings.Settings.from_env``):

- ``CALLQ_SIM_HOST`` (``127.0.0.1``), ``CALLQ_SIM_PORT`` (``8089``): where to listen.
- ``CALLQ_ACS_ACCESS_KEY`` (required): base64 HMAC key shared with callq; empty → refuses to start.
- ``CALLQ_ACS_RESOURCE_ID`` (``00000000-0000-4000-8000-00000000ca11``): ``aud`` of callback JWTs.
- ``CALLQ_SIM_PUBLIC_URL`` (``http://{host}:{port}``): base of the ``jwks_uri`` in the OpenID document.
- ``CALLQ_SIM_ISSUER`` (``https://acscallautomation.communication.azure.com``): ``iss`` of callback JWTs.
- ``CALLQ_SIM_RECORDING_FILE_DELAY_S`` (``5``), ``CALLQ_SIM_FFMPEG`` (``ffmpeg``), ``CALLQ_SIM_EVENTGRID_URL``,
  ``…_SCHEMA``, ``…_TENANT_ID``, ``…_AUDIENCE``, ``…_MAX_EVENTS_PER_BATCH``: see simulator.settings.

Admin API (JSON, not HMAC-protected; it is not part of ACS):

- ``GET /_sim/health`` → ``{"status": "ok"}``
- ``POST /_sim/rooms`` ``{"pstn_dial_out_enabled", "connect_delay_ms", "participants"?, "valid_from"?,
  "valid_until"?}`` → 201 ``{"room_id"}``;
  ``GET /_sim/rooms/{id}``
- ``POST /_sim/rooms/{id}/call`` ``{"participants": ["8:acs:…"]}`` → 201 ``{"server_call_id"}``;
  ``DELETE`` ends it; ``POST …/call/participants`` / ``DELETE …/call/participants/{raw_id}`` join / leave
- ``PUT /_sim/phones/{e164}`` ``{"behaviour": "answer|busy|decline|no-answer", "delay_ms", "dtmf", "speech",
  "input_delay_ms"}``; ``GET /_sim/phones``
- ``POST /_sim/failures`` ``{"operation", "phone_number"?, "call_connection_id"?, "times"? (1; null: always),
  "code"?, "sub_code"?, "message"?, "failed_play_source_index"?}`` → 201 with the rule: the next matching request
  of ``operation`` is answered as usual, then ends in the failure event real ACS sends (addParticipant →
  AddParticipantFailed, removeParticipant, cancelAddParticipant, sendDtmfTones, play → PlayFailed 400/8536,
  recognize → RecognizeFailed 400/8510, startContinuousDtmfRecognition → ContinuousDtmfRecognitionToneFailed,
  startRecording → StartRecordingFailed; the others 500/9999 unless told); ``GET`` lists the rules with
  ``matched``; ``DELETE`` (all) or ``DELETE /_sim/failures/{id}``. A play source on a ``.invalid`` host fails by
  itself with PlayFailed 8536, one naming a non-audio file with 8535 (a recognize prompt: RecognizeFailed 8511)
- ``GET|PUT|DELETE /_sim/faults``: seed, rate_limit_per_s, throttle_rate, retry_after_s, error_rate, latency_ms,
  execute_then_fail(_count|_operations|_mode), drop_rate, duplicate_rate, reorder, delay_ms, early_delivery,
  callback_target_down, participants_page_size, rooms_page_size, eventgrid_(drop_rate|duplicate_rate|reorder|
  delay_ms|target_down)
- ``PUT|GET|DELETE /_sim/eventgrid/subscriptions/{name}``, ``GET /_sim/eventgrid/subscriptions``,
  ``GET /_sim/eventgrid/deliveries``
- ``GET /_sim/log`` (requests that took effect), ``GET /_sim/callbacks`` (delivery attempts), ``GET /_sim/stats``
- ``POST /_sim/reset``: clear everything
"""
