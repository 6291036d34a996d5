"""Prometheus text for ``/metrics``: the counters and histograms every process wrote to Redis, plus gauges read at
scrape time, as prometheus-client metric families (how the figures are counted and stored: ``workers/metrics.py``)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from workers import keys
from workers.metrics import BUCKETS_S, SPECS, Spec

OVERDUE_GRACE_MS = 60_000  # a wait this far past its deadline means reconciliation is not keeping up

GAUGES = {
    "callq_queue_depth": ("Messages waiting in a broker queue (LLEN): the command queue (kept at most "
                          "CALLQ_DISPATCH_WINDOW by the fair dispatch) and the steps queue."),
    "callq_broker_unacked": "Messages delivered to workers and not yet acknowledged (running or counting down).",
    "callq_commands_waiting": "Commands sent to ACS and waiting for their outcome event.",
    "callq_commands_waiting_overdue": ("Waiting commands a minute past their outcome deadline that no worker "
                                       "has taken up to reconcile."),
    "callq_workers_alive": "Workers whose heartbeat is fresh.",
    "callq_acs_pause_seconds": "Seconds left of the shared pause a 429 from ACS imposed (0: not paused).",
    "callq_client_pending": "Commands of each client accepted and not yet ended (CALLQ_CLIENT_MAX_PENDING).",
    "callq_webhook_endpoints": ("Webhook endpoints of the API keys' clients by state: healthy, failing (a message "
                                "spent its retry schedule), disabled (by the client, or 410 Gone)."),
    "callq_client_ready": ("Runnable work of each client waiting for its turn in the fair dispatch (its commands "
                           "parked behind earlier ones on their call are pending, not ready)."),
}


def exposed_names() -> set[str]:
    """Every sample name /metrics can show (for dashboards and alert rules to be checked against)."""
    names = set(GAUGES)
    for spec in SPECS.values():
        if spec.kind == "counter":
            names.add(f"{spec.name}_total")
        else:
            names |= {f"{spec.name}_bucket", f"{spec.name}_sum", f"{spec.name}_count"}
    return names



def pause_key(acs_endpoint: str) -> str:
    """The shared 429 pause of this ACS resource: the key the rate limiter itself writes."""
    return keys.rate_pause_key(keys.rate_resource(acs_endpoint))


def _histogram(spec: Spec, fields: Mapping[str, str]) -> HistogramMetricFamily:
    family = HistogramMetricFamily(spec.name, spec.help, labels=list(spec.labels))
    series: dict[str, tuple[list[float], float]] = {}
    for name, raw in fields.items():
        where, _, slot = name.rpartition("#")
        counts, total = series.setdefault(where, ([0.0] * (len(BUCKETS_S) + 1), 0.0))
        if slot == "sum":
            series[where] = (counts, float(raw))
        elif slot.isdigit() and int(slot) <= len(BUCKETS_S):
            counts[int(slot)] += float(raw)
    for where, (counts, total) in sorted(series.items()):
        running, buckets = 0.0, []
        for bound, count in zip((*(str(b) for b in BUCKETS_S), "+Inf"), counts, strict=True):
            running += count
            buckets.append((bound, running))
        family.add_metric(json.loads(where), buckets, sum_value=total)
    return family


def families(hashes: Mapping[str, Mapping[str, str]], gauges: Mapping[str, list[tuple[dict[str, str], float]]]) -> (
        list[Metric]):
    """Prometheus metric families from the stored hashes ({metric name: hash}) and scrape-time gauges."""
    out: list[Metric] = []
    for spec in SPECS.values():
        fields = hashes.get(spec.name) or {}
        if spec.kind == "histogram":
            out.append(_histogram(spec, fields))
            continue
        counter = CounterMetricFamily(spec.name, spec.help, labels=list(spec.labels))
        for where, raw in sorted(fields.items()):
            counter.add_metric(json.loads(where), float(raw))
        out.append(counter)
    for name, help_ in GAUGES.items():
        samples = gauges.get(name) or []
        gauge = GaugeMetricFamily(name, help_, labels=sorted(samples[0][0]) if samples else [])
        for labels, value in samples:
            gauge.add_metric([labels[k] for k in sorted(labels)], value)
        out.append(gauge)
    return out
