"""The task controller's checks, in order: the first verdict wins, and each reason code the
chain can return comes from the check named for it. Pure: facts in, verdict out, no cluster."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from taskwarden import names, timeutil
from taskwarden.tasks import checks
from taskwarden.tasks.facts import Facts
from tests.unit import task_world as w

POL = w.policy_body()
RUNNING = w.pod()
DELEGATING = w.policy_body(delegation={"allowed": True, "maxDepth": 3})


def child(**kw: Any) -> dict[str, Any]:
    return w.task("child", delegatedFrom="parent", **kw)


def chain(n: int, goes_on: bool = False) -> list[dict[str, Any]]:
    """n Active parents, nearest first, each delegated from the next; with `goes_on` the last
    one names a parent too (the chain continues past what was read)."""
    parents = []
    for i in range(n):
        extra = {"delegatedFrom": f"p{i + 1}"} if goes_on or i + 1 < n else {}
        parents.append(w.active_parent("parent" if i == 0 else f"p{i}", **extra))
    return parents


def approval_facts(*approvals: dict[str, Any], phase: str | None = None) -> Facts:
    body = w.task(phase=phase)
    return w.facts(
        body,
        policies=[w.policy_body(approval=True)],
        pods=[RUNNING],
        approvals=[a if a.get("spec") else w.approval(body, **a["kw"]) for a in approvals],
    )


CASES: list[tuple[str, Callable[[], Facts], str, str, str]] = [
    # (id, facts, check that answers, phase, reason)
    (
        "invalid spec fails the task",
        lambda: w.facts(w.task(ttl="soon"), policies=[POL], pods=[RUNNING]),
        "spec_valid",
        "Failed",
        "InvalidSpec",
    ),
    (
        "an invalid spec beats completion",
        lambda: w.facts(w.task(ttl="soon", completed=True)),
        "spec_valid",
        "Failed",
        "InvalidSpec",
    ),
    (
        "completed",
        lambda: w.facts(w.task(completed=True, phase="Active"), policies=[POL], pods=[RUNNING]),
        "completed",
        "Completed",
        "Completed",
    ),
    (
        "completion beats a revoke request",
        lambda: w.facts(
            w.task(completed=True, annotations={names.REVOKE_ANNOTATION: "leak"}),
        ),
        "completed",
        "Completed",
        "Completed",
    ),
    (
        "revoke annotation",
        lambda: w.facts(
            w.task(annotations={names.REVOKE_ANNOTATION: "leak"}), policies=[POL], pods=[RUNNING]
        ),
        "revoke_requested",
        "Revoked",
        "RevokedByUser",
    ),
    (
        "a revoke request beats expiry",
        lambda: w.facts(
            w.task(annotations={names.REVOKE_ANNOTATION: "x"}, ttl="1m"), policies=[POL]
        ),
        "revoke_requested",
        "Revoked",
        "RevokedByUser",
    ),
    (
        "expired from creation + ttl",
        lambda: w.facts(w.task(ttl="1m"), policies=[POL], pods=[RUNNING]),
        "expired",
        "Expired",
        "Expired",
    ),
    (
        "expiry beats policy",
        lambda: w.facts(w.task(ttl="1m")),
        "expired",
        "Expired",
        "Expired",
    ),
    (
        "no matching policy",
        lambda: w.facts(w.task(), pods=[RUNNING]),
        "policy_allows",
        "Denied",
        "NoMatchingPolicy",
    ),
    (
        "scope not covered",
        lambda: w.facts(
            w.task(scopes=[{"tool": "github", "actions": ["push"], "resources": ["repo:acme/x"]}]),
            policies=[POL],
            pods=[RUNNING],
        ),
        "policy_allows",
        "Denied",
        "ScopeNotCovered",
    ),
    (
        "policy no longer allows an Active task",
        lambda: w.facts(w.task(phase="Active"), pods=[RUNNING]),
        "policy_allows",
        "Denied",
        "PolicyChanged",
    ),
    (
        "policy beats identity",
        lambda: w.facts(w.task()),
        "policy_allows",
        "Denied",
        "NoMatchingPolicy",
    ),
    (
        "no pod yet: pending",
        lambda: w.facts(w.task(), policies=[POL]),
        "identity_attested",
        "Pending",
        "PodNotFound",
    ),
    (
        "named pod not running: pending",
        lambda: w.facts(
            w.task(agent={"serviceAccountName": w.SA, "podName": "agent-0"}),
            policies=[POL],
            pods=[w.pod(phase="Pending")],
        ),
        "identity_attested",
        "Pending",
        "PodNotRunning",
    ),
    (
        "named pod runs as another account",
        lambda: w.facts(
            w.task(agent={"serviceAccountName": w.SA, "podName": "agent-0"}),
            policies=[POL],
            pods=[w.pod(sa="other")],
        ),
        "identity_attested",
        "Pending",
        "ServiceAccountMismatch",
    ),
    (
        "pod gone under an Active task",
        lambda: w.facts(w.task(phase="Active"), policies=[POL]),
        "identity_attested",
        "Revoked",
        "PodGone",
    ),
    (
        "identity beats delegation",
        lambda: w.facts(child(), policies=[DELEGATING], missing_parent="parent"),
        "identity_attested",
        "Pending",
        "PodNotFound",
    ),
    (
        "parent missing",
        lambda: w.facts(child(), policies=[DELEGATING], pods=[RUNNING], missing_parent="parent"),
        "delegation_narrows",
        "Revoked",
        "ParentRevoked",
    ),
    (
        "parent terminal",
        lambda: w.facts(
            child(),
            policies=[DELEGATING],
            pods=[RUNNING],
            parents=[w.task("parent", phase="Completed")],
        ),
        "delegation_narrows",
        "Revoked",
        "ParentRevoked",
    ),
    (
        "parent not Active yet",
        lambda: w.facts(
            child(),
            policies=[DELEGATING],
            pods=[RUNNING],
            parents=[w.task("parent", phase="Pending")],
        ),
        "delegation_narrows",
        "Pending",
        "ParentNotActive",
    ),
    (
        "chain deeper than the controller follows",
        lambda: w.facts(
            child(),
            policies=[w.policy_body(delegation={"allowed": True, "maxDepth": 16})],
            pods=[RUNNING],
            parents=chain(checks.MAX_PARENTS, goes_on=True),
        ),
        "delegation_narrows",
        "Denied",
        "DelegationTooDeep",
    ),
    (
        "parent's policy does not allow delegation",
        lambda: w.facts(child(), policies=[POL], pods=[RUNNING], parents=[w.active_parent()]),
        "delegation_narrows",
        "Denied",
        "DelegationNotAllowed",
    ),
    (
        "child asks for more than its parent",
        lambda: w.facts(
            child(
                scopes=[{"tool": "github", "actions": ["comment"], "resources": ["repo:acme/w"]}]
            ),
            policies=[DELEGATING],
            pods=[RUNNING],
            parents=[w.active_parent()],
        ),
        "delegation_narrows",
        "Denied",
        "NotANarrowing",
    ),
    (
        "deeper than the parent's policy allows",
        lambda: w.facts(child(), policies=[DELEGATING], pods=[RUNNING], parents=chain(4)),
        "delegation_narrows",
        "Denied",
        "NotANarrowing",
    ),
    (
        "approval required and none given",
        lambda: approval_facts(),
        "approval_holds",
        "AwaitingApproval",
        "ApprovalRequired",
    ),
    (
        "the requester's own approval does not count",
        lambda: approval_facts({"kw": {"approver": "bob"}}),
        "approval_holds",
        "AwaitingApproval",
        "ApprovalRequired",
    ),
    (
        "approval expired",
        lambda: approval_facts({"kw": {"created": w.NOW - 7 * 86400}}),
        "approval_holds",
        "AwaitingApproval",
        "ApprovalRequired",
    ),
    (
        "denied by an approver",
        lambda: approval_facts({"kw": {"decision": "deny"}}),
        "approval_holds",
        "Denied",
        "ApprovalDenied",
    ),
    (
        "approved",
        lambda: approval_facts({"kw": {}}),
        "issuable",
        "Active",
        "Issued",
    ),
    (
        "every check passes",
        lambda: w.facts(w.task(), policies=[POL], pods=[RUNNING]),
        "issuable",
        "Active",
        "Issued",
    ),
    (
        "a narrowing child of an Active parent",
        lambda: w.facts(
            child(), policies=[DELEGATING], pods=[RUNNING], parents=[w.active_parent()]
        ),
        "issuable",
        "Active",
        "Issued",
    ),
]


@pytest.mark.parametrize(("facts", "check", "phase", "reason"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_first_verdict_of_the_chain(
    facts: Callable[[], Facts], check: str, phase: str, reason: str
) -> None:
    stopped_at, verdict = checks.run(facts(), w.NOW)
    assert (stopped_at, verdict.phase, verdict.reason) == (check, phase, reason)
    assert verdict.message


def test_every_check_is_exercised_by_the_table() -> None:
    answered = {c[2] for c in CASES}
    assert answered == {c.__name__ for c in checks.CHECKS} | {checks.ISSUABLE}


FINAL = {"spec_valid", "completed", "revoke_requested", "expired"}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_only_the_first_four_checks_end_a_task_whatever_its_phase(case: Any) -> None:
    _, facts, check, _, _ = case
    _, verdict = checks.run(facts(), w.NOW)
    assert verdict.final is (check in FINAL)


def test_expiry_is_measured_from_the_recorded_expiry_and_dated_there() -> None:
    at = w.NOW - 5
    body = w.task(phase="Active", status={"expiresAt": timeutil.rfc3339(at)})
    _, verdict = checks.run(w.facts(body, policies=[POL], pods=[RUNNING]), w.NOW)
    assert (verdict.phase, verdict.at) == ("Expired", at)
    assert verdict.message == f"the task expired at {timeutil.rfc3339(at)}"
    # One second earlier it was still live.
    _, verdict = checks.run(w.facts(body, policies=[POL], pods=[RUNNING]), at - 1)
    assert verdict.phase == "Active"


def test_revoke_reason_is_quoted_in_the_message() -> None:
    body = w.task(annotations={names.REVOKE_ANNOTATION: "token leaked"})
    _, verdict = checks.run(w.facts(body), w.NOW)
    assert verdict.message == "revoked on request: token leaked"


def test_an_issuable_verdict_carries_what_issuing_needs() -> None:
    body = child()
    facts = w.facts(body, policies=[DELEGATING], pods=[RUNNING], parents=[w.active_parent()])
    _, verdict = checks.run(facts, w.NOW)
    assert verdict.decision is not None and verdict.decision.policy == "research-agents"
    assert verdict.attestation is not None and verdict.attestation.pod_name == "agent-0"
    assert verdict.parent_expires_at == w.NOW + 900
    assert verdict.act is not None
    assert verdict.act["taskwarden.dev/task"]["name"] == "parent"


def test_an_approved_verdict_names_the_approver_and_when_the_approval_lapses() -> None:
    _, verdict = checks.run(approval_facts({"kw": {}}), w.NOW)
    assert verdict.approval is not None and verdict.approval.approver == "alice"
    assert verdict.approval.expires_at is not None and verdict.approval.expires_at > w.NOW


def test_delegation_verdicts_carry_no_decision_as_before() -> None:
    facts = w.facts(child(), policies=[DELEGATING], pods=[RUNNING], missing_parent="parent")
    _, verdict = checks.run(facts, w.NOW)
    assert verdict.decision is None and verdict.attestation is None
    assert verdict.message == "parent task parent is gone"


@pytest.mark.parametrize(
    ("stopped_at", "policy_ran", "identity_ran"),
    [
        ("expired", False, False),
        ("policy_allows", True, False),
        ("identity_attested", True, True),
        ("approval_holds", True, True),
        ("issuable", True, True),
    ],
)
def test_reached_tells_which_decisions_were_made(
    stopped_at: str, policy_ran: bool, identity_ran: bool
) -> None:
    assert checks.reached(stopped_at, checks.policy_allows) is policy_ran
    assert checks.reached(stopped_at, checks.identity_attested) is identity_ran


def test_checks_read_no_clock() -> None:
    """The same facts at two instants differ only where `now` is an input (expiry)."""
    f = w.facts(w.task(), policies=[POL], pods=[RUNNING])
    assert checks.run(f, w.NOW)[1].phase == "Active"
    assert checks.run(f, w.NOW + 1200)[1].phase == "Expired"
