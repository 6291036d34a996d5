"""Retry policy maths: pure functions of their inputs (attempt, rng), no I/O."""

from __future__ import annotations

import random

from workers.errors import AcsError


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
