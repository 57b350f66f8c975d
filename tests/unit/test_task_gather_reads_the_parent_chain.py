"""Gathering is the only place a task decision reads: the index for pods, policies and
approvals, and the API for the delegation chain, read up front and bounded."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taskwarden.index import Index
from taskwarden.kube import ApiError
from taskwarden.policy import delegation
from taskwarden.tasks import checks, gather
from tests.unit import task_world as w


class Tasks:
    def __init__(self, *bodies: dict[str, Any]) -> None:
        self.bodies = {b["metadata"]["name"]: b for b in bodies}
        self.reads: list[str] = []

    async def get(self, plural: str, ns: str, name: str) -> dict[str, Any]:
        self.reads.append(name)
        if name not in self.bodies:
            raise ApiError(404, "Not Found")
        return self.bodies[name]


def linked(n: int) -> list[dict[str, Any]]:
    return [w.task(f"p{i}", delegatedFrom=f"p{i + 1}") for i in range(n)]


def test_the_chain_is_read_nearest_first_until_a_task_is_not_delegated() -> None:
    kube = Tasks(w.task("p0", delegatedFrom="p1"), w.task("p1"))
    chain, missing = asyncio.run(gather.parent_chain(kube, w.NS, "p0"))  # type: ignore[arg-type]
    assert [p["metadata"]["name"] for p in chain] == ["p0", "p1"] and missing is None


def test_a_missing_parent_stops_the_read_and_is_named() -> None:
    kube = Tasks(w.task("p0", delegatedFrom="gone"))
    chain, missing = asyncio.run(gather.parent_chain(kube, w.NS, "p0"))  # type: ignore[arg-type]
    assert len(chain) == 1 and missing == "gone"


def test_the_read_is_bounded_one_past_the_deepest_delegation_allowed() -> None:
    kube = Tasks(*linked(30))
    chain, missing = asyncio.run(gather.parent_chain(kube, w.NS, "p0"))  # type: ignore[arg-type]
    assert len(chain) == len(kube.reads) == checks.MAX_PARENTS and missing is None
    assert checks.MAX_PARENTS == delegation.MAX_DEPTH + 1 == 17  # the CRD's maxDepth bound + 1


def test_other_api_errors_are_not_taken_for_a_missing_parent() -> None:
    class Broken(Tasks):
        async def get(self, plural: str, ns: str, name: str) -> dict[str, Any]:
            raise ApiError(500, "boom")

    with pytest.raises(ApiError):
        asyncio.run(gather.parent_chain(Broken(), w.NS, "p0"))  # type: ignore[arg-type]


def test_gather_reads_the_index_and_only_a_delegated_task_reads_the_api() -> None:
    index = Index()
    index.put_policy(w.policy_body())
    index.put_pod(w.pod())
    index.put_approval(w.approval(w.task()))
    kube = Tasks(w.active_parent())
    facts = asyncio.run(gather.gather(kube, index, w.TRUST_DOMAIN, w.task()))  # type: ignore[arg-type]
    assert kube.reads == [] and facts.parents == ()
    assert list(facts.policies) == ["research-agents"]
    assert len(facts.pods) == 1 and len(facts.approvals) == 1
    child = w.task("child", delegatedFrom="parent")
    facts = asyncio.run(gather.gather(kube, index, w.TRUST_DOMAIN, child))  # type: ignore[arg-type]
    assert kube.reads == ["parent"] and facts.parents[0]["metadata"]["name"] == "parent"
    assert facts.approvals == ()  # approvals of other tasks are not this task's facts


def test_an_invalid_spec_is_gathered_as_such_without_reads() -> None:
    kube = Tasks()
    body = w.task(ttl="soon", delegatedFrom="parent")
    facts = asyncio.run(gather.gather(kube, Index(), w.TRUST_DOMAIN, body))  # type: ignore[arg-type]
    assert facts.request is None and facts.spec_error and kube.reads == []
