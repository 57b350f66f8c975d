"""Which AgentApprovals count: stamped approver, listed, not the requester, same spec, in time."""

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


def approval(
    user: str | None,
    *,
    decision: str = "approve",
    spec_hash: str = HASH,
    created: str = "2027-01-15T08:00:00Z",
    groups: tuple[str, ...] = (),
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
        "spec": {"taskName": "t", "specHash": spec_hash, "decision": decision},
    }


def state(*apps: dict, requester: str = "system:serviceaccount:ns:agent", now: float = T0 + 1):
    return approvals.state(
        task_name="t", spec_hash=HASH, requester=requester, policy=POLICY, approvals=apps, now=now
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
    verdict = approvals.judge(app, spec_hash=HASH, requester=requester, pol=POLICY, now=now)
    assert verdict.reason == code and verdict.valid is (code == "Valid")
    assert verdict.message == approvals.sentence(verdict) == sentence
    assert approvals.status_reason(verdict) == f"{code}: {sentence}"


def test_every_reason_code_has_a_sentence() -> None:
    for reason in approvals.Reason:
        assert approvals.sentence(approvals.Judgement(reason, "alice", detail="KeyError"))
