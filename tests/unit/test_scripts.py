"""workers.scripts: script calls by SHA, and the API's auto-pipeline, on fakeredis and on a real redis-server."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import pytest
import redis
import redis.asyncio as aioredis

from workers import scripts
from workers.scripts import AutoPipeline, Script, ScriptCall

ECHO = "return {KEYS[1], ARGV[1], redis.call('INCR', KEYS[1])}"
FAILS = "return redis.error_reply('ERR callq test: ' .. ARGV[1])"


def call(text: str, keys: list[str], args: list[str]) -> ScriptCall[Any]:
    """An inline test script, bound like a loaded one (its reply passed through as Redis gave it)."""
    return ScriptCall(Script("test", text, hashlib.sha1(text.encode()).hexdigest()), keys, args, lambda x: x)


@pytest.fixture(params=["fake", "real"])
def new_client(request: pytest.FixtureRequest) -> Iterator[Callable[[], aioredis.Redis]]:
    """A factory of async clients on one store (each asyncio.run needs a client of its own loop)."""
    if request.param == "fake":
        server = fakeredis.FakeServer()
        yield lambda: fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    else:
        url = request.getfixturevalue("redis_url")
        yield lambda: aioredis.Redis.from_url(url, decode_responses=True)


class CountingRedis:
    """Passes everything to the client and counts the pipelines (round trips) it was asked for."""

    def __init__(self, r: aioredis.Redis) -> None:
        self.r, self.pipelines = r, 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        self.pipelines += 1
        return self.r.pipeline(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.r, name)


def run(new_client: Callable[[], aioredis.Redis], body: Callable[[aioredis.Redis], Any]) -> Any:
    async def go() -> Any:
        r = new_client()
        try:
            return await body(r)
        finally:
            await r.aclose()
    return asyncio.run(go())


def test_concurrent_calls_share_one_pipeline_and_each_gets_its_own_answer(new_client) -> None:  # type: ignore[no-untyped-def]
    async def body(r: aioredis.Redis) -> tuple[list[Any], int]:
        counting = CountingRedis(r)
        pipe = AutoPipeline(counting)  # type: ignore[arg-type]
        answers = await asyncio.gather(*(pipe.run(call(ECHO, [f"k{i % 3}"], [f"a{i}"])) for i in range(30)))
        return answers, counting.pipelines

    answers, pipelines = run(new_client, body)
    assert pipelines == 1
    assert [a[:2] for a in answers] == [[f"k{i % 3}", f"a{i}"] for i in range(30)]
    # Each key's counter went 1, 2, … in call order: the calls ran one by one, in the order they were made.
    for k in range(3):
        assert [a[2] for i, a in enumerate(answers) if i % 3 == k] == list(range(1, 11))


def test_calls_on_later_turns_go_in_later_pipelines(new_client) -> None:  # type: ignore[no-untyped-def]
    async def body(r: aioredis.Redis) -> tuple[list[Any], int]:
        counting = CountingRedis(r)
        pipe = AutoPipeline(counting)  # type: ignore[arg-type]
        first = await pipe.run(call(ECHO, ["k"], ["1"]))
        second = await pipe.run(call(ECHO, ["k"], ["2"]))
        return [first, second], counting.pipelines

    answers, pipelines = run(new_client, body)
    assert answers == [["k", "1", 1], ["k", "2", 2]]
    assert pipelines == 2


def test_a_script_error_reaches_only_its_caller(new_client) -> None:  # type: ignore[no-untyped-def]
    async def body(r: aioredis.Redis) -> list[Any]:
        pipe = AutoPipeline(r)
        return await asyncio.gather(pipe.run(call(ECHO, ["k"], ["ok"])), pipe.run(call(FAILS, [], ["boom"])),
                                    pipe.run(call(ECHO, ["k"], ["ok too"])), return_exceptions=True)

    ok, failed, ok_too = run(new_client, body)
    assert ok == ["k", "ok", 1] and ok_too == ["k", "ok too", 2]
    assert isinstance(failed, redis.ResponseError) and "callq test: boom" in str(failed)


def test_an_unloaded_script_is_sent_in_full_and_in_order(new_client) -> None:  # type: ignore[no-untyped-def]
    async def body(r: aioredis.Redis) -> list[Any]:
        pipe = AutoPipeline(r)
        await pipe.run(call(ECHO, ["k"], ["loaded"]))
        await r.script_flush()  # as after a Redis restart: every EVALSHA of the batch answers NOSCRIPT
        return await asyncio.gather(*(pipe.run(call(ECHO, ["k"], [str(i)])) for i in range(5)))

    answers = run(new_client, body)
    assert answers == [["k", str(i), i + 2] for i in range(5)]


def test_a_lost_connection_fails_every_waiting_caller(new_client) -> None:  # type: ignore[no-untyped-def]
    class Broken:
        def pipeline(self, **_: Any) -> Any:
            return self

        def evalsha(self, *_: Any) -> None:
            """Queued, as a pipeline does; nothing is sent before execute."""

        async def execute(self, **_: Any) -> list[Any]:
            raise redis.ConnectionError("connection refused")

    async def body(_: aioredis.Redis) -> list[Any]:
        pipe = AutoPipeline(Broken())  # type: ignore[arg-type]
        return await asyncio.wait_for(asyncio.gather(*(pipe.run(call(ECHO, ["k"], ["x"])) for _ in range(4)),
                                                     return_exceptions=True), timeout=30)

    failures = run(new_client, body)
    assert len(failures) == 4 and all(isinstance(f, redis.ConnectionError) for f in failures)


def test_a_cancelled_caller_leaves_the_others_answered(new_client) -> None:  # type: ignore[no-untyped-def]
    async def body(r: aioredis.Redis) -> tuple[list[Any], Any]:
        pipe = AutoPipeline(r)
        doomed = asyncio.ensure_future(pipe.run(call(ECHO, ["k"], ["doomed"])))
        others = asyncio.ensure_future(asyncio.gather(*(pipe.run(call(ECHO, ["k"], [str(i)])) for i in range(3))))
        await asyncio.sleep(0)  # sleep-ok: one turn of the loop (no time), in which both queue their calls
        doomed.cancel()
        return await others, await r.get("k")

    answers, counter = run(new_client, body)
    assert [a[1] for a in answers] == ["0", "1", "2"]
    assert counter == "4"  # the cancelled caller's script ran all the same (its caller just stopped listening)


def test_the_blocking_runner_falls_back_to_the_full_script(fake_and_real_redis: redis.Redis) -> None:
    r = fake_and_real_redis
    r.delete("k")
    assert scripts.run(r, call(ECHO, ["k"], ["a"])) == ["k", "a", 1]
    r.script_flush()
    assert scripts.run(r, call(ECHO, ["k"], ["b"])) == ["k", "b", 2]


def test_every_script_loads_with_the_header_and_library_in_front_and_runs_on_redis(redis_url: str) -> None:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        for name in scripts.names():
            loaded = scripts.load(name)
            assert loaded.text.startswith(scripts.header())
            assert "local function transition(" in loaded.text
            # SCRIPT LOAD compiles it: a syntax error in any file fails here, not on its first call in production.
            assert r.script_load(loaded.text) == loaded.sha
    finally:
        r.close()


def test_a_constant_that_would_need_escaping_is_refused() -> None:
    with pytest.raises(ValueError, match="plain Lua string"):
        scripts._lua_literal("callq:'x")
    with pytest.raises(ValueError, match="no script named"):
        scripts.load("lib")
