"""In-memory indexes of what the reconciler reads on every decision: pods, policies, approvals,
live tasks and delivered credential Secrets.

Filled from one LIST at start-up, then kept current by watch events (handlers.py) and by the
operator's own writes. Kept compact on purpose: a pod is a small dict of the facts attestation
needs, a task is a few strings, a Secret is its jti — never its token — so 10,000 live tasks
cost little memory. No Kubernetes client here; callers pass plain dicts.

The `on_*` methods take one watch event, update the index and answer which live tasks it
affects: handlers.py registers the watches and hands those tasks to the reconciler.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from taskwarden import metrics

Key = tuple[str, str]


def compact_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """Just what identity.attest reads, in the same shape as a pod from the API."""
    md, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    return {
        "metadata": {
            "name": md.get("name"),
            "namespace": md.get("namespace"),
            "uid": md.get("uid"),
            "creationTimestamp": md.get("creationTimestamp"),
            "deletionTimestamp": md.get("deletionTimestamp"),
        },
        "spec": {
            "serviceAccountName": spec.get("serviceAccountName"),
            "nodeName": spec.get("nodeName"),
        },
        "status": {"phase": st.get("phase")},
    }


def _key(obj: Mapping[str, Any]) -> Key:
    md = obj.get("metadata") or {}
    return str(md.get("namespace") or ""), str(md.get("name") or "")


def _pod_facts(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """What attestation reads of a pod that can change while it exists."""
    md, st = pod.get("metadata") or {}, pod.get("status") or {}
    return (md.get("uid"), md.get("deletionTimestamp"), st.get("phase"))


@dataclass(slots=True)
class TaskRef:
    """What the indexes remember of a live task, to find the tasks a pod or policy affects.
    Slotted: one of these per live task (~100 bytes, its strings shared with the key)."""

    uid: str
    service_account: str
    pod_name: str | None
    phase: str | None
    delegated_from: str | None = None


class Index:
    def __init__(self) -> None:
        self.pods: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.policies: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.approvals: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        self.tasks: dict[Key, TaskRef] = {}
        self.secrets: dict[Key, str] = {}
        """(namespace, secret name) -> jti of the token it holds (no token kept)."""

    # ------------------------------------------------------------------ pods

    def put_pod(self, pod: Mapping[str, Any]) -> dict[str, Any]:
        p = compact_pod(pod)
        md = p["metadata"]
        self.pods[md["namespace"]][md["name"]] = p
        return p

    def drop_pod(self, namespace: str, name: str) -> None:
        self.pods.get(namespace, {}).pop(name, None)

    def pods_in(self, namespace: str) -> Collection[dict[str, Any]]:
        return self.pods.get(namespace, {}).values()

    # ------------------------------------------------------------------ policies, approvals

    def put_policy(self, policy: Mapping[str, Any]) -> None:
        md = policy.get("metadata") or {}
        self.policies[md["namespace"]][md["name"]] = {
            "metadata": {"name": md["name"], "namespace": md["namespace"]},
            "spec": dict(policy.get("spec") or {}),
        }

    def drop_policy(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.policies.get(namespace, {}).pop(name, None)

    def policies_in(self, namespace: str) -> list[dict[str, Any]]:
        return list(self.policies.get(namespace, {}).values())

    def put_approval(self, approval: Mapping[str, Any]) -> None:
        md = approval.get("metadata") or {}
        self.approvals[md["namespace"]][md["name"]] = {
            "metadata": {
                "name": md["name"],
                "namespace": md["namespace"],
                "uid": md.get("uid"),
                "annotations": dict(md.get("annotations") or {}),
                "creationTimestamp": md.get("creationTimestamp"),
            },
            "spec": dict(approval.get("spec") or {}),
            "status": dict(approval.get("status") or {}),
        }

    def drop_approval(self, namespace: str, name: str) -> None:
        self.approvals.get(namespace, {}).pop(name, None)

    def approvals_for(self, namespace: str, task: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.approvals.get(namespace, {}).values()
            if (a.get("spec") or {}).get("taskName") == task
        ]

    # ------------------------------------------------------------------ watch events

    def on_pod(self, event_type: str | None, pod: Mapping[str, Any]) -> list[Key]:
        """Apply a pod event; the live tasks whose attestation it may change."""
        ns, name = _key(pod)
        before = self.pods.get(ns, {}).get(name)
        after: dict[str, Any] | None
        if event_type == "DELETED":
            self.drop_pod(ns, name)
            after = None
        else:
            after = self.put_pod(pod)
        if before is not None and after is not None and _pod_facts(before) == _pod_facts(after):
            return []  # nothing attestation reads has changed
        sa = ((after or before or {}).get("spec") or {}).get("serviceAccountName")
        return self.tasks_for_pod(ns, name, sa)

    def on_policy(self, event_type: str | None, policy: Mapping[str, Any]) -> list[Key]:
        """Apply a policy event; the live tasks of the service accounts it names (before or
        after the change)."""
        ns, name = _key(policy)
        old = self.policies.get(ns, {}).get(name)
        if event_type == "DELETED":
            self.drop_policy(ns, name)
        else:
            if old is not None and old.get("spec") == dict(policy.get("spec") or {}):
                return []
            self.put_policy(policy)
        accounts: set[str] = set()
        for pol in (old, policy):
            if pol:
                accounts |= set(
                    ((pol.get("spec") or {}).get("subjects") or {}).get("serviceAccounts") or []
                )
        return self.tasks_for_accounts(ns, accounts)

    def on_approval(self, event_type: str | None, approval: Mapping[str, Any]) -> list[Key]:
        """Apply an approval event; the task it is for."""
        ns, name = _key(approval)
        if event_type == "DELETED":
            self.drop_approval(ns, name)
        else:
            self.put_approval(approval)
        task = (approval.get("spec") or {}).get("taskName")
        return [(ns, task)] if task else []

    # ------------------------------------------------------------------ tasks

    def put_task(self, key: Key, ref: TaskRef) -> None:
        self.tasks[key] = ref
        metrics.live_tasks.set(len(self.tasks))

    def drop_task(self, key: Key) -> TaskRef | None:
        ref = self.tasks.pop(key, None)
        metrics.live_tasks.set(len(self.tasks))
        return ref

    def tasks_for_pod(
        self, namespace: str, pod_name: str, service_account: str | None
    ) -> list[Key]:
        """Live tasks whose attestation could change with this pod."""
        return [
            k
            for k, t in self.tasks.items()
            if k[0] == namespace
            and (
                t.pod_name == pod_name
                or (t.pod_name is None and t.service_account == service_account)
            )
        ]

    def tasks_for_accounts(self, namespace: str, accounts: set[str]) -> list[Key]:
        return [
            k for k, t in self.tasks.items() if k[0] == namespace and t.service_account in accounts
        ]

    def children_of(self, namespace: str, parent: str) -> list[Key]:
        return [
            k for k, t in self.tasks.items() if k[0] == namespace and t.delegated_from == parent
        ]
