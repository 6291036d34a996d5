"""Fault knobs (``/_sim/faults``) and the seeded decisions made from them."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import AcsError

_RATES = ("throttle_rate", "error_rate", "execute_then_fail", "drop_rate", "duplicate_rate",
          "eventgrid_drop_rate", "eventgrid_duplicate_rate")
_NON_NEGATIVE = ("rate_limit_per_s", "retry_after_s", "latency_ms", "delay_ms", "eventgrid_delay_ms")
_FLAGS = ("reorder", "early_delivery", "callback_target_down", "eventgrid_reorder", "eventgrid_target_down")


@dataclass(frozen=True)
class Knobs:
    """Every fault and tuning knob; the defaults simulate a healthy ACS.

    The callback knobs (``drop_rate`` … ``callback_target_down``) act on Call Automation callbacks only; the
    ``eventgrid_*`` ones are their Event Grid twins. Separate, because the two are separate services in ACS with
    separate delivery rules, and a test that loses callbacks should not silently lose Event Grid events too (or
    the other way round). Flat names, like the rest, so a PUT changes exactly the keys it names.
    """

    seed: int | None = None
    rate_limit_per_s: float = 0.0  # 0 = unlimited
    throttle_rate: float = 0.0
    retry_after_s: float = 1.0
    error_rate: float = 0.0
    latency_ms: float = 0.0
    execute_then_fail: float = 0.0
    execute_then_fail_count: int = 0
    execute_then_fail_operations: tuple[str, ...] = ()
    execute_then_fail_mode: str = "503"
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    reorder: bool = False
    delay_ms: float = 0.0
    early_delivery: bool = False
    callback_target_down: bool = False
    participants_page_size: int = 100
    rooms_page_size: int = 50
    eventgrid_drop_rate: float = 0.0
    eventgrid_duplicate_rate: float = 0.0
    eventgrid_reorder: bool = False
    eventgrid_delay_ms: float = 0.0
    eventgrid_target_down: bool = False

    def to_json(self) -> dict[str, Any]:
        """The knobs as ``GET /_sim/faults`` shows them."""
        data = asdict(self)
        data["execute_then_fail_operations"] = list(self.execute_then_fail_operations)
        return data


def patched(knobs: Knobs, patch: object) -> Knobs:
    """``knobs`` with the keys of ``patch`` set; raises ValueError naming the first bad key or value."""
    if not isinstance(patch, dict):
        raise ValueError("body must be a JSON object of knob names to values")
    known = {f.name for f in fields(Knobs)}
    unknown = sorted(set(patch) - known)
    if unknown:
        raise ValueError(f"unknown knob(s) {unknown}; known: {sorted(known)}")
    return replace(knobs, **{name: _checked(name, value) for name, value in patch.items()})


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


# knob name -> (is the value acceptable, what it must be, how to store it)
_RULES: dict[str, tuple[Any, str, Any]] = {
    **{n: (lambda v: _is_number(v) and 0.0 <= v <= 1.0, "a number in [0, 1]", float) for n in _RATES},
    **{n: (lambda v: _is_number(v) and v >= 0, "a number >= 0", float) for n in _NON_NEGATIVE},
    **{n: (lambda v: isinstance(v, bool), "true or false", bool) for n in _FLAGS},
    "seed": (lambda v: v is None or _is_int(v, -(2**63)), "an integer or null", lambda v: v),
    "execute_then_fail_count": (lambda v: _is_int(v, 0), "an integer >= 0", int),
    "participants_page_size": (lambda v: _is_int(v, 1), "an integer >= 1", int),
    "rooms_page_size": (lambda v: _is_int(v, 1), "an integer >= 1", int),
    "execute_then_fail_operations": (
        lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of operation names", tuple
    ),
    "execute_then_fail_mode": (lambda v: v in ("503", "drop"), "'503' or 'drop'", str),
}


def _checked(name: str, value: Any) -> Any:
    ok, expected, convert = _RULES[name]
    if not ok(value):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    return convert(value)


class Faults:
    """Current knobs plus the seeded random streams and the rate-limit bucket they drive."""

    def __init__(self) -> None:
        self.knobs: Knobs = Knobs()
        self.clear()

    def set(self, patch: object) -> Knobs:
        """Apply a partial update (``PUT /_sim/faults``).

        Naming ``seed`` restarts both random streams, ``rate_limit_per_s`` refills the bucket and
        ``execute_then_fail_count`` arms that many failures, even when the value is unchanged.
        """
        new = patched(self.knobs, patch)
        assert isinstance(patch, dict)  # patched() rejected anything else
        self.knobs = new
        if "seed" in patch:
            self._reseed(new.seed)
        if "rate_limit_per_s" in patch:
            self._refill()
        if "execute_then_fail_count" in patch:
            self._fail_left = new.execute_then_fail_count
        return new

    def clear(self) -> None:
        """Back to a healthy ACS (``DELETE /_sim/faults``, ``POST /_sim/reset``)."""
        self.knobs = Knobs()
        self._reseed(None)
        self._refill()
        self._fail_left = 0

    def _reseed(self, seed: int | None) -> None:
        # Separate streams, so the number of callbacks sent cannot shift which requests fail, and vice versa.
        self.request_rng = random.Random(seed)
        self.callback_rng = random.Random(None if seed is None else seed + 1)
        self.eventgrid_rng = random.Random(None if seed is None else seed + 2)

    def _refill(self) -> None:
        self._tokens, self._refilled_at = max(1.0, self.knobs.rate_limit_per_s), time.monotonic()

    def admit(self, now_monotonic: float) -> AcsError | None:
        """The injected rejection for the next ACS request (nothing executed), or None to proceed."""
        k = self.knobs
        if k.rate_limit_per_s > 0 and not self._take_token(now_monotonic):
            return throttled(k.retry_after_s)
        if k.throttle_rate > 0 and self.request_rng.random() < k.throttle_rate:
            return throttled(k.retry_after_s)
        if k.error_rate > 0 and self.request_rng.random() < k.error_rate:
            status = self.request_rng.choice((500, 503))
            return AcsError(status, "9999", "Unknown internal server error.")
        return None

    def _take_token(self, now: float) -> bool:
        rate = self.knobs.rate_limit_per_s
        capacity = max(1.0, rate)  # a one-second burst
        self._tokens = min(capacity, self._tokens + (now - self._refilled_at) * rate)
        self._refilled_at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def fail_after_execute(self, operation: str, *, mutating: bool) -> str | None:
        """``"503"`` or ``"drop"`` when this executed operation's response must be lost, else None.

        Without an operations filter only state-changing operations are hit, so a client's polling GETs
        do not use up ``execute_then_fail_count``.
        """
        k = self.knobs
        if k.execute_then_fail_operations:
            if operation not in k.execute_then_fail_operations:
                return None
        elif not mutating:
            return None
        if self._fail_left > 0:
            self._fail_left -= 1
            return k.execute_then_fail_mode
        if k.execute_then_fail > 0 and self.request_rng.random() < k.execute_then_fail:
            return k.execute_then_fail_mode
        return None


class Throttled(AcsError):
    """Raised (returned) when a request is refused by the rate limit or throttle knobs."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(429, "8516", f"Too many requests; retry after {retry_after_s:g} s.")
        self.retry_after_s = retry_after_s


def throttled(retry_after_s: float) -> Throttled:
    """A 429 carrying the Retry-After value to send."""
    return Throttled(retry_after_s)
