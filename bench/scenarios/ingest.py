"""ingest: CloudEvents per second at callq's ``POST /v1/acs/events``, against a raw endpoint that only XADDs.

callq verifies the RS256 JWT of every POST (keys from a JWKS we serve, signed by a key we hold), dedupes
by event id, stores the event in its call's stream and looks for the command it answers. The events are
PlayCompleted for one call, each with a unique id, naming a command that does not exist (the common case
of an event that only joins the timeline). Baseline: one XADD of the raw body, no auth, no parsing.
Target: callq ≥ 50 % of the baseline.
"""

from __future__ import annotations

import json

import redis

from bench.baselines import RAW_STREAM
from bench.jwks import JwksServer
from bench.load import ID_MARK, Contender, LoadResult, LoadSpec, interleave
from bench.procs import BenchError, free_port
from bench.results import ScenarioResult, compare
from bench.scenarios import Context
from bench.stack import callq_env
from workers import keys
from workers.settings import DEV_RESOURCE_ID

CALL_ID = "6c1f2a8e-0000-4000-8000-00000000beef"


def event_body() -> str:
    """One PlayCompleted CloudEvent as ACS sends it, with ``ID_MARK`` where its unique id goes."""
    data = {
        "callConnectionId": CALL_ID, "serverCallId": "aHR0cHM6Ly9iZW5jaC5leGFtcGxl",
        "correlationId": "0f3e0c55-0000-4000-8000-0000000c0de5", "operationContext": "cmd_bench_no_such_command",
        "resultInformation": {"code": 200, "subCode": 0, "message": "Action completed successfully."},
        "version": "2024-09-01-preview", "publicEventType": "Microsoft.Communication.PlayCompleted",
    }
    event = {"id": ID_MARK, "source": f"calling/callConnections/{CALL_ID}",
             "type": "Microsoft.Communication.PlayCompleted", "data": data, "time": "2026-11-25T11:02:03.120Z",
             "specversion": "1.0", "datacontenttype": "application/json",
             "subject": f"calling/callConnections/{CALL_ID}"}
    return json.dumps([event], separators=(",", ":"))


def _contender(r: redis.Redis, label: str, url: str, headers: dict[str, str], stream: str, ctx: Context,
               rounds: int) -> Contender:
    def empty_stream() -> None:
        r.unlink(stream)

    def all_stored(load: LoadResult) -> None:
        if r.xlen(stream) < load.requests:  # every 2xx must really have stored its event
            raise BenchError(f"{label}: {load.requests} events answered but {r.xlen(stream)} stored")

    spec = LoadSpec(url, {**headers, "Content-Type": "application/json"}, event_body(), connections=50,
                    duration_s=ctx.pick(12, 1) / rounds, warmup_s=ctx.pick(2, 0.25))
    return Contender(label, spec, empty_stream, all_stored)


def run(ctx: Context) -> ScenarioResult:
    rounds = int(ctx.pick(3, 1))
    with ctx.children("ingest") as ch, JwksServer(DEV_RESOURCE_ID) as jwks:
        redis_url = ch.redis()
        r = redis.Redis.from_url(redis_url)
        ch.on_close(r.close)
        env = {**callq_env(redis_url, api_port=free_port(), sim_port=free_port(),
                           extra={"CALLQ_ACS_OPENID_URL": jwks.openid_url}), "BENCH_REDIS_URL": redis_url}
        api = ch.uvicorn("callq-api", "api.app:create_app", env, wait=False)
        raw = ch.uvicorn("raw-xadd", "bench.baselines:raw_xadd", env).ready()
        api.ready()
        auth = {"Authorization": f"Bearer {jwks.token()}"}
        loads = interleave([
            _contender(r, "callq", api.url + "/v1/acs/events", auth, keys.call_events_key(CALL_ID), ctx, rounds),
            _contender(r, "raw XADD", raw.url + "/events", {}, RAW_STREAM, ctx, rounds),
        ], rounds=rounds, prefer_wrk=ctx.prefer_wrk)
    callq, raw_load = loads["callq"], loads["raw XADD"]
    res = ScenarioResult("ingest")
    res.rows = [
        compare("events ingested, 50 connections", "events/s", callq.rps, raw_load.rps, "raw XADD", at_least=0.5),
        compare("p99 latency, 50 connections", "ms", callq.p99_ms, raw_load.p99_ms, "raw XADD"),
    ]
    res.latency = {"callq /v1/acs/events": callq.percentiles_ms, "raw XADD": raw_load.percentiles_ms}
    res.details = {"callq": callq.to_json(), "raw_xadd": raw_load.to_json()}
    res.notes = [
        "One CloudEvent per POST (ACS's usual), unique event ids, 50 keep-alive connections "
        f"({callq.tool}); each server is uvicorn in its own process, loaded one at a time in {rounds} interleaved "
        f"round(s) of {ctx.pick(12, 1) / rounds:g} s after a {ctx.pick(2, 0.25):g} s warm-up each. callq "
        "checks a real RS256 JWT on every POST (one token for the run, signed by the suite's key, whose JWKS the "
        "API fetched through `CALLQ_ACS_OPENID_URL`), dedupes, stores and correlates; the stream length is "
        "checked afterwards so every 2xx stored its event. Baseline: a Starlette endpoint doing one XADD of the "
        "raw body.",
    ]
    return res
