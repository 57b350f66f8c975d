"""The rotation queue and rotation deadlines, on an injected clock, with no sleeping: when more
rotations are due than may run, the credential that expires first is renewed first; deadlines
are jittered by the token's jti; lag is exported; a late rotation is named."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

from taskwarden import metrics, rotation
from taskwarden.tasks import scheduler

Key = tuple[str, str]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def pump(times: int = 30) -> None:
    """Let every ready asyncio task run (no time passes on any clock)."""
    for _ in range(times):
        await asyncio.sleep(0)


def gauge(g: object) -> float:
    return float(g._value.get())  # type: ignore[attr-defined]


class Recorder:
    """A rotation callback that blocks until released, recording start order and concurrency."""

    def __init__(self) -> None:
        self.started: list[tuple[Key, str]] = []
        self.release: dict[Key, asyncio.Event] = {}
        self.running = 0
        self.max_running = 0
        self.saw_rotating: list[bool] = []

    async def __call__(self, key: Key, kind: str) -> None:
        self.started.append((key, kind))
        self.saw_rotating.append(scheduler.rotating(key))
        if kind != scheduler.ROTATE:
            return
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        ev = self.release.setdefault(key, asyncio.Event())
        await ev.wait()
        self.running -= 1

    def finish(self, key: Key) -> None:
        self.release.setdefault(key, asyncio.Event()).set()


def test_when_behind_the_credential_expiring_first_is_rotated_first() -> None:
    clock = Clock(1000.0)
    rec = Recorder()

    async def scenario() -> None:
        s = scheduler.Scheduler(rec, clock, rotation_concurrency=1)
        # Rotation deadlines in one order, credential expiries in another: expiry wins.
        s.schedule(("ns", "a"), "rotate", 1001.0, deadline=1040.0)
        s.schedule(("ns", "b"), "rotate", 1002.0, deadline=1010.0)
        s.schedule(("ns", "c"), "rotate", 1003.0, deadline=1030.0)
        s.schedule(("ns", "d"), "rotate", 1004.0, deadline=1020.0)
        s.schedule(("ns", "e"), "rotate", 1050.0, deadline=1005.0)  # not due yet
        runner = asyncio.create_task(s.run())
        clock.now = 1004.0
        s._wake.set()
        await pump()
        assert rec.started == [(("ns", "b"), "rotate")]
        assert s.waiting == 3
        order = ["b", "d", "c", "a"]
        for done, nxt in itertools.pairwise(order):
            rec.finish(("ns", done))
            await pump()
            assert rec.started[-1] == (("ns", nxt), "rotate")
        rec.finish(("ns", "a"))
        await pump()
        assert [k[1] for k, _ in rec.started] == order
        assert rec.max_running == 1
        assert all(rec.saw_rotating)  # each ran as the queued rotation of its own key
        assert s.waiting == 0 and s.deadline(("ns", "e"), "rotate") == 1050.0
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_rotations_never_hold_back_other_deadlines() -> None:
    clock = Clock(1000.0)
    rec = Recorder()

    async def scenario() -> None:
        s = scheduler.Scheduler(rec, clock, rotation_concurrency=2)
        for i in range(10):
            s.schedule(("ns", f"r{i}"), "rotate", 1000.0 + i / 10, deadline=1100.0 + i)
        s.schedule(("ns", "x"), "expire", 1001.0)
        s.schedule(("ns", "y"), "retry", 1001.0)
        runner = asyncio.create_task(s.run())
        clock.now = 1002.0
        s._wake.set()
        await pump()
        kinds = [kind for _, kind in rec.started]
        assert kinds.count("rotate") == 2 and rec.running == 2
        assert {"expire", "retry"} <= set(kinds)  # fired at once although rotations wait
        assert not rec.saw_rotating[kinds.index("expire")]
        assert s.waiting == 8
        for i in range(10):
            rec.finish(("ns", f"r{i}"))
        await pump(100)
        assert [kind for _, kind in rec.started].count("rotate") == 10
        assert rec.max_running == 2
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_a_queued_rotation_is_replaced_or_cancelled_not_run_twice() -> None:
    clock = Clock(1000.0)
    rec = Recorder()

    async def scenario() -> None:
        s = scheduler.Scheduler(rec, clock, rotation_concurrency=1)
        s.schedule(("ns", "busy"), "rotate", 999.0, deadline=1001.0)
        s.schedule(("ns", "a"), "rotate", 999.5, deadline=1010.0)
        s.schedule(("ns", "b"), "rotate", 999.6, deadline=1011.0)
        runner = asyncio.create_task(s.run())
        s._wake.set()
        await pump()
        assert s.waiting == 2
        s.schedule(("ns", "a"), "rotate", 999.5, deadline=1010.0)  # the same one again: no-op
        assert s.waiting == 2
        s.schedule(("ns", "a"), "rotate", 1500.0, deadline=1600.0)  # a new token's rotation
        s.cancel(("ns", "b"))
        assert s.waiting == 0 and s.deadline(("ns", "a"), "rotate") == 1500.0
        rec.finish(("ns", "busy"))
        await pump()
        assert [k[1] for k, _ in rec.started] == ["busy"]
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_lag_and_slack_gauges_follow_the_waiting_rotations() -> None:
    clock = Clock(1000.0)
    rec = Recorder()

    async def scenario() -> None:
        s = scheduler.Scheduler(rec, clock, rotation_concurrency=1)
        s.schedule(("ns", "a"), "rotate", 1000.0, deadline=1100.0)
        s.schedule(("ns", "b"), "rotate", 1010.0, deadline=1050.0)
        s.schedule(("ns", "c"), "rotate", 1020.0, deadline=1060.0)
        runner = asyncio.create_task(s.run())
        clock.now = 1030.0
        s._wake.set()
        await pump()
        # b runs (expires first); a and c wait: a is 30 s past its deadline, c has spent
        # 10 of the 40 s between its deadline and its expiry.
        assert rec.started == [(("ns", "b"), "rotate")]
        assert gauge(metrics.rotation_lag) == pytest.approx(30.0)
        assert gauge(metrics.rotation_slack_used) == pytest.approx(max(30 / 100, 10 / 40))
        assert gauge(metrics.rotations_waiting) == 2
        clock.now = 1040.0
        rec.finish(("ns", "b"))
        await pump()
        assert gauge(metrics.rotation_lag) == pytest.approx(40.0)  # c runs, a waits
        rec.finish(("ns", "c"))
        await pump()
        rec.finish(("ns", "a"))
        await pump()
        clock.now = 1041.0
        s._wake.set()
        await pump()
        assert gauge(metrics.rotation_lag) == 0.0 and gauge(metrics.rotations_waiting) == 0
        assert gauge(metrics.rotation_slack_used) == 0.0
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


def test_a_rotation_stuck_on_the_api_releases_its_slot_but_is_not_cancelled() -> None:
    clock = Clock(1000.0)
    rec = Recorder()

    async def scenario() -> None:
        s = scheduler.Scheduler(rec, clock, rotation_concurrency=1, slot_timeout=0.01)
        s.schedule(("ns", "stuck"), "rotate", 999.0, deadline=1001.0)
        s.schedule(("ns", "next"), "rotate", 999.5, deadline=1002.0)
        runner = asyncio.create_task(s.run())
        s._wake.set()
        await pump()
        assert [k[1] for k, _ in rec.started] == ["stuck"]
        await asyncio.wait_for(_started(rec, 2), timeout=5)  # after the 10 ms slot timeout
        assert [k[1] for k, _ in rec.started] == ["stuck", "next"]
        assert rec.running == 2  # the stuck one still runs: never cancelled mid-write
        rec.finish(("ns", "stuck"))
        rec.finish(("ns", "next"))
        await pump()
        assert rec.running == 0
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner

    asyncio.run(scenario())


async def _started(rec: Recorder, n: int) -> None:
    while len(rec.started) < n:
        await asyncio.sleep(0.005)


def test_rotation_concurrency_must_be_positive() -> None:
    async def cb(key: Key, kind: str) -> None:
        return None

    with pytest.raises(ValueError, match="rotation_concurrency"):
        scheduler.Scheduler(cb, Clock(0.0), rotation_concurrency=0)


def test_deadlines_are_jittered_within_the_window_and_stable_per_token() -> None:
    assert rotation.rotate_at(100.0, 200.0, 1000.0, 0.0) == 150.0
    assert rotation.rotate_at(100.0, 200.0, 1000.0, 0.999) == pytest.approx(159.99)
    assert rotation.rotate_at(100.0, 200.0, 200.0, 0.5) is None  # the task ends with the token
    with pytest.raises(ValueError, match="draw"):
        rotation.rotate_at(100.0, 200.0, 1000.0, 1.0)
    # An injected draw decides the point in the window.
    assert rotation.deadline_of("x", 0.0, 10.0, 100.0, draw=lambda jti: 0.25) == 5.25
    # Drawn from the jti: the same token always gets the same deadline (re-checks, restarts
    # and replicas agree), and a thousand tokens issued in the same second spread out.
    jtis = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(1000)]
    at = [rotation.deadline_of(j, 1000.0, 1600.0, 9999.0) for j in jtis]
    assert at == [rotation.deadline_of(j, 1000.0, 1600.0, 9999.0) for j in jtis]
    values = [a for a in at if a is not None]
    assert min(values) >= 1300.0 and max(values) < 1360.0
    buckets = [0] * 10
    for a in values:
        buckets[int((a - 1300.0) / 6.0)] += 1
    assert all(50 <= b <= 150 for b in buckets), buckets  # about uniform: 100 each
    assert len({round(a) for a in values}) >= 55  # not one second: spread over the minute


def test_a_rotation_is_late_past_a_tenth_of_its_life_and_slack_is_ttl_free() -> None:
    # A 10 s token due at 5.5 s: late after 1 s.
    assert rotation.late_by(6.4, 5.5, 0.0, 10.0) is None
    assert rotation.late_by(6.6, 5.5, 0.0, 10.0) == pytest.approx(1.1)
    # A 10 min token: late after a minute.
    assert rotation.late_by(330.0 + 59.0, 330.0, 0.0, 600.0) is None
    assert rotation.late_by(330.0 + 61.0, 330.0, 0.0, 600.0) == pytest.approx(61.0)
    assert rotation.slack_used(5.5, 5.5, 10.0) == 0.0
    assert rotation.slack_used(7.75, 5.5, 10.0) == pytest.approx(0.5)
    assert rotation.slack_used(10.0, 5.5, 10.0) == pytest.approx(1.0)
    assert rotation.slack_used(465.0, 330.0, 600.0) == pytest.approx(0.5)


def test_behind_events_are_budgeted_across_tasks() -> None:
    """Thousands of tasks flipping to RotationBehind at once post a burst of Events, then one
    per second, whatever the number of tasks; an idle second earns one back."""
    budget = rotation.Budget(rate=1.0, burst=3)
    assert [budget.take(100.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.take(100.5) is False
    assert budget.take(101.0) is True
    assert budget.take(101.0) is False
    assert [budget.take(200.0) for _ in range(4)] == [True, True, True, False]  # capped at burst
    with pytest.raises(ValueError):
        rotation.Budget(rate=0.0)
