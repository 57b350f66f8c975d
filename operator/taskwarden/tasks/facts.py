"""What one reconcile of an AgentTask knows (`Facts`) and what the checks conclude (`Verdict`).

`Facts` is filled by tasks/gather.py, the only place a decision reads the API or the indexes;
tasks/checks.py reads it and returns a `Verdict`; tasks/transitions.py and the actors act on
that. Pure: no client, no clock. The few derived facts (policy decision, attestation, expiry)
are computed once, on first use, from the gathered ones.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from taskwarden import approvals, bodies, identity, lifecycle, names, policy, timeutil

Key = tuple[str, str]
"""(namespace, name) of a task."""
Body = Mapping[str, Any]


@dataclass(frozen=True)
class Verdict:
    """Outcome of the checks for a live task: what phase it should be in, and why."""

    phase: (
        str  # Active | Pending | AwaitingApproval | Denied | Revoked | Failed | Completed | Expired
    )
    reason: str
    message: str
    decision: policy.Decision | None = None
    attestation: identity.Attestation | None = None
    approval: approvals.ApprovalState | None = None
    parent_expires_at: float | None = None
    act: dict[str, Any] | None = None
    final: bool = False
    """The task ends in `phase` whatever phase it is in now (bad spec, completed, revoked on
    request, expired); otherwise transitions.py picks the phase from the current one."""
    at: float | None = None
    """When the cause happened, if not now (an expiry): revocation lag is measured from it."""


def meta(body: Body) -> tuple[str, str, str]:
    """(namespace, name, uid) of a task body."""
    md = body["metadata"]
    return md["namespace"], md["name"], md.get("uid", "")


def ending(event_type: str, body: Body) -> bool:
    """Does this watch event end a live task (deleted, being deleted, completed, or revoked on
    request)? Its credential must go now, so the event never waits behind issuances. A task
    already in a terminal phase holds nothing (deleting 10,000 completed tasks is not urgent)."""
    if ((body.get("status") or {}).get("phase")) in names.TERMINAL:
        return False
    if event_type == "DELETED":
        return True
    md = body.get("metadata") or {}
    return bool(
        (body.get("spec") or {}).get("completed") is True
        or md.get("deletionTimestamp")
        or (md.get("annotations") or {}).get(names.REVOKE_ANNOTATION)
    )


def requester(body: Body) -> str:
    """The username admission stamped on the task as its creator ("" when none)."""
    ann = (body.get("metadata") or {}).get("annotations") or {}
    return str(approvals.requester_username(ann.get(names.REQUESTER_ANNOTATION, "")))


def parse_request(body: Body) -> tuple[policy.TaskRequest | None, str]:
    """The task's parsed spec, or None and why it is invalid."""
    ns, name, _ = meta(body)
    try:
        return policy.task_request(ns, name, body.get("spec") or {}), ""
    except ValueError as e:
        return None, str(e)


def task_expires_at(body: Body, req: policy.TaskRequest) -> float:
    """The task's expiry: as recorded in status, else creation + ttl."""
    st = body.get("status") or {}
    if st.get("expiresAt"):
        return timeutil.parse(st["expiresAt"])
    created = timeutil.parse(body["metadata"]["creationTimestamp"])
    return lifecycle.expiry(created, req.ttl)


@dataclass(frozen=True)
class Facts:
    """Everything the checks read for one task, gathered before deciding."""

    body: Body
    trust_domain: str
    request: policy.TaskRequest | None
    """The parsed spec; None when it is invalid (then `spec_error` says why)."""
    spec_error: str = ""
    policies: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """The policies of the task's namespace, by name (like `pods`, a live view of the index)."""
    pods: Collection[Mapping[str, Any]] = ()
    """The pods of the task's namespace (a live view of the index: read it before awaiting)."""
    approvals: tuple[Mapping[str, Any], ...] = ()
    parents: tuple[Body, ...] = ()
    """The delegation chain, nearest parent first, as read (stops at the first missing one)."""
    missing_parent: str | None = None
    """Name of the first parent in the chain that does not exist, if any."""

    @property
    def key(self) -> Key:
        return meta(self.body)[:2]

    @property
    def spec(self) -> bodies.TaskSpec:
        return cast(bodies.TaskSpec, self.body.get("spec") or {})

    @property
    def status(self) -> bodies.TaskStatus:
        return cast(bodies.TaskStatus, self.body.get("status") or {})

    @property
    def phase(self) -> str | None:
        phase = self.status.get("phase")
        return str(phase) if phase else None

    @property
    def req(self) -> policy.TaskRequest:
        """The parsed spec; only for checks that run after the spec was found valid."""
        assert self.request is not None, self.spec_error
        return self.request

    @functools.cached_property
    def expires_at(self) -> float:
        return task_expires_at(self.body, self.req)

    @functools.cached_property
    def decision(self) -> policy.Decision:
        return policy.evaluate(self.req, list(self.policies.values()))

    @functools.cached_property
    def attestation(self) -> identity.Attestation:
        agent = self.spec.get("agent") or {}
        recorded = (
            (self.status.get("identity") or {}).get("podUID") if agent.get("podName") else None
        )
        return identity.attest(
            trust_domain=self.trust_domain,
            namespace=self.key[0],
            service_account=agent.get("serviceAccountName", ""),
            pod_name=agent.get("podName"),
            recorded_uid=recorded,
            pods=self.pods,
        )
