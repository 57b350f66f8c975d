"""The deadline heap: fires after each deadline and never before, one entry per key and kind."""

from __future__ import annotations

import asyncio

import pytest

from taskwarden import lifecycle
from taskwarden.tasks import scheduler


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_expiry_and_rotation_helpers() -> None:
    assert lifecycle.expiry(100.0, 60.0) == 160.0
    assert lifecycle.expiry(100.0, 60.0, parent_expires_at=130.0) == 130.0
    assert lifecycle.token_expiry(100.4, 30.0, 1000.0) == 130.0
    assert lifecycle.token_expiry(100.0, 30.0, 110.5) == 110.0  # floored, never past the task
    assert lifecycle.rotation_at(100.0, 130.0, 1000.0) == 115.0
    assert lifecycle.rotation_at(100.0, 130.0, 130.0) is None  # the task ends with the token


def test_scheduler_fires_due_entries_in_order_and_skips_stale() -> None:
    fired: list[tuple[tuple[str, str], str, float]] = []
    clock = Clock(1000.0)

    async def cb(key: tuple[str, str], kind: str) -> None:
        fired.append((key, kind, clock.now))

    async def scenario() -> None:
        s = scheduler.Scheduler(cb, clock)
        s.schedule(("ns", "a"), "expire", 1010.0)
        s.schedule(("ns", "b"), "expire", 1005.0)
        s.schedule(("ns", "c"), "expire", 1003.0)
        s.schedule(("ns", "a"), "rotate", 1004.0)
        s.schedule(("ns", "a"), "rotate", 1008.0)  # rescheduled: the 1004 entry is stale
        s.cancel(("ns", "c"))
        assert len(s) == 2
        runner = asyncio.create_task(s.run())
        for t in (1004.5, 1005.0, 1008.0, 1009.99, 1010.0):
            clock.now = t
            s._wake.set()
            await asyncio.sleep(0.01)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())
    assert [(k[1], kind) for k, kind, _ in fired] == [
        ("b", "expire"),
        ("a", "rotate"),
        ("a", "expire"),
    ]
    deadlines = {("b", "expire"): 1005.0, ("a", "rotate"): 1008.0, ("a", "expire"): 1010.0}
    for key, kind, at in fired:
        assert at >= deadlines[(key[1], kind)], "fired before its deadline"


def test_ten_thousand_deadlines_are_cheap() -> None:
    async def cb(key: tuple[str, str], kind: str) -> None:
        return None

    async def scenario() -> int:
        s = scheduler.Scheduler(cb, Clock(0.0))
        for i in range(10_000):
            s.schedule(("ns", f"t{i}"), "expire", 100.0 + i)
            s.schedule(("ns", f"t{i}"), "rotate", 50.0 + i)
        for i in range(10_000):
            s.schedule(("ns", f"t{i}"), "rotate", 60.0 + i)  # every rotation rescheduled
        return len(s._heap)

    heap = asyncio.run(scenario())
    assert heap <= 4 * 20_000  # stale entries are compacted, not accumulated without bound


def test_rescheduling_keeps_the_heap_within_four_times_the_live_entries() -> None:
    """Stale entries (lazy deletion) are compacted away: 2,000 keys rescheduled ten times each
    leave a heap of at most 4x the 4,000 live entries, and the latest deadlines still fire."""
    clock = Clock(0.0)
    fired: list[tuple[tuple[str, str], str]] = []

    async def cb(key: tuple[str, str], kind: str) -> None:
        fired.append((key, kind))

    async def scenario() -> None:
        s = scheduler.Scheduler(cb, clock)
        for round_ in range(10):
            for i in range(2000):
                s.schedule(("ns", f"t{i}"), "expire", 100.0 + round_)
                s.schedule(("ns", f"t{i}"), "refresh", 200.0 + round_)
            assert len(s._heap) <= 4 * 4000 + 1
        assert len(s) == 2000
        runner = asyncio.create_task(s.run())
        clock.now = 150.0
        s._wake.set()
        for _ in range(200):
            await asyncio.sleep(0)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())
    assert sorted(fired) == sorted((("ns", f"t{i}"), "expire") for i in range(2000))
