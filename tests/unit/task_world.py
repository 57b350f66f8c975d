"""Builders of AgentTask facts for the unit tests of the task controller (no cluster)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from taskwarden import names, policy, timeutil
from taskwarden.tasks.facts import Facts, parse_request

NS = "agents"
SA = "research-agent"
AUD = "https://api.github.com"
TRUST_DOMAIN = "cluster.local"
NOW = 1_800_000_000.0
CREATED = timeutil.rfc3339(NOW - 600)  # ttl 30m: expires at NOW + 1200


def policy_body(
    name: str = "research-agents",
    *,
    approval: bool = False,
    delegation: Mapping[str, Any] | None = None,
    approvers: Sequence[str] = ("alice",),
) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "tool": "github",
        "actions": ["read", "comment"],
        "resources": ["repo:acme/*"],
        "audiences": [AUD],
    }
    if approval:
        rule["approval"] = "required"
    spec: dict[str, Any] = {"subjects": {"serviceAccounts": [SA]}, "rules": [rule]}
    if approval:
        spec["approvers"] = [f"user:{a}" for a in approvers]
    if delegation is not None:
        spec["delegation"] = dict(delegation)
    return {"metadata": {"name": name, "namespace": NS}, "spec": spec}


def task(
    name: str = "t",
    *,
    phase: str | None = None,
    status: Mapping[str, Any] | None = None,
    annotations: Mapping[str, str] | None = None,
    requester: str = "bob",
    **spec: Any,
) -> dict[str, Any]:
    body_spec: dict[str, Any] = {
        "agent": {"serviceAccountName": SA},
        "intent": "triage issue 4711",
        "scopes": [{"tool": "github", "actions": ["read"], "resources": ["repo:acme/widgets"]}],
        "audiences": [AUD],
        "dataClass": "internal",
        "ttl": "30m",
    }
    body_spec.update(spec)
    st: dict[str, Any] = dict(status or {})
    if phase:
        st["phase"] = phase
    ann = {names.REQUESTER_ANNOTATION: json.dumps({"username": requester})}
    ann.update(annotations or {})
    return {
        "apiVersion": names.API_VERSION,
        "kind": "AgentTask",
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "resourceVersion": "7",
            "generation": 1,
            "creationTimestamp": CREATED,
            "annotations": ann,
        },
        "spec": body_spec,
        "status": st,
    }


def pod(name: str = "agent-0", *, phase: str = "Running", sa: str = SA) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "uid": f"uid-{name}",
            "creationTimestamp": "2027-01-01T00:00:00Z",
        },
        "spec": {"serviceAccountName": sa, "nodeName": "node-1"},
        "status": {"phase": phase},
    }


def approval(
    task_body: Mapping[str, Any],
    *,
    approver: str = "alice",
    decision: str = "approve",
    created: float = NOW - 60,
    name: str = "ok",
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "creationTimestamp": timeutil.rfc3339(created),
            "annotations": {names.APPROVER_ANNOTATION: json.dumps({"username": approver})},
        },
        "spec": {
            "taskName": task_body["metadata"]["name"],
            "taskUID": task_body["metadata"]["uid"],
            "specHash": policy.spec_hash(task_body["spec"]),
            "decision": decision,
            "reason": "looked fine" if decision == "approve" else "too broad",
        },
    }


def facts(
    body: Mapping[str, Any],
    *,
    policies: Sequence[Mapping[str, Any]] = (),
    pods: Sequence[Mapping[str, Any]] = (),
    approvals: Sequence[Mapping[str, Any]] = (),
    parents: Sequence[Mapping[str, Any]] = (),
    missing_parent: str | None = None,
) -> Facts:
    """What gather would have read, given these objects."""
    req, error = parse_request(body)
    return Facts(
        body=body,
        trust_domain=TRUST_DOMAIN,
        request=req,
        spec_error=error,
        policies={p["metadata"]["name"]: p for p in policies},
        pods=tuple(pods),
        approvals=tuple(approvals),
        parents=tuple(parents),
        missing_parent=missing_parent,
    )


def active_parent(name: str = "parent", **spec: Any) -> dict[str, Any]:
    """An Active parent task issued under policy research-agents."""
    return task(
        name,
        phase="Active",
        status={
            "expiresAt": timeutil.rfc3339(NOW + 900),
            "decision": {"policy": "research-agents"},
            "identity": {"spiffeID": f"spiffe://{TRUST_DOMAIN}/ns/{NS}/sa/{SA}"},
        },
        **spec,
    )
