"""Deadlines for every live task in one heap: expiry, rotation and retries; and the rotation
queue that decides which credential is renewed first when rotation falls behind.

One asyncio task sleeps until the earliest deadline, so 10,000 live tasks cost a heap entry each
rather than a kopf timer (and a coroutine) per object. Deadlines are wall-clock (unix seconds):
an expiry fires after `status.expiresAt`, never before, even if the monotonic and wall clocks
drift. Stale entries are skipped lazily (each key keeps its current deadline per kind).
tasks/reconciler.py owns the callback (it re-reads and reconciles the task); this module
only keeps time, on an injected clock.

Rotation is bounded: a due `rotate` deadline does not fire at once but joins a queue ordered
by the credential's own expiry (`deadline`), and at most `rotation_concurrency` rotations run
at a time. When rotations arrive faster than they can be done, the credential closest to
expiring is renewed first, none expires while others are renewed early, and the rest of the
operator's API budget (first issuance, revocation) is never starved by a wave of rotations.
Only a rotation started here renews a token (`rotating`); any other reconcile that finds a
rotation due hands it to the queue (tasks/issue.py). How far the queue is behind is exported
as `taskwarden_rotation_lag_seconds` and `taskwarden_rotation_slack_used_ratio`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from taskwarden import metrics, rotation

Key = tuple[str, str]  # (namespace, name)
Callback = Callable[[Key, str], Awaitable[None]]

ROTATE = "rotate"
DEFAULT_ROTATION_CONCURRENCY = 16
STATS_INTERVAL = 1.0
"""Seconds between two scans of the waiting rotations for the lag gauges (O(waiting))."""
SLOT_TIMEOUT = 30.0
"""Seconds a rotation may hold its slot: one stuck on an API call that never answers goes on
(it is never cancelled halfway through its writes) but stops counting against the limit."""

log = logging.getLogger(__name__)
_rotating: contextvars.ContextVar[Key | None] = contextvars.ContextVar(
    "taskwarden_rotating", default=None
)


def rotating(key: Key) -> bool:
    """Is the current asyncio task the rotation the queue started for `key`?"""
    return _rotating.get() == key


@contextlib.contextmanager
def rotating_as(key: Key) -> Iterator[None]:
    """Run the enclosed reconcile as the queued rotation of `key` (the queue; unit tests)."""
    token = _rotating.set(key)
    try:
        yield
    finally:
        _rotating.reset(token)


class Scheduler:
    """Fires `callback(key, kind)` at or after each deadline; one pending deadline per key+kind.
    `rotate` deadlines go through the bounded rotation queue."""

    def __init__(
        self,
        callback: Callback,
        clock: Callable[[], float],
        *,
        rotation_concurrency: int = DEFAULT_ROTATION_CONCURRENCY,
        slot_timeout: float = SLOT_TIMEOUT,
    ) -> None:
        if rotation_concurrency < 1:
            raise ValueError(f"rotation_concurrency must be >= 1, got {rotation_concurrency}")
        self._callback = callback
        self._clock = clock
        self._heap: list[tuple[float, int, Key, str, float]] = []
        """(when, seq, key, kind, deadline); deadline orders the rotation queue."""
        self._current: dict[Key, dict[str, float]] = {}
        self._compact_at = 256
        """Heap size that triggers the next compaction: 4x the live entries at the last one.
        (Counting the live entries at every schedule() made filling 40,000 tasks quadratic:
        issuance fell from ~50/s to ~4/s.)"""
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rotation_concurrency = rotation_concurrency
        self.slot_timeout = slot_timeout
        self._ready: list[tuple[float, float, int, Key]] = []
        """Due rotations (credential expiry, rotation deadline, seq, key), earliest expiry first."""
        self._waiting: dict[Key, tuple[float, float]] = {}
        """Key -> (rotation deadline, credential expiry) of each due rotation not yet started."""
        self._running = 0
        self._stats_at = float("-inf")
        self._stats_zero = True

    def __len__(self) -> int:
        return len(self._current) + sum(1 for k in self._waiting if k not in self._current)

    def schedule(self, key: Key, kind: str, when: float, *, deadline: float | None = None) -> None:
        """Fire `kind` for `key` at `when`. For `rotate`, `deadline` is when the credential
        being replaced expires: it orders the queue once the rotation is due."""
        if kind == ROTATE and key in self._waiting:
            if self._waiting[key][0] == when:
                return  # that rotation is already queued
            del self._waiting[key]  # another token's rotation: the queued entry is stale
        kinds = self._current.setdefault(key, {})
        if kinds.get(kind) == when:
            return
        kinds[kind] = when
        heapq.heappush(
            self._heap, (when, next(self._seq), key, kind, when if deadline is None else deadline)
        )
        if self._heap[0][2] == key and self._heap[0][3] == kind:
            self._wake.set()
        # Lazy deletion leaves stale entries behind; compact when they dominate.
        if len(self._heap) > self._compact_at:
            self._compact()

    def cancel(self, key: Key, kind: str | None = None) -> None:
        if kind is None or kind == ROTATE:
            self._waiting.pop(key, None)
        if kind is None:
            self._current.pop(key, None)
            return
        kinds = self._current.get(key)
        if kinds is not None:
            kinds.pop(kind, None)
            if not kinds:
                del self._current[key]

    def keys(self) -> list[Key]:
        """Tasks with a pending deadline."""
        return list(self._current)

    def deadline(self, key: Key, kind: str) -> float | None:
        when = self._current.get(key, {}).get(kind)
        if when is None and kind == ROTATE and key in self._waiting:
            return self._waiting[key][0]
        return when

    @property
    def waiting(self) -> int:
        """Due rotations not yet started."""
        return len(self._waiting)

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._current.get(e[2], {}).get(e[3]) == e[0]]
        heapq.heapify(self._heap)
        self._compact_at = 4 * max(64, len(self._heap))

    def _pop_due(self, now: float) -> list[tuple[Key, str]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            when, seq, key, kind, deadline = heapq.heappop(self._heap)
            kinds = self._current.get(key)
            if kinds is None or kinds.get(kind) != when:
                continue  # stale: rescheduled or cancelled
            del kinds[kind]
            if not kinds:
                del self._current[key]
            if kind == ROTATE:
                self._waiting[key] = (when, deadline)
                heapq.heappush(self._ready, (deadline, when, seq, key))
            else:
                due.append((key, kind))
        return due

    def _next_rotations(self) -> list[tuple[Key, float]]:
        """Take the queued rotations that may start now, earliest credential expiry first."""
        out: list[tuple[Key, float]] = []
        while self._ready and self._running + len(out) < self.rotation_concurrency:
            deadline, when, _, key = heapq.heappop(self._ready)
            if self._waiting.get(key) != (when, deadline):
                continue  # stale: cancelled, or rescheduled for another token
            del self._waiting[key]
            out.append((key, when))
        if not self._waiting:
            self._ready.clear()  # only stale entries can be left
        return out

    def _observe(self, now: float, force: bool = False) -> None:
        """Set the rotation gauges from the waiting rotations (at most every STATS_INTERVAL)."""
        if self._stats_zero and not self._waiting:
            return  # nothing waits, and the gauges already say so
        if not force and self._waiting and now - self._stats_at < STATS_INTERVAL:
            return
        self._stats_at = now
        lag, used = 0.0, 0.0
        for when, deadline in self._waiting.values():
            lag = max(lag, now - when)
            used = max(used, rotation.slack_used(now, when, deadline))
        metrics.rotation_lag.set(lag)
        metrics.rotation_slack_used.set(used)
        metrics.rotations_waiting.set(len(self._waiting))
        self._stats_zero = not self._waiting

    async def run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            for key, kind in self._pop_due(now):
                self._start(self._fire(key, kind))
            for key, when in self._next_rotations():
                self._running += 1
                self._start(self._rotate(key, when))
            self._observe(now)
            delay = (self._heap[0][0] - now) if self._heap else 30.0
            if self._waiting:
                delay = min(delay, STATS_INTERVAL)  # keep the lag gauges current
            # Re-read the wall clock at least every 30 s; the sleep is monotonic.
            delay = max(0.0, min(delay, 30.0))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    def _start(self, coro: Awaitable[None]) -> None:
        t = asyncio.ensure_future(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _fire(self, key: Key, kind: str) -> None:
        try:
            await self._callback(key, kind)
        except Exception:
            log.exception("scheduled %s for %s/%s failed", kind, *key)

    async def _rotate(self, key: Key, when: float) -> None:
        """Hold one slot while the rotation of `key` runs, at most `slot_timeout` seconds."""
        metrics.rotation_delay.observe(max(0.0, self._clock() - when))
        work = asyncio.ensure_future(self._rotation(key))
        self._tasks.add(work)
        work.add_done_callback(self._tasks.discard)
        try:
            done, _ = await asyncio.wait({work}, timeout=self.slot_timeout)
            if not done:
                log.warning(
                    "rotation of %s/%s still running after %.0fs; its slot is released",
                    *key,
                    self.slot_timeout,
                )
        finally:
            self._running -= 1
            self._wake.set()

    async def _rotation(self, key: Key) -> None:
        try:
            with rotating_as(key):
                await self._callback(key, ROTATE)
        except Exception:
            log.exception("scheduled rotation for %s/%s failed", *key)
