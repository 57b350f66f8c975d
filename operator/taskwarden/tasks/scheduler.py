"""Deadlines for every live task in one heap: expiry, rotation and retries.

One asyncio task sleeps until the earliest deadline, so 10,000 live tasks cost a heap entry each
rather than a kopf timer (and a coroutine) per object. Deadlines are wall-clock (unix seconds):
an expiry fires after `status.expiresAt`, never before, even if the monotonic and wall clocks
drift. Stale entries are skipped lazily (each key keeps its current deadline per kind).
tasks/reconciler.py owns the callback (it re-reads and reconciles the task); this module
only keeps time, on an injected clock.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

Key = tuple[str, str]  # (namespace, name)
Callback = Callable[[Key, str], Awaitable[None]]

log = logging.getLogger(__name__)


class Scheduler:
    """Fires `callback(key, kind)` at or after each deadline; one pending deadline per key+kind."""

    def __init__(self, callback: Callback, clock: Callable[[], float]) -> None:
        self._callback = callback
        self._clock = clock
        self._heap: list[tuple[float, int, Key, str]] = []
        self._current: dict[Key, dict[str, float]] = {}
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._current)

    def schedule(self, key: Key, kind: str, when: float) -> None:
        kinds = self._current.setdefault(key, {})
        if kinds.get(kind) == when:
            return
        kinds[kind] = when
        heapq.heappush(self._heap, (when, next(self._seq), key, kind))
        if self._heap[0][2] == key and self._heap[0][3] == kind:
            self._wake.set()
        # Lazy deletion leaves stale entries behind; compact when they dominate.
        if len(self._heap) > 4 * max(64, sum(len(k) for k in self._current.values())):
            self._compact()

    def cancel(self, key: Key, kind: str | None = None) -> None:
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
        return self._current.get(key, {}).get(kind)

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._current.get(e[2], {}).get(e[3]) == e[0]]
        heapq.heapify(self._heap)

    def _pop_due(self, now: float) -> list[tuple[Key, str]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key, kind = heapq.heappop(self._heap)
            kinds = self._current.get(key)
            if kinds is None or kinds.get(kind) != when:
                continue  # stale: rescheduled or cancelled
            del kinds[kind]
            if not kinds:
                del self._current[key]
            due.append((key, kind))
        return due

    async def run(self) -> None:
        while True:
            self._wake.clear()
            now = self._clock()
            for key, kind in self._pop_due(now):
                t = asyncio.create_task(self._fire(key, kind))
                self._tasks.add(t)
                t.add_done_callback(self._tasks.discard)
            delay = (self._heap[0][0] - now) if self._heap else 30.0
            # Re-read the wall clock at least every 30 s; the sleep is monotonic.
            delay = max(0.0, min(delay, 30.0))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def _fire(self, key: Key, kind: str) -> None:
        try:
            await self._callback(key, kind)
        except Exception:
            log.exception("scheduled %s for %s/%s failed", kind, *key)
