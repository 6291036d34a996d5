"""callq's Lua scripts: loaded from ``workers/lua/`` once per process, run by SHA through one runner.

Every script is a ``.lua`` file with a ``-- KEYS: ... ARGV: ...`` header. At load it gets two things put in
front of it: a header of constants (key prefixes and channel names from ``workers.keys``, rendered once, so no
Python value is ever spliced into a script's own text) and ``lib.lua``, the functions scripts share
(``check_types``, ``transition``, ``gcra``, ...). The result is what Redis runs and what ``make test`` lints.

A script is called through its one typed function (in the module that owns the concept: ``ledger.claim``,
``correlation.ingest_call`` ...). That function returns a ``ScriptCall[T]``: the script, its KEYS and ARGV and
the parser that turns Redis' reply into ``T``. The same call runs on a blocking client (``run``: workers,
beat) or joins the API's ``AutoPipeline``; no caller reads a reply by position.

Both runners send ``EVALSHA`` and fall back to ``EVAL`` only when Redis answers ``NOSCRIPT`` (after a restart
or ``SCRIPT FLUSH``), which also loads the script for the next call.

``AutoPipeline`` is the API's runner. Under load many requests reach their script in the same event-loop
turn; their calls go out together as one pipeline (one connection taken from the pool, one write, the
replies read back in order) instead of one round trip each: the same idea as ioredis's auto-pipelining.
Each script still runs atomically on its own, so nothing about what a script guarantees changes; a caller
that awaits its answer before making its next call (as ``correlation.ingest`` does for the events of one
POST) keeps its own calls in order. A single request pays one extra event-loop turn at most.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from workers import keys
from workers.replication import Replication

LUA_DIR = Path(__file__).with_name("lua")
LIB = "lib"
T = TypeVar("T")
Arg = str | int | float

# The constants every script may use, rendered once as Lua locals ahead of lib.lua.
CONSTANTS: dict[str, str | int] = {
    "COMMAND_PREFIX": keys.COMMAND_PREFIX,
    "COMMAND_DONE_CHANNEL": keys.COMMAND_DONE_CHANNEL,
    "ACTIVE_ZSET": keys.ACTIVE_ZSET,
    "WAIT_DEADLINES": keys.WAIT_DEADLINES,
    "CALL_PREFIX": keys.CALL_PREFIX,
    "CALL_COMMANDS_SUFFIX": keys.CALL_COMMANDS_SUFFIX,
    "CALL_LANE_SUFFIX": keys.CALL_LANE_SUFFIX,
    "CALL_INTERRUPTS_SUFFIX": keys.CALL_INTERRUPTS_SUFFIX,
    "CALL_EVENTS_SUFFIX": keys.CALL_EVENTS_SUFFIX,
    "CLIENT_PREFIX": keys.CLIENT_PREFIX,
    "PENDING_SUFFIX": keys.PENDING_SUFFIX,
    "READY_SUFFIX": keys.READY_SUFFIX,
    "DISPATCHED_SUFFIX": keys.DISPATCHED_SUFFIX,
    "SPARSE_MS": keys.SPARSE_MS,
    "QUIET_WINDOW": keys.QUIET_WINDOW,
    "QUIET_ARMED": keys.QUIET_ARMED,
    "QUIET_WINDOW_MS": keys.QUIET_WINDOW_MS,
    "QUIET_EVERY_MS": keys.QUIET_EVERY_MS,
    "QUIET_MARK": keys.QUIET_MARK,
    "FAIR_RING": keys.FAIR_RING,
    "FAIR_BACKLOG": keys.FAIR_BACKLOG,
    "ROOM_PREFIX": keys.ROOM_PREFIX,
    "LIVE_CALLS": keys.LIVE_CALLS,
    "ROOM_CALL_SUFFIX": keys.ROOM_CALL_SUFFIX,
    "WEBHOOK_PREFIX": keys.WEBHOOK_PREFIX,
    "WEBHOOK_MSG_PREFIX": keys.WEBHOOK_MSG_PREFIX,
    "CLIENT_WEBHOOKS_SUFFIX": keys.CLIENT_WEBHOOKS_SUFFIX,
    "WEBHOOKS_DUE": keys.WEBHOOKS_DUE,
    "WEBHOOKS_CHANNEL": keys.WEBHOOKS_CHANNEL,
}


def _lua_literal(value: str | int) -> str:
    if isinstance(value, int):
        return str(value)
    # Key names are plain ASCII by construction; refuse anything that would need escaping rather than escape it.
    if not value.isascii() or any(c in value for c in "'\\\n\r"):
        raise ValueError(f"constant {value!r} cannot be a plain Lua string")
    return f"'{value}'"


def header() -> str:
    """The constants block that heads every script (also what the Lua lint sees)."""
    # 211: a script need not use every constant (as with lib.lua's functions).
    constants = "".join(f"local {name} = {_lua_literal(value)}\n" for name, value in CONSTANTS.items())
    return f"-- luacheck: push ignore 211\n{constants}-- luacheck: pop\n"


@dataclass(frozen=True)
class Script:
    """One loaded script: its name (file stem), full text as Redis runs it, and that text's SHA1."""

    name: str
    text: str
    sha: str


@functools.cache
def load(name: str) -> Script:
    """``workers/lua/{name}.lua`` with the constants header and the shared library in front; cached per process."""
    if name == LIB or not (LUA_DIR / f"{name}.lua").is_file():
        raise ValueError(f"no script named {name!r} in {LUA_DIR}")
    text = header() + (LUA_DIR / f"{LIB}.lua").read_text() + (LUA_DIR / f"{name}.lua").read_text()
    return Script(name=name, text=text, sha=hashlib.sha1(text.encode()).hexdigest())


def names() -> list[str]:
    """Every script there is (the lint and the load-all test walk these)."""
    return sorted(p.stem for p in LUA_DIR.glob("*.lua") if p.stem != LIB)


@dataclass(frozen=True)
class ScriptCall(Generic[T]):
    """A script bound to its KEYS and ARGV, with the parser of its reply: what a typed script function returns."""

    script: Script
    keys: Sequence[str]
    args: Sequence[Arg]
    parse: Callable[[Any], T]


def call(name: str, keys_: Sequence[str], args: Sequence[Arg], parse: Callable[[Any], T]) -> ScriptCall[T]:
    return ScriptCall(load(name), list(keys_), list(args), parse)


def run(r: redis.Redis, sc: ScriptCall[T]) -> T:
    """One script call on a blocking client."""
    try:
        reply = r.evalsha(sc.script.sha, len(sc.keys), *sc.keys, *sc.args)
    except NoScriptError:
        reply = r.eval(sc.script.text, len(sc.keys), *sc.keys, *sc.args)
    return sc.parse(reply)


def queue(pipe: redis.client.Pipeline, sc: ScriptCall[Any]) -> None:
    """Add a script call to a blocking pipeline (the caller parses ``execute()``'s reply with ``sc.parse``).

    ``EVAL`` (not ``EVALSHA``): a pipeline cannot retry one command on ``NOSCRIPT``; these are rare paths.
    """
    pipe.eval(sc.script.text, len(sc.keys), *sc.keys, *sc.args)


_Pending = tuple[ScriptCall[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    """Script calls made by concurrent tasks on one event loop, sent to Redis as one pipeline per turn.

    With ``replication`` enabled the batch ends with its barrier write and ``WAIT`` (workers/replication.py):
    still one round trip, and a caller gets its reply only once the replicas confirmed it (else NotReplicated).
    """

    def __init__(self, r: aioredis.Redis, replication: Replication | None = None) -> None:
        self._redis = r
        self._replication = replication or Replication()
        self._pending: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()  # strong references: the loop keeps only weak ones

    async def run(self, sc: ScriptCall[T]) -> T:
        """The script's parsed reply; Redis errors (connection, timeout, a script error) are raised to this caller."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        self._pending.append((sc, answer))
        if len(self._pending) == 1:
            # The task's first step runs on the next turn, after every request already woken on this one
            # has queued its call: that is the batch.
            task = loop.create_task(self._send())
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return sc.parse(await answer)

    async def _send(self) -> None:
        batch, self._pending = self._pending, []
        try:
            await self._answer(batch)
        finally:  # cancelled (shutdown) or failed while re-running: nobody may wait for ever
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(redis.ConnectionError("The pipeline to Redis was interrupted."))

    async def _rerun(self, batch: list[_Pending], replies: list[Any]) -> bool:
        """Run again, with ``EVAL``, the calls Redis answered NOSCRIPT (replacing their replies); whether any were.

        Every call of such a script in the batch failed alike, so re-running them in batch order keeps a caller's
        calls in order."""
        rerun = False
        for index, ((sc, _), reply) in enumerate(zip(batch, replies, strict=True)):
            if isinstance(reply, NoScriptError):
                rerun = True
                try:
                    replies[index] = await self._redis.eval(sc.script.text, len(sc.keys), *sc.keys, *sc.args)
                except Exception as exc:
                    replies[index] = exc
        return rerun

    async def _answer(self, batch: list[_Pending]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for sc, _ in batch:
            pipe.evalsha(sc.script.sha, len(sc.keys), *sc.keys, *sc.args)
        self._replication.add_wait(pipe)
        try:
            replies = await pipe.execute(raise_on_error=False)
            replicated: Exception | None = None
            try:
                replies = self._replication.check(replies)
            except redis.RedisError as exc:  # the scripts ran; their writes are not confirmed on the replicas
                replies, replicated = replies[:len(batch)], exc
        except Exception as exc:  # the connection failed: nobody in this batch got an answer
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        if await self._rerun(batch, replies) and replicated is None:
            try:  # the re-runs came after the batch's WAIT: they need their own
                await self._replication.confirm_async(self._redis)
            except Exception as exc:
                replicated = exc
        for (_, answer), reply in zip(batch, replies, strict=True):
            if answer.done():  # its caller was cancelled; the script ran all the same
                continue
            if isinstance(reply, Exception):
                answer.set_exception(reply)
            elif replicated is not None:
                answer.set_exception(replicated)
            else:
                answer.set_result(reply)
