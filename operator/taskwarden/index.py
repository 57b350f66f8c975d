"""In-memory indexes of what the reconciler reads on every decision: pods, policies, approvals,
live tasks and delivered credential Secrets.

Filled from one LIST at start-up, then kept current by watch events (handlers.py) and by the
operator's own writes. Kept compact on purpose: a pod is a small dict of the facts attestation
needs, a task is a few strings, a Secret is its jti — never its token — so 10,000 live tasks
cost little memory. No Kubernetes client here; callers pass plain dicts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
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


@dataclass
class TaskRef:
    """What the indexes remember of a live task, to find the tasks a pod or policy affects."""

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

    def pods_in(self, namespace: str) -> Iterable[dict[str, Any]]:
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
