"""Small, pure statistics over samples (no numpy needed)."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        raise ValueError("no samples")
    k = (len(sorted_values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


def summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / max of durations given in seconds, in milliseconds."""
    ms = sorted(s * 1000 for s in samples_s)
    return {"n": len(ms), "p50": percentile(ms, 50), "p90": percentile(ms, 90), "p99": percentile(ms, 99),
            "max": ms[-1]}


def steady_rate(times: Sequence[float], *, trim: float = 0.1) -> float:
    """Events per second over the middle of a run: between the ``trim`` and ``1 - trim`` quantiles.

    Trimming leaves out the start-up burst a limiter allows and the ragged tail, so the figure is the
    sustained rate rather than one inflated by the first few requests.
    """
    ts = sorted(times)
    if len(ts) < 10:
        raise ValueError(f"need at least 10 timestamps, got {len(ts)}")
    first, last = int(len(ts) * trim), int(len(ts) * (1 - trim)) - 1
    span = ts[last] - ts[first]
    if span <= 0:
        raise ValueError("timestamps do not span any time")
    return (last - first) / span
