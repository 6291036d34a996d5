"""Fair intake (api/intake.py): one client's burst of writes waits its turn before any work is done for it, and
never holds back another client's request, a read, or ACS's deliveries."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from starlette.types import Receive, Scope, Send

from api.intake import ACTIVE_S, ClientIntake

EXEMPT = "/v1/acs/events"
KEYS = ("key-a", "key-b")


class Recorder:
    """An ASGI app whose requests block until released, recording which started and how many of a client's ran at
    once."""

    def __init__(self) -> None:
        self.running: list[str] = []
        self.started: list[str] = []
        self.most_at_once: dict[bytes, int] = {}
        self.release: dict[str, asyncio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        name = scope["name"]
        self.started.append(name)
        self.running.append(name)
        token = dict(scope["headers"]).get(b"authorization", b"")
        at_once = sum(1 for n in self.running if n.startswith(name[0]))
        self.most_at_once[token] = max(self.most_at_once.get(token, 0), at_once)
        await self.release.setdefault(name, asyncio.Event()).wait()
        self.running.remove(name)


def scope(name: str, *, token: str | None, method: str = "POST", path: str = "/v1/calls/cc/play") -> dict[str, Any]:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
    return {"type": "http", "method": method, "path": path, "headers": headers, "name": name}


async def settle() -> None:
    for _ in range(10):  # let every runnable task reach its next wait (no clock involved)
        await asyncio.sleep(0)  # sleep-ok: a zero sleep yields to the loop once; no clock is involved


async def _noop_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _noop_send(message: Any) -> None:
    return None


def start(intake: ClientIntake, s: dict[str, Any]) -> asyncio.Task[None]:
    return asyncio.ensure_future(intake(s, _noop_receive, _noop_send))


class Clock:
    """The intake's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def release(app: Recorder, *names: str) -> None:
    for name in names:
        app.release.setdefault(name, asyncio.Event()).set()


def test_a_client_alone_is_never_held_back() -> None:
    async def main() -> None:
        app = Recorder()
        intake = ClientIntake(app, api_keys=KEYS, limit=2)
        tasks = [start(intake, scope(f"a{i}", token="key-a")) for i in range(6)]
        await settle()
        assert len(app.started) == 6 and intake.waiting() == 0  # nobody to be fair to: batching beats waiting
        release(app, *app.started)
        await asyncio.gather(*tasks)
        assert intake._clients == {}

    asyncio.run(main())


def test_a_token_that_is_no_api_key_is_not_held_and_does_not_make_a_real_client_look_crowded() -> None:
    async def main() -> None:
        app = Recorder()
        intake = ClientIntake(app, api_keys=KEYS, limit=2)
        tasks = [start(intake, scope(f"x{i}", token=f"forged-{i}")) for i in range(3)]
        tasks += [start(intake, scope(f"a{i}", token="key-a")) for i in range(6)]
        await settle()
        assert len(app.started) == 9 and intake.waiting() == 0
        assert set(intake._clients) == {hashlib.sha256(b"key-a").digest()}  # nothing kept for the forged ones
        release(app, *app.started)
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_while_another_client_is_here_a_burst_runs_at_most_the_limit_at_once_in_arrival_order() -> None:
    async def main() -> None:
        app, clock = Recorder(), Clock()
        intake = ClientIntake(app, api_keys=KEYS, limit=2, exempt_paths=frozenset({EXEMPT}), clock=clock)
        tasks = [start(intake, scope("b0", token="key-b"))]
        await settle()
        tasks += [start(intake, scope(f"a{i}", token="key-a")) for i in range(6)]
        await settle()
        assert app.started == ["b0", "a0", "a1"] and intake.waiting() == 4
        tasks.append(start(intake, scope("b1", token="key-b")))
        await settle()
        assert app.started[-1] == "b1"  # b's next request did not wait behind a's four
        release(app, "a0")
        await settle()
        assert app.started[-1] == "a2" and app.most_at_once[b"Bearer key-a"] == 2
        release(app, "b0", "b1")  # b's requests are done, but b was here a moment ago: a is still held
        await settle()
        assert app.started[-1] == "a2" and intake.waiting() == 3
        clock.now += ACTIVE_S + 0.1  # b has been quiet for the window: a is alone, and all it has waiting goes
        release(app, "a1")
        await settle()
        assert app.started[-3:] == ["a3", "a4", "a5"] and intake.waiting() == 0
        release(app, "a2", "a3", "a4", "a5")
        await asyncio.gather(*tasks)
        assert intake._clients == {}  # nothing kept once a client has nothing here

    asyncio.run(main())


def test_a_client_seen_moments_ago_still_holds_a_burst_to_the_limit_and_one_gone_quiet_does_not() -> None:
    async def main() -> None:
        app, clock = Recorder(), Clock()
        intake = ClientIntake(app, api_keys=KEYS, limit=2, clock=clock)
        b0 = start(intake, scope("b0", token="key-b"))
        await settle()
        release(app, "b0")
        await b0  # b has nothing here now, but connected a call just now: it will be back
        first = [start(intake, scope(f"a{i}", token="key-a")) for i in range(4)]
        await settle()
        assert app.started == ["b0", "a0", "a1"] and intake.waiting() == 2
        release(app, "a0", "a1", "a2", "a3")
        await asyncio.gather(*first)
        clock.now += ACTIVE_S + 0.1
        later = [start(intake, scope(f"c{i}", token="key-a")) for i in range(4)]
        await settle()
        assert app.started[-4:] == ["c0", "c1", "c2", "c3"] and intake.waiting() == 0
        release(app, "c0", "c1", "c2", "c3")
        await asyncio.gather(*later)

    asyncio.run(main())


def test_a_waiting_request_that_is_cancelled_leaves_no_trace_and_holds_nothing() -> None:
    async def main() -> None:
        app = Recorder()
        intake = ClientIntake(app, api_keys=KEYS, limit=1)
        b0 = start(intake, scope("b0", token="key-b"))
        a0 = start(intake, scope("a0", token="key-a"))
        a1 = start(intake, scope("a1", token="key-a"))
        await settle()
        assert app.started == ["b0", "a0"] and intake.waiting() == 1
        a1.cancel()  # its client hung up while it waited
        await settle()
        assert intake.waiting() == 0
        release(app, "a0", "b0")
        await asyncio.gather(a0, b0)
        assert app.started == ["b0", "a0"] and intake._clients == {}

    asyncio.run(main())


def test_reads_acs_deliveries_and_requests_without_a_key_are_not_held_back() -> None:
    async def main() -> None:
        app = Recorder()
        intake = ClientIntake(app, api_keys=KEYS, limit=1, exempt_paths=frozenset({EXEMPT}))
        tasks = [start(intake, scope("b0", token="key-b")),  # another client: a is held to its limit
                 start(intake, scope("a0", token="key-a")),
                 start(intake, scope("r1", token="key-a", method="GET", path="/v1/commands/x")),
                 start(intake, scope("e2", token="jwt", path=EXEMPT)),
                 start(intake, scope("e3", token="jwt", path=EXEMPT)),
                 start(intake, scope("n4", token=None))]
        await settle()
        assert sorted(app.started) == ["a0", "b0", "e2", "e3", "n4", "r1"]
        for event in app.release.values():
            event.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


def test_a_limit_of_zero_holds_nothing_back() -> None:
    async def main() -> None:
        app = Recorder()
        intake = ClientIntake(app, api_keys=KEYS, limit=0)
        tasks = [start(intake, scope(f"a{i}", token="key-a")) for i in range(5)]
        await settle()
        assert len(app.started) == 5
        for event in app.release.values():
            event.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())
