"""Retry policy maths: pure functions of their inputs (attempt, rng, response headers), no I/O."""

from __future__ import annotations

import math
import random
from typing import Any

from azure.core.pipeline import PipelineResponse
from azure.core.pipeline.policies import RetryPolicy

from workers.errors import AcsError

# Only its documented get_retry_after is used: azure-core's own reading of the throttling headers. No retries.
_AZURE_RETRY = RetryPolicy.no_retries()


def retry_after_s(response: PipelineResponse[Any, Any]) -> float | None:
    """The wait a response asks for, in seconds, or None when it names none (or none readable).

    azure-core reads it as its own retries do: ``Retry-After`` in seconds or as an HTTP date (relative to
    the wall clock now; a past date is 0), else ``retry-after-ms``, else ``x-ms-retry-after-ms``.
    """
    try:
        seconds = _AZURE_RETRY.get_retry_after(response)
    except ValueError:  # neither a number nor an HTTP date
        return None
    return float(seconds) if seconds is not None and math.isfinite(seconds) else None


def backoff_s(attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter backoff: uniform in [0, min(cap_s, base_s * 2**attempt)]."""
    return rng.uniform(0.0, min(cap_s, base_s * 2**attempt))


def should_retry(err: AcsError, *, repeatable: bool, attempt: int, max_attempts: int) -> bool:
    """Retry only transient failures, and only when repeating cannot execute the command twice.

    A request ACS provably did not act on (connection refused, 429) is always safe to repeat; one it may
    have executed is safe only when it carries repeatability headers.
    """
    if attempt >= max_attempts or not err.retryable:
        return False
    return repeatable or not err.may_have_executed


def retry_delay_s(err: AcsError, attempt: int, *, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Honour ACS's Retry-After when it gave one; otherwise back off with jitter."""
    if err.retry_after_s is not None and err.retry_after_s > 0:
        return err.retry_after_s
    return backoff_s(attempt, base_s=base_s, cap_s=cap_s, rng=rng)
