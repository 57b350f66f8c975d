"""Step-up approvals: is a task approved, denied, or still waiting? Pure; no API, no clock.

Called by the reconciler for tasks whose matching rule says `approval: required`, and by the
admission service for separation of duties. An AgentApproval counts only when admission stamped
its approver (annotation `taskwarden.dev/approver`, never client-set), the approver is listed in
the policy's `approvers` and is not the task's requester, its specHash equals the task's current
spec hash, and it is younger than the policy's approvalTTL. The newest valid one wins.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from taskwarden import durations, policy, timeutil

APPROVER_ANNOTATION = "taskwarden.dev/approver"
DEFAULT_APPROVAL_TTL = 15 * 60.0


def parse_principal(raw: str | None) -> tuple[str, tuple[str, ...]]:
    """(username, groups) from a stamped annotation: JSON {username, groups, ...}."""
    if not raw:
        return "", ()
    try:
        data = json.loads(raw)
    except ValueError:
        return "", ()
    if not isinstance(data, Mapping):
        return "", ()
    groups = data.get("groups") or []
    return str(data.get("username") or ""), tuple(str(g) for g in groups if isinstance(g, str))


def requester_username(raw: str | None) -> str:
    return parse_principal(raw)[0]


@dataclass(frozen=True)
class ApprovalState:
    approved: bool
    denied: bool
    reason: str
    message: str
    approver: str = ""
    approval: str = ""
    expires_at: float | None = None


def approval_ttl(pol: Mapping[str, Any] | None) -> float:
    raw = ((pol or {}).get("spec") or {}).get("approvalTTL")
    if not raw:
        return DEFAULT_APPROVAL_TTL
    try:
        return durations.parse_duration(str(raw))
    except ValueError:
        return DEFAULT_APPROVAL_TTL


def judge(
    approval: Mapping[str, Any],
    *,
    spec_hash: str,
    requester: str,
    pol: Mapping[str, Any] | None,
    now: float,
) -> tuple[bool, str]:
    """Does this one approval count? (valid, reason sentence)."""
    md = approval.get("metadata") or {}
    spec = approval.get("spec") or {}
    username, groups = parse_principal((md.get("annotations") or {}).get(APPROVER_ANNOTATION))
    if not username:
        return False, "the approver was not stamped by admission"
    if spec.get("specHash") != spec_hash:
        return False, "spec.specHash does not match the task's current spec"
    if username == requester:
        return False, f"{username} requested the task and cannot approve it"
    if pol is None or not policy.approver_allowed(pol, username, groups):
        return False, f"{username} is not listed in the policy's spec.approvers"
    created = md.get("creationTimestamp")
    if created and now >= timeutil.parse(created) + approval_ttl(pol):
        return False, "the approval expired (policy spec.approvalTTL)"
    return True, f"{spec.get('decision', 'approve')}d by {username}"


def state(
    *,
    task_name: str,
    spec_hash: str,
    requester: str,
    policy: Mapping[str, Any] | None,
    approvals: Iterable[Mapping[str, Any]],
    now: float,
) -> ApprovalState:
    ordered = sorted(
        approvals,
        key=lambda a: (a.get("metadata") or {}).get("creationTimestamp") or "",
        reverse=True,
    )
    for a in ordered:
        ok, _why = judge(a, spec_hash=spec_hash, requester=requester, pol=policy, now=now)
        if not ok:
            continue
        md = a.get("metadata") or {}
        approver = parse_principal((md.get("annotations") or {}).get(APPROVER_ANNOTATION))[0]
        expires = None
        if md.get("creationTimestamp"):
            expires = timeutil.parse(md["creationTimestamp"]) + approval_ttl(policy)
        if (a.get("spec") or {}).get("decision") == "deny":
            return ApprovalState(
                False,
                True,
                "ApprovalDenied",
                f"task {task_name} was denied by {approver}: "
                f"{(a.get('spec') or {}).get('reason', '')}".strip(),
                approver,
                md.get("name", ""),
                expires,
            )
        return ApprovalState(
            True,
            False,
            "Approved",
            f"task {task_name} approved by {approver}",
            approver,
            md.get("name", ""),
            expires,
        )
    return ApprovalState(
        False,
        False,
        "ApprovalRequired",
        f"task {task_name} needs an AgentApproval for specHash {spec_hash} from an approver "
        "listed in the policy",
    )
