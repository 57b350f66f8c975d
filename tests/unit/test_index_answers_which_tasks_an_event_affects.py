"""The index applies each watch event and answers which live tasks it affects; handlers only
pass those on to the reconciler."""

from __future__ import annotations

from typing import Any

from taskwarden.index import Index, TaskRef, compact_pod
from tests.unit import task_world as w


def index_with_tasks() -> Index:
    ix = Index()
    ix.put_task((w.NS, "named"), TaskRef("u1", w.SA, "agent-0", "Active"))
    ix.put_task((w.NS, "by-account"), TaskRef("u2", w.SA, None, "Active"))
    ix.put_task((w.NS, "other-account"), TaskRef("u3", "other", None, "Pending"))
    ix.put_task(("elsewhere", "named"), TaskRef("u4", w.SA, "agent-0", "Active"))
    ix.put_task((w.NS, "child"), TaskRef("u5", w.SA, None, "Pending", delegated_from="named"))
    return ix


def test_a_new_pod_affects_tasks_naming_it_or_its_account() -> None:
    ix = index_with_tasks()
    affected = ix.on_pod("ADDED", w.pod())
    assert sorted(affected) == [(w.NS, "by-account"), (w.NS, "child"), (w.NS, "named")]
    assert ix.pods[w.NS]["agent-0"] == compact_pod(w.pod())


def test_a_pod_update_that_changes_nothing_attestation_reads_affects_none() -> None:
    ix = index_with_tasks()
    ix.on_pod("ADDED", w.pod())
    relabelled: dict[str, Any] = w.pod()
    relabelled["metadata"]["labels"] = {"x": "y"}
    assert ix.on_pod("MODIFIED", relabelled) == []
    assert ix.on_pod("MODIFIED", w.pod(phase="Succeeded")) != []


def test_a_deleted_pod_is_dropped_and_affects_its_tasks() -> None:
    ix = index_with_tasks()
    ix.on_pod("ADDED", w.pod())
    assert (w.NS, "named") in ix.on_pod("DELETED", w.pod())
    assert "agent-0" not in ix.pods[w.NS]


def test_a_policy_change_affects_the_accounts_named_before_and_after() -> None:
    ix = index_with_tasks()
    pol = w.policy_body()
    assert sorted(ix.on_policy("ADDED", pol)) == [
        (w.NS, "by-account"),
        (w.NS, "child"),
        (w.NS, "named"),
    ]
    assert ix.on_policy("MODIFIED", pol) == []  # same spec: nothing to re-evaluate
    moved = w.policy_body()
    moved["spec"]["subjects"]["serviceAccounts"] = ["other"]
    assert len(ix.on_policy("MODIFIED", moved)) == 4  # the old account and the new one
    assert ix.on_policy("DELETED", moved) == [(w.NS, "other-account")]
    assert ix.policies_in(w.NS) == []


def test_an_approval_affects_the_task_it_names() -> None:
    ix = Index()
    appr = w.approval(w.task("named"))
    assert ix.on_approval("ADDED", appr) == [(w.NS, "named")]
    assert len(ix.approvals_for(w.NS, "named")) == 1
    assert ix.on_approval("DELETED", appr) == [(w.NS, "named")]
    assert ix.approvals_for(w.NS, "named") == []
    assert ix.on_approval("ADDED", {"metadata": {"namespace": w.NS, "name": "x"}}) == []


def test_children_of_a_task() -> None:
    assert index_with_tasks().children_of(w.NS, "named") == [(w.NS, "child")]
