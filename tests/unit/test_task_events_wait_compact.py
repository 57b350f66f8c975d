"""Under a burst of task events faster than they are handled, the event source works on at most
MAX_WORKERS objects at once; the events of the others wait as compact JSON (watch.Frozen), are
handled in order of arrival, still coalesce per object, and reach the handler whole (less
`managedFields`, which nothing reads)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskwarden import watch


def task(i: int, rv: int, uid: str | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "ns",
            "name": f"t-{i:03d}",
            "uid": uid or f"u-{i}",
            "resourceVersion": str(rv),
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
        },
        "spec": {"intent": "x" * 100},
    }


async def _drained(source: watch.EventSource) -> None:
    """Let the loop run until nothing is pending and no worker is busy (100 turns at most)."""
    for _ in range(100):
        await asyncio.sleep(0)
        if not source.pending:
            break
    assert not source.pending and source._working == 0


def test_a_burst_waits_compact_and_is_handled_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(watch, "MAX_WORKERS", 4)

    async def scenario() -> None:
        gate = asyncio.Event()
        handled: list[tuple[str, str, str]] = []
        started: list[str] = []
        running, most = 0, 0

        async def on_event(kind: str, obj: dict[str, Any]) -> None:
            nonlocal running, most
            assert "managedFields" not in obj["metadata"]
            assert obj["spec"] == {"intent": "x" * 100}
            running += 1
            started.append(obj["metadata"]["name"])
            most = max(most, running)
            await gate.wait()
            running -= 1
            handled.append((kind, obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))

        async def nothing(_: dict[str, Any]) -> None:
            return None

        source = watch.EventSource(
            None,  # type: ignore[arg-type]
            "agenttasks",
            (),
            on_listed=nothing,
            on_event=on_event,
            urgent=lambda kind, obj: False,  # the bound alone (urgency: the test below)
        )
        for i in range(50):
            source._dispatch("ADDED", task(i, rv=100 + i))
        for i in range(10, 20):  # newer states of objects still waiting: replace them
            source._dispatch("MODIFIED", task(i, rv=200 + i))
        source._dispatch("DELETED", task(30, rv=300))  # a deletion is never coalesced away
        await asyncio.sleep(0.01)
        assert most == 4, "at most MAX_WORKERS objects are handled at once"
        waiting = [e for q in source._queues.values() for e in q]
        frozen = [e for e in waiting if isinstance(e[1], watch.Frozen)]
        assert len(source._queues) == 50, "4 in hand (their queues empty), 46 waiting"
        assert len(frozen) == len(waiting) == 46, "every waiting event is compact"
        gate.set()
        await _drained(source)
        assert most == 4
        assert started == [f"t-{i:03d}" for i in range(50)], "in order of arrival"
        by_name = {n: (k, rv) for k, n, rv in handled}
        assert all(by_name[f"t-{i:03d}"] == ("MODIFIED", str(200 + i)) for i in range(10, 20))
        assert by_name["t-030"] == ("DELETED", "300")
        assert len(handled) == 50, "each waiting object handled once, in its latest state"
        # An event after the burst finds a worker again.
        source._dispatch("MODIFIED", task(0, rv=999))
        await asyncio.sleep(0.01)
        assert handled[-1] == ("MODIFIED", "t-000", "999")

    asyncio.run(scenario())


def test_an_ending_task_never_waits_in_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Completions and deletions (urgent) call the urgent hook at once and go to the front of
    the line, even when their object was already waiting; the bound holds; each object is
    handled once, in its latest state."""
    monkeypatch.setattr(watch, "MAX_WORKERS", 2)

    async def scenario() -> None:
        gate = asyncio.Event()
        started: list[tuple[str, str]] = []

        async def on_event(kind: str, obj: dict[str, Any]) -> None:
            started.append((kind, obj["metadata"]["name"]))
            if not obj["spec"].get("completed") and kind != "DELETED":
                await gate.wait()

        async def nothing(_: dict[str, Any]) -> None:
            return None

        def ending(kind: str, obj: dict[str, Any]) -> bool:
            return kind == "DELETED" or obj["spec"].get("completed") is True

        source = watch.EventSource(
            None,  # type: ignore[arg-type]
            "agenttasks",
            (),
            on_listed=nothing,
            on_event=on_event,
            urgent=ending,
            on_urgent=lambda kind, obj: hooked.append(obj["metadata"]["name"]),
        )
        hooked: list[str] = []
        for i in range(10):
            source._dispatch("ADDED", task(i, rv=100 + i))
        done = task(7, rv=200)
        done["spec"]["completed"] = True
        source._dispatch("MODIFIED", done)  # t-007 was in line: goes now
        source._dispatch("DELETED", task(20, rv=300))  # new object, workers all busy: goes now
        assert hooked == ["t-007", "t-020"], "the urgent hook runs at dispatch, before any work"
        await asyncio.sleep(0.01)
        assert started == [("ADDED", "t-000"), ("ADDED", "t-001")], "the bound holds"
        gate.set()
        await _drained(source)
        names = [n for _, n in started]
        assert names[2:4] == ["t-020", "t-007"], "ending tasks first, the latest first"
        assert sorted(names) == sorted({*(f"t-{i:03d}" for i in range(10)), "t-020"})
        assert len(names) == 11, "t-007 handled once, in its latest state"
        assert ("MODIFIED", "t-007") in started

    asyncio.run(scenario())


def test_which_task_events_end_a_credential() -> None:
    from taskwarden.tasks.facts import ending

    live = task(1, rv=1)
    assert not ending("ADDED", live) and not ending("MODIFIED", live)
    assert ending("DELETED", live)
    completed = {**live, "spec": {"completed": True}}
    assert ending("MODIFIED", completed)
    assert not ending("MODIFIED", {**completed, "status": {"phase": "Completed"}}), "done already"
    assert not ending("DELETED", {**live, "status": {"phase": "Expired"}}), "holds nothing"
    revoked = {"metadata": {"annotations": {"taskwarden.dev/revoke": "leaked"}}, "spec": {}}
    assert ending("MODIFIED", revoked)
    deleting = {"metadata": {"deletionTimestamp": "2026-11-29T00:00:00Z"}, "spec": {}}
    assert ending("MODIFIED", deleting)
