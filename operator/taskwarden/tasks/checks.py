"""The chain of named checks that decides what a live AgentTask should be: first verdict wins.

Called by tasks/reconciler.py with the `Facts` that tasks/gather.py read. Each check is pure,
`(facts, now) -> Verdict | None`: None means "nothing to say, ask the next one". The order is
the policy: a bad spec beats completion, completion beats revocation on request, that beats
expiry, then policy, identity, delegation and approval. When every check passes, `issuable`
says Active. Like cert-manager's certificate policy chain, each check is small and named, and
its reason code goes to status, the Event and the audit line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from taskwarden import approvals, names, policy, timeutil
from taskwarden.policy import delegation as delegation_policy
from taskwarden.tasks.facts import Facts, Verdict, requester

Check = Callable[[Facts, float], Verdict | None]

MAX_PARENTS = delegation_policy.MAX_CHAIN
"""Tasks gather reads walking up from a delegated task: one more than the deepest delegation
any policy may allow (the CRD's maxDepth bound), the same bound admission reads."""


def spec_valid(facts: Facts, now: float) -> Verdict | None:
    if facts.request is None:
        return Verdict("Failed", "InvalidSpec", facts.spec_error, final=True)
    return None


def completed(facts: Facts, now: float) -> Verdict | None:
    if facts.spec.get("completed"):
        return Verdict("Completed", "Completed", "the task was marked completed", final=True)
    return None


def revoke_requested(facts: Facts, now: float) -> Verdict | None:
    reason = ((facts.body.get("metadata") or {}).get("annotations") or {}).get(
        names.REVOKE_ANNOTATION
    )
    if reason:
        return Verdict("Revoked", "RevokedByUser", f"revoked on request: {reason}", final=True)
    return None


def expired(facts: Facts, now: float) -> Verdict | None:
    at = facts.expires_at
    if now >= at:
        message = f"the task expired at {timeutil.rfc3339(at)}"
        return Verdict("Expired", "Expired", message, final=True, at=at)
    return None


def policy_allows(facts: Facts, now: float) -> Verdict | None:
    decision = facts.decision
    if decision.allowed:
        return None
    reason = "PolicyChanged" if facts.phase == "Active" else decision.reason
    return Verdict("Denied", reason, decision.message, decision=decision)


def identity_attested(facts: Facts, now: float) -> Verdict | None:
    att = facts.attestation
    if att.ok:
        return None
    if facts.phase == "Active":
        return Verdict("Revoked", "PodGone", att.message, facts.decision, att)
    return Verdict("Pending", att.reason, att.message, facts.decision, att)


def delegation(facts: Facts) -> Verdict | tuple[float | None, dict[str, Any] | None]:
    """A child must narrow an Active parent: a verdict against it, or (parent expiry, act chain).

    The one delegation decision, `policy.delegation.decide`, which admission calls too, made
    from the gathered parent chain alone."""
    chain: dict[str, Mapping[str, Any] | None] = {p["metadata"]["name"]: p for p in facts.parents}
    if facts.missing_parent is not None:
        chain[facts.missing_parent] = None
    result = delegation_policy.decide(
        facts.req, chain, list(facts.policies.values()), trust_domain=facts.trust_domain
    )
    verdict = delegation_policy.task_verdict(result)
    if verdict is not None:
        return Verdict(*verdict)
    return result.parent_expires_at, result.act


def delegation_narrows(facts: Facts, now: float) -> Verdict | None:
    if not facts.req.delegated_from:
        return None
    outcome = delegation(facts)
    return outcome if isinstance(outcome, Verdict) else None


def approval(facts: Facts, now: float) -> approvals.ApprovalState | None:
    """The approval state, for tasks whose policy rule requires one."""
    decision = facts.decision
    if not decision.needs_approval:
        return None
    return approvals.state(
        task_name=facts.key[1],
        task_uid=str(facts.body["metadata"].get("uid") or ""),
        spec_hash=policy.spec_hash(facts.spec),
        requester=requester(facts.body),
        agent=approvals.agent_username(facts.key[0], facts.req.service_account),
        policy=facts.policies.get(decision.policy or ""),
        approvals=facts.approvals,
        now=now,
    )


def approval_holds(facts: Facts, now: float) -> Verdict | None:
    state = approval(facts, now)
    if state is None or state.approved:
        return None
    decision, att = facts.decision, facts.attestation
    if state.denied:
        return Verdict("Denied", "ApprovalDenied", state.message, decision, att, state)
    return Verdict("AwaitingApproval", state.reason, state.message, decision, att, state)


def issuable(facts: Facts, now: float) -> Verdict:
    """Every check passed: the task should hold a credential."""
    parent_expires_at, act = None, None
    if facts.req.delegated_from:
        outcome = delegation(facts)
        assert not isinstance(outcome, Verdict), "issuable runs after delegation_narrows"
        parent_expires_at, act = outcome
    decision = facts.decision
    return Verdict(
        "Active",
        "Issued",
        decision.message,
        decision,
        facts.attestation,
        approval(facts, now),
        parent_expires_at,
        act,
    )


CHECKS: tuple[Check, ...] = (
    spec_valid,
    completed,
    revoke_requested,
    expired,
    policy_allows,
    identity_attested,
    delegation_narrows,
    approval_holds,
)
ISSUABLE = "issuable"


def run(facts: Facts, now: float) -> tuple[str, Verdict]:
    """The first verdict of the chain and the name of the check that gave it."""
    for check in CHECKS:
        verdict = check(facts, now)
        if verdict is not None:
            return check.__name__, verdict
    return ISSUABLE, issuable(facts, now)


def reached(stopped_at: str, check: Check) -> bool:
    """Whether a chain that stopped at `stopped_at` ran `check` (for the decision metrics)."""
    order = [c.__name__ for c in CHECKS] + [ISSUABLE]
    return order.index(stopped_at) >= order.index(check.__name__)
