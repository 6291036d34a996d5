"""Callback delivery: ordered lanes per call and URL, batched POSTs with one JWT each, retries, faults, a log.

ACS documents no ordering of mid-call callbacks, and its calls run on servers of their own: one call's events do
not wait for another's. So each call (at each URL) has a lane of its own, delivered in order (stricter than ACS,
which callq does not rely on: see the reorder fault), and lanes go side by side, MAX_IN_FLIGHT POSTs at a time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from .faults import Faults
from .signing import CallbackSigner

MAX_BATCH = 100
LOG_MAX = 200_000
IDLE_LANE_S = 30.0
CLOSE_WAIT_S = 2.0
MAX_IN_FLIGHT = 16  # concurrent callback POSTs over all URLs
logger = logging.getLogger("simulator.delivery")

# POST (url, body, headers) → the answer's status; raises Unreachable when no answer came.
Poster = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]


class Unreachable(Exception):
    """A callback POST got no HTTP answer (refused, reset, timed out); the message says how."""


def aiohttp_poster(session: aiohttp.ClientSession) -> Poster:
    """Callbacks over aiohttp: its pool costs a fraction of httpx's CPU per POST, and a simulator under a flood
    posts hundreds a second on the same machine as what it calls back."""
    async def post(url: str, body: bytes, headers: Mapping[str, str]) -> int:
        try:
            async with session.post(url, data=body, headers=dict(headers)) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(f"{type(exc).__name__}: {exc}") from None
    return post


@dataclass
class _Pending:
    event: dict[str, Any]
    ready_at: float
    done: asyncio.Future[None] | None


class _Lane:
    """Events of one call for one target URL, sent strictly in enqueue order."""

    def __init__(self) -> None:
        self.queue: deque[_Pending] = deque()
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.closed = False


class Dispatcher:
    """Sends events in the background; events ready together for one URL share one POST and one JWT."""

    def __init__(
        self, post: Poster, signer: CallbackSigner, faults: Faults, *, attempts: int, backoff_s: float
    ) -> None:
        self._post_raw = post
        self._signer = signer
        self._faults = faults
        self._attempts = max(1, attempts)
        self._backoff_s = backoff_s
        self._lanes: dict[tuple[str, str], _Lane] = {}  # by (url, call connection id; '' for events of none)
        # Few POSTs in flight keep the pool small, and while a lane waits for a slot its events pile up into one
        # bigger batch: fewer POSTs, fewer JWTs.
        self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        self.log: deque[dict[str, Any]] = deque(maxlen=LOG_MAX)
        self.stats = {"posts": 0, "events_delivered": 0, "events_dropped": 0}

    def enqueue(self, url: str, event: dict[str, Any], *, ack: bool = False,
                lane_id: str | None = None) -> asyncio.Future[None] | None:
        """Queue one event; with ``ack`` the returned future resolves once it was delivered or given up.

        It goes on the lane of the call connection it names, or on ``lane_id``'s when given (a recording's events name
        the recorder's endpoint but keep their order with the connection that started the recording)."""
        key = (url, lane_id if lane_id is not None else str((event.get("data") or {}).get("callConnectionId") or ""))
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
            lane.task = asyncio.get_running_loop().create_task(self._run(key, lane))
        done = asyncio.get_running_loop().create_future() if ack else None
        ready_at = time.monotonic() + self._faults.knobs.delay_ms / 1000.0
        lane.queue.append(_Pending(event, ready_at, done))
        lane.wakeup.set()
        return done

    async def reset(self) -> None:
        """Forget queued events and the delivery log (``POST /_sim/reset``)."""
        await self.close()
        self.log.clear()
        self.stats = dict.fromkeys(self.stats, 0)

    async def close(self) -> None:
        """Stop every lane; queued events are abandoned."""
        lanes, self._lanes = self._lanes, {}
        # The flag, not only the cancel, ends a lane: a cancel landing inside the HTTP client's cleanup can be
        # turned into an ordinary error, which the lane would log and then carry on.
        for lane in lanes.values():
            lane.closed = True
            lane.wakeup.set()
            if lane.task is not None:
                lane.task.cancel()
        tasks = [lane.task for lane in lanes.values() if lane.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
        for lane in lanes.values():
            _resolve(list(lane.queue))
            lane.queue.clear()

    async def _run(self, key: tuple[str, str], lane: _Lane) -> None:
        url = key[0]
        while not lane.closed:
            if not lane.queue:
                lane.wakeup.clear()
                try:
                    async with asyncio.timeout(IDLE_LANE_S):  # not wait_for: on 3.11 it can swallow a cancel
                        await lane.wakeup.wait()
                except TimeoutError:
                    if not lane.queue and self._lanes.get(key) is lane:  # idle: retire it (calls end)
                        del self._lanes[key]
                        return
                continue
            wait_s = lane.queue[0].ready_at - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)  # the delay_ms knob
                continue
            async with self._slots:  # wait for a free slot before taking the batch, so the batch grows meanwhile
                pass
            batch = _take_ready(lane.queue)
            try:
                await self._deliver(url, [p.event for p in batch])
            except Exception:  # a bug here must not silence every later callback for this URL
                logger.exception("callback delivery to %s failed", url)
            finally:
                _resolve(batch)

    async def _deliver(self, url: str, events: list[dict[str, Any]]) -> None:
        knobs, rng = self._faults.knobs, self._faults.callback_rng
        kept = []
        for event in events:
            if knobs.drop_rate > 0 and rng.random() < knobs.drop_rate:
                self._record(url, [event], attempt=0, status=None, outcome="dropped_by_fault")
            else:
                kept.append(event)
        duplicates = [e for e in kept if knobs.duplicate_rate > 0 and rng.random() < knobs.duplicate_rate]
        posts = [kept] if kept else []
        if knobs.reorder and len(kept) > 1:
            shuffled = list(kept)
            rng.shuffle(shuffled)
            if shuffled == kept:  # "reorder" promises a visible reordering of every multi-event batch
                shuffled[0], shuffled[1] = shuffled[1], shuffled[0]
            posts = [[e] for e in shuffled]
        for batch in posts:
            await self._post(url, batch, duplicate=False)
        if duplicates:  # a redelivery arrives as its own, later POST with the same event ids
            await self._post(url, duplicates, duplicate=True)

    async def _post(self, url: str, events: list[dict[str, Any]], *, duplicate: bool) -> None:
        body = json.dumps(events, separators=(",", ":")).encode()
        for attempt in range(1, self._attempts + 1):
            status, error = await self._attempt(url, body)
            ok = status is not None and 200 <= status < 300
            last = attempt == self._attempts
            outcome = "delivered" if ok else ("dropped" if last else "retrying")
            self._record(url, events, attempt=attempt, status=status, outcome=outcome, error=error, duplicate=duplicate)
            self.stats["posts"] += 1
            if ok:
                self.stats["events_delivered"] += len(events)
                return
            if last:
                self.stats["events_dropped"] += len(events)
                return
            await asyncio.sleep(self._backoff_s * 2 ** (attempt - 1))

    async def _attempt(self, url: str, body: bytes) -> tuple[int | None, str | None]:
        if self._faults.knobs.callback_target_down:
            return None, "callback target unreachable (callback_target_down fault)"
        headers = {"Authorization": f"Bearer {self._signer.token()}", "Content-Type": "application/json"}
        try:
            async with self._slots:
                return await self._post_raw(url, body, headers), None
        except Unreachable as exc:
            return None, str(exc)

    def _record(self, url: str, events: list[dict[str, Any]], **fields: Any) -> None:
        entry = {
            "t": time.time(),
            "target": url,
            "types": [e["type"] for e in events],
            "event_ids": [e["id"] for e in events],
            "call_connection_ids": [e["data"].get("callConnectionId") for e in events],
            "status": None,
            "error": None,
            "duplicate": False,
        }
        entry.update(fields)
        self.log.append(entry)


def _take_ready(queue: deque[_Pending]) -> list[_Pending]:
    now = time.monotonic()
    batch: list[_Pending] = []
    while queue and len(batch) < MAX_BATCH and queue[0].ready_at <= now:
        batch.append(queue.popleft())
    return batch


def _resolve(pending: list[_Pending]) -> None:
    for p in pending:
        if p.done is not None and not p.done.done():
            p.done.set_result(None)
