"""Which AgentApprovals count: stamped approver, same task UID and spec, neither the requester nor
the agent, listed (a ServiceAccount only by name), in time."""

from __future__ import annotations

import json

import pytest

from taskwarden import approvals, names

HASH = "sha256:" + "a" * 64
POLICY = {
    "metadata": {"name": "p"},
    "spec": {"approvers": ["user:alice", "group:sre"], "approvalTTL": "10m"},
}
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z
UID = "uid-of-t"
AGENT = "system:serviceaccount:ns:agent"


def approval(
    user: str | None,
    *,
    decision: str = "approve",
    spec_hash: str = HASH,
    created: str = "2027-01-15T08:00:00Z",
    groups: tuple[str, ...] = (),
    task_uid: str | None = UID,
) -> dict:
    ann = {}
    if user is not None:
        ann[names.APPROVER_ANNOTATION] = json.dumps({"username": user, "groups": list(groups)})
    return {
        "metadata": {
            "name": f"a-{user}-{decision}",
            "annotations": ann,
            "creationTimestamp": created,
        },
        "spec": {
            "taskName": "t",
            "specHash": spec_hash,
            "decision": decision,
            **({"taskUID": task_uid} if task_uid is not None else {}),
        },
    }


def state(
    *apps: dict, requester: str = AGENT, now: float = T0 + 1, policy: dict | None = None
) -> approvals.ApprovalState:
    return approvals.state(
        task_name="t",
        task_uid=UID,
        spec_hash=HASH,
        requester=requester,
        agent=AGENT,
        policy=policy or POLICY,
        approvals=apps,
        now=now,
    )


def test_no_approval_means_waiting() -> None:
    s = state()
    assert not s.approved and not s.denied and s.reason == "ApprovalRequired"


def test_listed_approver_approves() -> None:
    s = state(approval("alice"))
    assert s.approved and s.approver == "alice" and s.expires_at == T0 + 600


def test_group_member_approves() -> None:
    assert state(approval("bob", groups=("sre",))).approved


def test_unlisted_unstamped_stale_and_self_approvals_do_not_count() -> None:
    assert not state(approval("mallory")).approved
    assert not state(approval(None)).approved
    assert not state(approval("alice", spec_hash="sha256:" + "b" * 64)).approved
    assert not state(approval("alice"), requester="alice").approved


def test_approval_expires_after_policy_ttl() -> None:
    assert state(approval("alice"), now=T0 + 599).approved
    assert not state(approval("alice"), now=T0 + 600).approved


def test_newest_valid_decision_wins() -> None:
    deny = approval("alice", decision="deny", created="2027-01-15T08:00:05Z")
    s = state(approval("alice"), deny, now=T0 + 10)
    assert s.denied and s.reason == "ApprovalDenied"


@pytest.mark.parametrize(
    ("app", "requester", "now", "code", "sentence"),
    [
        (approval("alice"), "bob", T0 + 1, "Valid", "approved by alice"),
        (approval(None), "bob", T0 + 1, "NotStamped", "the approver was not stamped by admission"),
        (
            approval("alice", spec_hash="sha256:" + "b" * 64),
            "bob",
            T0 + 1,
            "SpecHashMismatch",
            "spec.specHash does not match the task's current spec",
        ),
        (
            approval("alice"),
            "alice",
            T0 + 1,
            "SelfApproval",
            "alice requested the task and cannot approve it",
        ),
        (
            approval("alice", task_uid="uid-of-an-earlier-t"),
            "bob",
            T0 + 1,
            "TaskUIDMismatch",
            "spec.taskUID is not the UID of this task (an approval binds to one task)",
        ),
        (
            approval("alice", task_uid=None),
            "bob",
            T0 + 1,
            "TaskUIDMismatch",
            "spec.taskUID is not the UID of this task (an approval binds to one task)",
        ),
        (
            approval(AGENT, groups=("sre",)),
            "bob",
            T0 + 1,
            "AgentApproval",
            f"{AGENT} is the task's agent and cannot approve its own access",
        ),
        (
            approval("mallory"),
            "bob",
            T0 + 1,
            "NotAnApprover",
            "mallory is not listed in the policy's spec.approvers",
        ),
        (
            approval("alice"),
            "bob",
            T0 + 600,
            "Expired",
            "the approval expired (policy spec.approvalTTL)",
        ),
    ],
)
def test_judge_returns_a_code_and_one_sentence_per_code(
    app: dict, requester: str, now: float, code: str, sentence: str
) -> None:
    verdict = approvals.judge(
        app, task_uid=UID, spec_hash=HASH, requester=requester, agent=AGENT, pol=POLICY, now=now
    )
    assert verdict.reason == code and verdict.valid is (code == "Valid")
    assert verdict.message == approvals.sentence(verdict) == sentence
    assert approvals.status_reason(verdict) == f"{code}: {sentence}"


def test_every_reason_code_has_a_sentence() -> None:
    for reason in approvals.Reason:
        assert approvals.sentence(approvals.Judgement(reason, "alice", detail="KeyError"))


def test_an_approval_for_an_earlier_task_of_the_same_name_and_spec_does_not_count() -> None:
    assert not state(approval("alice", task_uid="uid-of-the-deleted-t")).approved
    assert not state(approval("alice", task_uid=None)).approved


def test_a_service_account_approves_only_when_named_not_through_a_group() -> None:
    other = "system:serviceaccount:ns:reviewer-bot"
    sa_groups = ("system:serviceaccounts", "system:serviceaccounts:ns")
    by_group = {**POLICY, "spec": {**POLICY["spec"], "approvers": ["group:system:serviceaccounts"]}}
    assert not state(approval(other, groups=sa_groups), policy=by_group).approved
    # Claiming the ServiceAccounts group (impersonation can) also loses group-based approval.
    assert not state(approval("bob", groups=("sre", "system:serviceaccounts"))).approved
    named = {**POLICY, "spec": {**POLICY["spec"], "approvers": [f"user:{other}"]}}
    assert state(approval(other, groups=sa_groups), policy=named).approved


def test_the_agent_never_approves_its_own_task_even_when_listed() -> None:
    listed = {**POLICY, "spec": {**POLICY["spec"], "approvers": [f"user:{AGENT}"]}}
    assert not state(approval(AGENT), requester="alice", policy=listed).approved
