"""Step-up approvals: is a task approved, denied, or still waiting? Pure; no API, no clock.

Called by the reconciler for tasks whose matching rule says `approval: required`, by the
admission review of AgentApprovals (which policy applies, which spec hash binds) and by the
AgentApproval status controller (`status`). An AgentApproval counts only when admission stamped
its approver (annotation `taskwarden.dev/approver`, never client-set), its spec.taskUID is the
task's UID (a task deleted and re-created under the same name and spec inherits nothing), its
specHash equals the task's current spec hash, the approver is neither the task's requester nor
its agent's ServiceAccount (`separation`), is listed in the policy's `approvers` (a
ServiceAccount only by its own name, never through a group), and it is younger than the
policy's approvalTTL. The newest valid one wins.

`judge` answers with a `Reason` code plus the data its sentence needs; `sentence` is the one
place that turns a code into the words users read in an AgentApproval's status.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from taskwarden import durations, names, policy, timeutil

DEFAULT_APPROVAL_TTL = 15 * 60.0

APPROVED = "Approved"
APPROVAL_DENIED = "ApprovalDenied"
APPROVAL_REQUIRED = "ApprovalRequired"
"""Reasons of `ApprovalState`: what the task controller writes to the task's status."""


class Reason(enum.StrEnum):
    """Why one AgentApproval counts or not: the code that leads its status.reason."""

    VALID = "Valid"
    NOT_STAMPED = "NotStamped"
    SPEC_HASH_MISMATCH = "SpecHashMismatch"
    SELF_APPROVAL = "SelfApproval"
    AGENT_APPROVAL = "AgentApproval"
    """The approver is the task's agent (its ServiceAccount)."""
    TASK_UID_MISMATCH = "TaskUIDMismatch"
    """spec.taskUID names another task (an earlier one of the same name) or none."""
    NOT_AN_APPROVER = "NotAnApprover"
    EXPIRED = "Expired"
    TASK_NOT_FOUND = "TaskNotFound"
    INVALID = "Invalid"
    """The approval could not be judged at all (a bug or a body no watch delivers)."""


@dataclass(frozen=True)
class Judgement:
    """The verdict on one AgentApproval: a code plus what its sentence names."""

    reason: Reason
    approver: str = ""
    decision: str = "approve"
    detail: str = ""
    """Only for INVALID: the exception type that stopped the judgement."""

    @property
    def valid(self) -> bool:
        return self.reason is Reason.VALID

    @property
    def message(self) -> str:
        return sentence(self)


def sentence(j: Judgement) -> str:
    """The human sentence for a judgement; the one place these words are written."""
    match j.reason:
        case Reason.VALID:
            return f"{j.decision}d by {j.approver}"
        case Reason.NOT_STAMPED:
            return "the approver was not stamped by admission"
        case Reason.SPEC_HASH_MISMATCH:
            return "spec.specHash does not match the task's current spec"
        case Reason.SELF_APPROVAL:
            return f"{j.approver} requested the task and cannot approve it"
        case Reason.AGENT_APPROVAL:
            return f"{j.approver} is the task's agent and cannot approve its own access"
        case Reason.TASK_UID_MISMATCH:
            return "spec.taskUID is not the UID of this task (an approval binds to one task)"
        case Reason.NOT_AN_APPROVER:
            return f"{j.approver} is not listed in the policy's spec.approvers"
        case Reason.EXPIRED:
            return "the approval expired (policy spec.approvalTTL)"
        case Reason.TASK_NOT_FOUND:
            return "the AgentTask does not exist"
        case Reason.INVALID:
            return f"the approval could not be judged ({j.detail})"


def status_reason(j: Judgement) -> str:
    """status.reason of an AgentApproval: the code, then the sentence."""
    return f"{j.reason.value}: {sentence(j)}"


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


def agent_username(namespace: str, service_account: str) -> str:
    """The username of a task's agent: its ServiceAccount."""
    return f"system:serviceaccount:{namespace}:{service_account}"


def separation(approver: str, *, requester: str, agent: str) -> Reason | None:
    """Separation of duties on stamped identities: the approver is neither the requester nor the
    agent's ServiceAccount (None: no conflict). That a ServiceAccount approves only when named
    explicitly in `approvers` is policy.approver_allowed's rule."""
    if approver == requester:
        return Reason.SELF_APPROVAL
    if approver == agent:
        return Reason.AGENT_APPROVAL
    return None


def judge(
    approval: Mapping[str, Any],
    *,
    task_uid: str,
    spec_hash: str,
    requester: str,
    agent: str,
    pol: Mapping[str, Any] | None,
    now: float,
) -> Judgement:
    """Does this one approval count? The first failing rule gives the code."""
    md = approval.get("metadata") or {}
    spec = approval.get("spec") or {}
    username, groups = parse_principal((md.get("annotations") or {}).get(names.APPROVER_ANNOTATION))
    if not username:
        return Judgement(Reason.NOT_STAMPED)
    if not task_uid or spec.get("taskUID") != task_uid:
        return Judgement(Reason.TASK_UID_MISMATCH, username)
    if spec.get("specHash") != spec_hash:
        return Judgement(Reason.SPEC_HASH_MISMATCH, username)
    conflict = separation(username, requester=requester, agent=agent)
    if conflict is not None:
        return Judgement(conflict, username)
    if pol is None or not policy.approver_allowed(pol, username, groups):
        return Judgement(Reason.NOT_AN_APPROVER, username)
    created = md.get("creationTimestamp")
    if created and now >= timeutil.parse(created) + approval_ttl(pol):
        return Judgement(Reason.EXPIRED, username)
    return Judgement(Reason.VALID, username, f"{spec.get('decision', 'approve')}")


def state(
    *,
    task_name: str,
    task_uid: str,
    spec_hash: str,
    requester: str,
    agent: str,
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
        verdict = judge(
            a,
            task_uid=task_uid,
            spec_hash=spec_hash,
            requester=requester,
            agent=agent,
            pol=policy,
            now=now,
        )
        if not verdict.valid:
            continue
        md = a.get("metadata") or {}
        approver = verdict.approver
        expires = None
        if md.get("creationTimestamp"):
            expires = timeutil.parse(md["creationTimestamp"]) + approval_ttl(policy)
        if (a.get("spec") or {}).get("decision") == "deny":
            return ApprovalState(
                False,
                True,
                APPROVAL_DENIED,
                f"task {task_name} was denied by {approver}: "
                f"{(a.get('spec') or {}).get('reason', '')}".strip(),
                approver,
                md.get("name", ""),
                expires,
            )
        return ApprovalState(
            True,
            False,
            APPROVED,
            f"task {task_name} approved by {approver}",
            approver,
            md.get("name", ""),
            expires,
        )
    return ApprovalState(
        False,
        False,
        APPROVAL_REQUIRED,
        f"task {task_name} needs an AgentApproval for specHash {spec_hash} from an approver "
        "listed in the policy",
    )


# --- which policy and which spec an approval binds to --------------------------------------------


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def current_spec_hash(task: Mapping[str, Any]) -> str:
    """status.specHash, or what the operator will write there (the spec is immutable)."""
    recorded = _map(task.get("status")).get("specHash")
    if isinstance(recorded, str) and recorded:
        return recorded
    return policy.spec_hash(_map(task.get("spec")))


def task_policy(
    namespace: str, task: Mapping[str, Any], policies: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """The policy whose approvers and approvalTTL apply to a task: the one the reconciler uses
    (policy.evaluate over the namespace's policies), or None when none allows the task."""
    name = _str(_map(task.get("metadata")).get("name"))
    try:
        req = policy.task_request(namespace, name, _map(task.get("spec")))
    except ValueError:
        return None
    decision = policy.evaluate(req, policies)
    if not decision.allowed:
        return None
    for pol in policies:
        if _map(pol.get("metadata")).get("name") == decision.policy:
            return pol
    return None


def task_agent(namespace: str, task: Mapping[str, Any]) -> str:
    """The username of the task's agent ServiceAccount ('' when the spec names none)."""
    sa = _str(_map(_map(task.get("spec")).get("agent")).get("serviceAccountName"))
    return agent_username(namespace, sa) if sa else ""


def task_requester(task: Mapping[str, Any]) -> str:
    """The username admission stamped on a task as its requester ('' when none)."""
    annotations = _map(_map(task.get("metadata")).get("annotations"))
    raw = annotations.get(names.REQUESTER_ANNOTATION)
    return requester_username(raw if isinstance(raw, str) else None)


# --- AgentApproval status ------------------------------------------------------------------------


def status(
    approval: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    policies: Sequence[Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    """AgentApproval status: {approver, approvedAt, expiresAt, valid, reason}.

    Valid exactly when `judge` (what the reconciler applies) counts it; `reason` is the code and
    the sentence, e.g. "Expired: the approval expired (...)". Never raises.
    """
    try:
        return _status(approval, task, policies, now)
    except Exception as e:
        return {
            "valid": False,
            "reason": status_reason(Judgement(Reason.INVALID, detail=type(e).__name__)),
        }


def _status(
    approval: Mapping[str, Any],
    task: Mapping[str, Any] | None,
    policies: Sequence[Mapping[str, Any]],
    now: float,
) -> dict[str, Any]:
    md = _map(approval.get("metadata"))
    username, _ = parse_principal(_str(_map(md.get("annotations")).get(names.APPROVER_ANNOTATION)))
    out: dict[str, Any] = {"approver": f"user:{username}" if username else ""}
    created = _str(md.get("creationTimestamp"))
    if created:
        out["approvedAt"] = created
    if task is None:
        return {**out, "valid": False, "reason": status_reason(Judgement(Reason.TASK_NOT_FOUND))}
    ns = _str(md.get("namespace")) or _str(_map(task.get("metadata")).get("namespace"))
    pol = task_policy(ns, task, policies)
    if created:
        out["expiresAt"] = timeutil.rfc3339(timeutil.parse(created) + approval_ttl(pol))
    verdict = judge(
        approval,
        task_uid=_str(_map(task.get("metadata")).get("uid")),
        spec_hash=current_spec_hash(task),
        requester=task_requester(task),
        agent=task_agent(ns, task),
        pol=pol,
        now=now,
    )
    return {**out, "valid": verdict.valid, "reason": status_reason(verdict)}
