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

        source = watch.EventSource(None, "agenttasks", (), on_listed=nothing, on_event=on_event)  # type: ignore[arg-type]
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
        for _ in range(100):
            await asyncio.sleep(0)
            if not source.pending:
                break
        assert not source.pending and source._working == 0
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
