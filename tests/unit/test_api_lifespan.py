"""The API's lifespan: every client it built is closed at shutdown, even when closing one of them fails."""

from __future__ import annotations

import asyncio
from typing import Any

import fakeredis
import pytest
from starlette.applications import Starlette

from api.app import lifespan
from api.notify import Notifier
from workers.settings import Settings


def test_shutdown_closes_every_client_even_when_the_notifier_fails_to_stop(
        settings: Settings, server: fakeredis.FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def failing_stop(self: Notifier) -> None:
        raise RuntimeError("the subscription could not be left")

    monkeypatch.setattr(Notifier, "stop", failing_stop)
    redis = fakeredis.FakeAsyncRedis(server=server, decode_responses=True)
    closed: list[str] = []

    async def closing_redis() -> None:
        closed.append("redis")

    monkeypatch.setattr(redis, "aclose", closing_redis)
    seen: dict[str, Any] = {}

    async def run() -> None:
        async with lifespan(Starlette(), settings=settings, redis=redis) as state:
            seen["http"] = state["http"]
            assert not seen["http"].is_closed

    with pytest.raises(RuntimeError, match="could not be left"):  # still said, once the rest is closed
        asyncio.run(run())
    assert seen["http"].is_closed
    assert closed == ["redis"]
