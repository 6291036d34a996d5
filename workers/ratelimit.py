"""One ACS request budget shared by every worker and API process: GCRA in a single Lua script.

Why GCRA: it needs one Redis key and one round trip per request, spaces requests evenly (no burst at
window edges as with fixed windows) with an explicit burst allowance, and tells a denied caller exactly
how long to wait. The script reads Redis ``TIME`` so every host shares one clock. A 429 from ACS pauses
the whole budget for its ``Retry-After`` (rate_pause.lua), so all workers slow down, not only the one
that saw it. ``RateLimitPolicy`` applies the budget inside the SDK pipeline: every ACS request — commands,
reads, extra pages of a list — pays before it is sent. A command's own request is paid by the script that
claims the command (claim.lua runs lib.lua's ``gcra``), which saves a round trip on every send; the
runtime marks it ``prepaid()`` so the policy does not charge it twice.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

import redis
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from workers import keys, metrics, scripts
from workers.errors import CallqError
from workers.retry import retry_after_s
from workers.scripts import ScriptCall


def acquire_call(*, tat_key: str, pause_key: str, emission_ms: float, burst: int) -> ScriptCall[float]:
    """Take one request from the budget (rate_acquire.lua): 0.0 when it may go now, else the seconds to wait."""
    return scripts.call("rate_acquire", [tat_key, pause_key], [emission_ms, burst], _seconds)


def pause_call(*, pause_key: str, pause_ms: int) -> ScriptCall[int]:
    """Pause the whole budget for ``pause_ms`` (rate_pause.lua; extends, never shortens); the pause's end (ms)."""
    return scripts.call("rate_pause", [pause_key], [pause_ms], int)


def _seconds(reply: int) -> float:
    return int(reply) / 1000


class RateLimited(CallqError):
    """Raised when the shared ACS budget is spent for longer than a caller may wait in place."""

    code = "rate_limited"
    retryable = True

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"ACS rate limit reached; retry in {retry_after_s:.2f}s")
        self.retry_after_s = retry_after_s


class RateLimiter:
    def __init__(self, client: redis.Redis, resource: str, *, rate_per_s: float, burst: int) -> None:
        self._redis = client
        self._tat_key = keys.rate_tat_key(resource)
        self._pause_key = keys.rate_pause_key(resource)
        self._emission_ms = 1000.0 / rate_per_s
        self._burst = max(1, burst)

    @classmethod
    def for_endpoint(cls, client: redis.Redis, endpoint: str, *, rate_per_s: float, burst: int) -> RateLimiter:
        """One budget per ACS resource (its host), shared by everything pointed at it."""
        return cls(client, keys.rate_resource(endpoint), rate_per_s=rate_per_s, burst=burst)

    @property
    def script_keys(self) -> list[str]:
        """The budget's keys (a script that pays for a request with lib.lua's ``gcra`` passes these)."""
        return [self._tat_key, self._pause_key]

    @property
    def script_args(self) -> list[float | int]:
        """The emission interval (ms) and burst lib.lua's ``gcra`` takes for this budget."""
        return [self._emission_ms, self._burst]

    def try_acquire(self) -> float:
        """Take one request from the budget if possible; returns 0.0, or the seconds to wait first."""
        return scripts.run(self._redis, acquire_call(tat_key=self._tat_key, pause_key=self._pause_key,
                                                     emission_ms=self._emission_ms, burst=self._burst))

    def acquire(self, max_wait_s: float) -> None:
        """Wait in place for at most ``max_wait_s``; longer waits raise RateLimited for a re-queue."""
        deadline = time.monotonic() + max_wait_s
        while (wait_s := self.try_acquire()) > 0:
            wait_or_defer(wait_s, deadline)

    def pause(self, seconds: float) -> None:
        """ACS said 429: nobody sends for ``seconds``."""
        scripts.run(self._redis, pause_call(pause_key=self._pause_key, pause_ms=max(1, int(seconds * 1000))))


def wait_or_defer(wait_s: float, deadline: float) -> None:
    """Sleep ``wait_s`` if that ends by ``deadline`` (monotonic); otherwise raise RateLimited for a re-queue."""
    if time.monotonic() + wait_s > deadline:
        metrics.RECORDER.inc("callq_rate_limit_deferrals")
        raise RateLimited(wait_s)
    metrics.RECORDER.inc("callq_rate_limit_waits")
    metrics.RECORDER.inc("callq_rate_limit_wait_seconds", by=wait_s)
    time.sleep(wait_s)  # bounded by the caller's max wait: a short, deliberate pause


class _Credit:
    """Requests of a ``prepaid()`` block already paid for."""

    def __init__(self) -> None:
        self.requests = 1


_prepaid: contextvars.ContextVar[_Credit | None] = contextvars.ContextVar("callq_prepaid", default=None)


@contextlib.contextmanager
def prepaid() -> Iterator[None]:
    """The first ACS request sent in this block was already paid for (by the claim script); later ones pay."""
    token = _prepaid.set(_Credit())
    try:
        yield
    finally:
        _prepaid.reset(token)


class RateLimitPolicy(SansIOHTTPPolicy):  # type: ignore[type-arg]  # azure-core generics: any transport
    """SDK pipeline policy: pay the shared budget before each request; a 429 pauses everyone."""

    def __init__(self, limiter: RateLimiter, max_wait_s: float) -> None:
        self._limiter = limiter
        self._max_wait_s = max_wait_s

    def on_request(self, request: PipelineRequest) -> None:  # type: ignore[type-arg]  # any transport
        credit = _prepaid.get()
        if credit is not None and credit.requests > 0:
            credit.requests -= 1  # its slot was taken when the command was claimed
            return
        self._limiter.acquire(self._max_wait_s)

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:  # type: ignore[type-arg]  # any
        metrics.RECORDER.inc("callq_acs_responses", str(response.http_response.status_code))
        if response.http_response.status_code == 429:
            seconds = retry_after_s(response)
            self._limiter.pause(max(1.0 if seconds is None else seconds, 0.001))  # no wait named: pause 1 s
