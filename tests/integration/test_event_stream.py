"""The call's live event stream (Server-Sent Events): live, ordered, resumable with Last-Event-ID."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import TEST_API_KEY, wait_until
from tests.integration.conftest import ThreadServer
from tests.integration.test_end_to_end import post, sim_room_call, wait
from workers import keys


def sse(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse a text/event-stream into {id, event, data} messages (comments are skipped)."""
    message: dict[str, Any] = {}
    for line in lines:
        if not line:
            if message:
                yield message
                message = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            message[field] = json.loads(value) if field == "data" else value


def test_the_stream_replays_then_follows_live_and_resumes(simulator: ThreadServer, api: httpx.Client,
                                                          start_worker: Callable) -> None:  # type: ignore[type-arg]
    start_worker()
    connect = wait(api, post(api, f"/v1/rooms/{sim_room_call(simulator)}/connect").json()["id"])
    cc = connect["call_connection_id"]
    seen: list[dict[str, Any]] = []
    with api.stream("GET", f"/v1/calls/{cc}/events/stream", timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        messages = sse(stream.iter_lines())
        first = next(messages)  # the backlog: the call's first event is already there
        seen.append(first)
        hang = post(api, f"/v1/calls/{cc}/hang-up", {"for_everyone": True}).json()["id"]
        for message in messages:  # then live events, until the stream ends after CallDisconnected
            seen.append(message)
    assert seen[-1]["event"] == "CallDisconnected"
    assert wait(api, hang)["status"] == "succeeded"
    ids = [m["id"] for m in seen]
    assert ids == sorted(ids, key=lambda i: tuple(int(p) for p in i.split("-")))  # stream order = arrival order
    assert [m["data"]["seq"] for m in seen] == ids

    # A client that saw only the first event resumes from it and gets exactly the rest.
    with api.stream("GET", f"/v1/calls/{cc}/events/stream", headers={"Last-Event-ID": ids[0]}, timeout=30) as again:
        rest = [m["id"] for m in sse(again.iter_lines())]
    assert rest == ids[1:]


def test_another_clients_call_stream_is_404(simulator: ThreadServer, api: httpx.Client) -> None:
    resp = api.get("/v1/calls/not-mine/events/stream")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "call_not_found"


def test_open_streams_never_take_the_connections_command_requests_need(stack_env: dict[str, str],
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLQ_REDIS_MAX_CONNECTIONS", "4")  # the requests' pool: far fewer than the streams held open
    streams = 12
    r = redis.Redis.from_url(stack_env["CALLQ_REDIS_URL"], decode_responses=True)
    cc = "cc-many-watchers"
    r.hset(keys.call_key(cc), mapping={"client": "alice", "state": "connected"})

    def parked_streams() -> int:  # streams waiting in their blocking read, each holding a Redis connection
        return sum(1 for c in r.client_list() if c.get("cmd") == "xread")

    server = ThreadServer("api.app:create_app", stack_env, int(stack_env["CALLQ_API_PORT"])).start()
    try:
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {TEST_API_KEY}"},
                          timeout=30) as api, contextlib.ExitStack() as open_streams:
            opened = [open_streams.enter_context(api.stream("GET", f"/v1/calls/{cc}/events/stream"))
                      for _ in range(streams)]
            assert [s.status_code for s in opened] == [200] * streams
            wait_until(lambda: parked_streams() >= streams, timeout_s=15, what=f"{streams} streams in XREAD")

            accepted = post(api, f"/v1/calls/{cc}/hang-up", {"for_everyone": True})
            assert accepted.status_code == 202, accepted.text
            assert api.get(accepted.headers["Location"]).json()["status"] == "queued"

            # End every stream the way a call ends, so none is left blocked when the server stops.
            r.xadd(keys.call_events_key(cc), {"event": json.dumps({"type": "Microsoft.Communication.CallDisconnected",
                                                                   "data": {"callConnectionId": cc}})})
            for stream in opened:
                assert [m["event"] for m in sse(stream.iter_lines())] == ["CallDisconnected"]
    finally:
        server.stop()
