"""Callback delivery: each call's events go in order on a lane of their own, so one call's backlog (or a slow
POST) never holds back another call's events."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Mapping

import aiohttp
import jwt

from simulator.delivery import Dispatcher, Unreachable, aiohttp_poster
from simulator.faults import Faults
from simulator.signing import CallbackSigner

URL = "http://callq.test/v1/acs/events"


def _event(call: str, n: int) -> dict[str, object]:
    return {"id": f"{call}-{n}", "type": "Microsoft.Communication.PlayCompleted", "data": {"callConnectionId": call}}


def test_a_calls_event_is_delivered_while_another_calls_post_is_still_held() -> None:
    async def scenario() -> list[str]:
        release = asyncio.Event()
        order: list[str] = []

        async def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
            events = json.loads(body)
            if events[0]["data"]["callConnectionId"] == "busy":
                await release.wait()  # the API is slow with this call's batch
            order.extend(e["id"] for e in events)
            return 200

        signer = CallbackSigner(issuer="iss", audience="aud", jwks_uri="http://sim.test/jwks")
        dispatcher = Dispatcher(post, signer, Faults(), attempts=1, backoff_s=0.0)
        busy = [dispatcher.enqueue(URL, _event("busy", n), ack=True) for n in range(3)]
        other = dispatcher.enqueue(URL, _event("other", 0), ack=True)
        assert other is not None
        await asyncio.wait_for(other, 10)  # delivered although "busy"'s first POST has not been answered
        release.set()
        await asyncio.wait_for(asyncio.gather(*[b for b in busy if b is not None]), 10)
        await dispatcher.close()
        return order

    order = asyncio.run(scenario())
    assert order[0] == "other-0"
    assert [i for i in order if i.startswith("busy")] == ["busy-0", "busy-1", "busy-2"]  # each call in order


def test_tokens_minted_in_one_second_are_one_token_and_the_next_second_mints_anew() -> None:
    signer = CallbackSigner(issuer="iss", audience="aud", jwks_uri="http://sim.test/jwks")
    first = signer.token(100.1)
    assert signer.token(100.9) == first
    again = signer.token(101.0)
    assert again != first
    signer._minted = (-1, "")  # signed afresh, the same second's token is the same string: nothing was lost
    assert signer.token(100.5) == first
    assert jwt.decode(again, options={"verify_signature": False})["iat"] == 101


def test_a_callback_url_nobody_listens_on_is_reported_unreachable_and_logged_with_no_status() -> None:
    async def scenario() -> list[dict[str, object]]:
        with socket.socket() as s:  # a port that was free a moment ago, and is closed now
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        async with aiohttp.ClientSession() as session:
            post = aiohttp_poster(session)
            try:
                await post(f"http://127.0.0.1:{port}/v1/acs/events", b"[]", {})
            except Unreachable as exc:
                assert "Connect" in str(exc)
            else:
                raise AssertionError("a POST to a closed port was answered")
            signer = CallbackSigner(issuer="iss", audience="aud", jwks_uri="http://sim.test/jwks")
            dispatcher = Dispatcher(post, signer, Faults(), attempts=1, backoff_s=0.0)
            done = dispatcher.enqueue(f"http://127.0.0.1:{port}/v1/acs/events", _event("c", 0), ack=True)
            assert done is not None
            await asyncio.wait_for(done, 10)
            await dispatcher.close()
            return list(dispatcher.log)

    log = asyncio.run(scenario())
    assert [(e["status"], e["outcome"]) for e in log] == [(None, "dropped")]
    assert "Connect" in str(log[0]["error"])
