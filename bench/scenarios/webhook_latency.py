"""webhook_latency: a command's outcome reaching the client's webhook receiver, against the command's end to end.

callq: API client ``hooked`` has one webhook endpoint, subscribed to ``command.succeeded``, at the suite's receiver
(its own process: ``bench.webhook_receiver``), and POSTs a connect. The figure is the command's ``resolved_at``
(stamped by the API as it starts recording the CallConnected that resolves it; the webhook's message is made in
that same script) → the receiver having read the webhook's last byte (its ``time.time()``: one machine, one
clock). Baseline: API client ``bench``, which has no endpoints (its commands make no webhooks), timed exactly as the
e2e scenario times a command: POST connect → ``GET /v1/commands/{id}?wait=10`` says ``succeeded``. One command at a
time, the two kinds taking turns, each on an idle stack (``e2e.SETTLE_S``). Target: p50 ≤ 1×.
"""

from __future__ import annotations

import time

from bench import stack, webhook_receiver
from bench.procs import BenchError
from bench.results import ScenarioResult, compare, curve
from bench.scenarios import Context
from bench.scenarios.e2e import SETTLE_S, WARMUP, Client, callq_once, epoch
from bench.stats import summary_ms

HOOKED_KEY = "bench-hooked-0123456789abcdef"
HOOKED_AUTH = {"Authorization": f"Bearer {HOOKED_KEY}"}
ENV = {"CALLQ_API_KEYS": f"bench:{stack.API_KEY},hooked:{HOOKED_KEY}",
       "CALLQ_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}  # the receiver is on loopback
WAIT_S = 10


def _webhook_once(api: Client, rx: webhook_receiver.Receiver, room: str) -> tuple[float, float]:
    """resolved_at → the webhook at the receiver, and the client's POST → the webhook at the receiver."""
    started = time.time()
    command_id = api.connect(room)["id"]
    arrived, body = rx.command(command_id, timeout_s=WAIT_S)
    command = body["data"]["command"]
    if body["type"] != "command.succeeded" or not command.get("resolved_at"):
        raise BenchError(f"connect did not succeed: {body['type']} {command.get('error')}")
    return arrived - epoch(command["resolved_at"]), arrived - started


def _collect(api_url: str, rx: webhook_receiver.Receiver, rooms: list[str], n: int) -> dict[str, list[float]]:
    """A plain command and a command with a webhook, taking turns, so both see the same background load."""
    out: dict[str, list[float]] = {"e2e": [], "webhook": [], "post_to_webhook": []}
    plain, hooked = Client(api_url), Client(api_url, HOOKED_AUTH)
    try:
        for i in range(n + WARMUP):
            room = rooms[i % len(rooms)]
            time.sleep(SETTLE_S)  # bench pacing, not synchronisation: see e2e.SETTLE_S
            total, _ = callq_once(plain, room)
            time.sleep(SETTLE_S)
            webhook, post_to_webhook = _webhook_once(hooked, rx, room)
            if i >= WARMUP:
                out["e2e"].append(total)
                out["webhook"].append(webhook)
                out["post_to_webhook"].append(post_to_webhook)
    finally:
        plain.close()
        hooked.close()
    return out


def run(ctx: Context) -> ScenarioResult:
    n = int(ctx.pick(200, 12))
    with ctx.children("webhook_latency") as ch:
        rx = webhook_receiver.start(ch)
        st = stack.start(ch, workers=1, concurrency=8, extra_env=ENV)
        rooms = stack.create_rooms(st.sim_url, 20)
        hook = stack.create_webhooks(st.api_url, [rx.hook_url("hooked")], auth=HOOKED_AUTH)[0]
        rx.reset(secrets={"hooked": hook["secret"]}, verify_every=1)
        samples = _collect(st.api_url, rx, rooms, n)
        tally = rx.wait(n + WARMUP, timeout_s=WAIT_S)
    if tally["invalid"] or tally["verified"] != tally["count"]:
        raise BenchError(f"{tally['invalid']} of {tally['count']} webhook signatures did not verify")
    e2e_ms, hook_ms = summary_ms(samples["e2e"]), summary_ms(samples["webhook"])
    post_ms = summary_ms(samples["post_to_webhook"])
    res = ScenarioResult("webhook_latency")
    res.rows = [
        compare("resolution → webhook at the receiver, p50", "ms", hook_ms["p50"], e2e_ms["p50"],
                "command end to end", at_most=1),
        compare("resolution → webhook at the receiver, p99", "ms", hook_ms["p99"], e2e_ms["p99"],
                "command end to end"),
        compare("POST → webhook at the receiver, p50", "ms", post_ms["p50"], e2e_ms["p50"], "command end to end"),
    ]
    res.latency = {"resolved_at → webhook at the receiver": curve([s * 1000 for s in samples["webhook"]]),
                   "POST → GET ?wait says succeeded": curve([s * 1000 for s in samples["e2e"]])}
    res.details = {"webhook_ms": hook_ms, "e2e_ms": e2e_ms, "post_to_webhook_ms": post_ms,
                   "deliveries": tally["count"], "duplicates": tally["duplicates"],
                   "signatures_verified": tally["verified"]}
    res.notes = [
        f"{n} connects of each kind (after {WARMUP} warm-up), one at a time and taking turns, each started "
        f"{SETTLE_S * 1000:.0f} ms after the one before (API and simulator under uvicorn, one worker process with 8 "
        "threads and its webhook deliverer; the receiver in its own process, answering 200 at once). "
        "callq: API client `hooked`, with one endpoint subscribed to `command.succeeded`, POSTs "
        "`/v1/rooms/{room}/connect`; the figure runs from the command's `resolved_at` (the API stamps it as it "
        "starts recording the CallConnected that resolves the command; the webhook's message is made in the same "
        "Redis script) to the receiver having read the webhook's last byte (its `time.time()`; one machine, one "
        "clock). `resolved_at` has millisecond resolution and is truncated, so each sample errs long by up to 1 ms. "
        "Baseline: API client `bench` (no endpoints: its commands make no webhooks) timed as the e2e scenario "
        "times a command, from sending the POST to `GET /v1/commands/{id}?wait=10` returning `succeeded`, on one "
        "keep-alive `http.client` connection. Information row: the hooked command from sending its POST to the "
        f"webhook at the receiver. All {tally['count']} webhooks' signatures verified with the endpoint's secret "
        f"(`standardwebhooks`); duplicates: {tally['duplicates']}.",
    ]
    return res
