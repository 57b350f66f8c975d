"""What the task controller writes and says, built purely: status patches, the recorded
decision, audit records and Event bodies."""

from __future__ import annotations

from typing import Any

import pytest

from taskwarden import approvals, names, policy, status, timeutil
from taskwarden.tasks import checks, explain
from taskwarden.tasks.facts import Verdict
from tests.unit import task_world as w

POL = w.policy_body()


def issuable(body: dict[str, Any] | None = None) -> Verdict:
    _, v = checks.run(w.facts(body or w.task(), policies=[POL], pods=[w.pod()]), w.NOW)
    assert v.phase == "Active"
    return v


CLAIMS = {"jti": "j-1", "iat": int(w.NOW), "exp": int(w.NOW) + 600}


def test_decision_status_is_bounded_and_dated() -> None:
    d = policy.Decision(False, False, None, None, "NoMatchingPolicy", "x" * 2000)
    st = explain.decision_status(d, w.NOW + 0.7)
    assert st["allowed"] is False and st["policy"] is None
    assert len(st["reason"]) == 1024 and st["reason"].startswith("NoMatchingPolicy: x")
    assert st["evaluatedAt"] == timeutil.rfc3339(int(w.NOW))


@pytest.mark.parametrize(
    ("kind", "reason", "rotations"), [("issue", "Issued", 0), ("rotate", "Rotated", 3)]
)
def test_issue_patch_names_the_credential_and_counts_rotations(
    kind: str, reason: str, rotations: int
) -> None:
    body = w.task(phase="Active", status={"credential": {"jti": "j-0", "rotations": 2}})
    patch = explain.issue_patch(
        body,
        issuable(body),
        kind=kind,
        claims=CLAIMS,
        kid="k1",
        secret_name="t-credential",
        expires_at=w.NOW + 1200,
        now=w.NOW,
    )
    assert patch["phase"] == "Active" and patch["reason"] == reason
    assert patch["message"].startswith("credential j-1 issued under policy research-agents")
    assert patch["credential"] == {
        "secretName": "t-credential",
        "jti": "j-1",
        "keyID": "k1",
        "issuedAt": timeutil.rfc3339(CLAIMS["iat"]),
        "expiresAt": timeutil.rfc3339(CLAIMS["exp"]),
        "rotations": rotations,
    }
    assert patch["identity"]["podName"] == "agent-0"
    assert patch["decision"]["policy"] == "research-agents"
    assert patch["expiresAt"] == timeutil.rfc3339(w.NOW + 1200)
    assert patch["specHash"] == policy.spec_hash(body["spec"])
    conds = {c["type"]: c["status"] for c in patch["conditions"]}
    assert conds == {"Ready": "True", "IdentityVerified": "True"}


def test_issue_patch_records_the_approver_when_approved() -> None:
    body = w.task()
    v = Verdict(
        "Active",
        "Issued",
        "ok",
        policy.Decision(True, True, "research-agents", 0, "ApprovalRequired", "ok"),
        issuable().attestation,
        approvals.ApprovalState(True, False, "Approved", "ok", approver="alice"),
    )
    patch = explain.issue_patch(
        body, v, kind="issue", claims=CLAIMS, kid="k", secret_name="s", expires_at=w.NOW, now=w.NOW
    )
    approved = next(c for c in patch["conditions"] if c["type"] == "Approved")
    assert approved["status"] == "True" and approved["reason"] == "approved by alice"


def test_wait_patch_clears_the_credential_and_says_why() -> None:
    body = w.task(phase="Active", status={"credential": {"jti": "j"}})
    _, v = checks.run(w.facts(w.task(), policies=[POL]), w.NOW)  # no pod: Pending
    patch = explain.wait_patch(body, v, w.NOW + 1200, w.NOW)
    assert patch["phase"] == "Pending" and patch["reason"] == "PodNotFound"
    assert patch["credential"] is None
    assert patch["decision"]["allowed"] is True
    conds = {c["type"]: c for c in patch["conditions"]}
    assert conds["IdentityVerified"]["status"] == "False"
    assert conds["IdentityVerified"]["reason"] == "PodNotFound"
    assert "Approved" not in conds


def test_awaiting_approval_patch_sets_approved_false() -> None:
    v = Verdict("AwaitingApproval", "ApprovalRequired", "needs one")
    patch = explain.wait_patch(w.task(), v, w.NOW + 1200, w.NOW)
    approved = next(c for c in patch["conditions"] if c["type"] == "Approved")
    assert approved["status"] == "False" and approved["reason"] == "ApprovalRequired"
    assert "decision" not in patch


def test_a_waiting_task_whose_status_says_so_is_not_rewritten() -> None:
    v = Verdict("Pending", "PodNotFound", "m")
    assert explain.wait_unchanged(
        {"phase": "Pending", "reason": "PodNotFound", "expiresAt": "x"}, v
    )
    assert not explain.wait_unchanged({"phase": "Pending", "reason": "PodNotFound"}, v)
    assert not explain.wait_unchanged({"phase": "Pending", "reason": "Other", "expiresAt": "x"}, v)


def test_end_patch_records_expiry_once_and_refuses_to_leave_a_terminal_phase() -> None:
    patch = explain.end_patch(w.task(), "Completed", "Completed", "done", w.NOW, None)
    assert patch["phase"] == "Completed"
    assert patch["expiresAt"] == timeutil.rfc3339(w.NOW + 1200)
    assert "decision" not in patch
    kept = explain.end_patch(
        w.task(status={"expiresAt": "2020-01-01T00:00:00Z"}), "Expired", "Expired", "", w.NOW, None
    )
    assert "expiresAt" not in kept  # already recorded
    with pytest.raises(status.IllegalTransition):
        explain.end_patch(w.task(phase="Denied"), "Revoked", "X", "", w.NOW, None)


def test_end_patch_of_an_invalid_spec_has_no_expiry() -> None:
    patch = explain.end_patch(w.task(ttl="soon"), "Failed", "InvalidSpec", "bad", w.NOW, None)
    assert "expiresAt" not in patch and patch["reason"] == "InvalidSpec"


def test_end_patch_records_the_decision_of_a_denial() -> None:
    _, v = checks.run(w.facts(w.task(), pods=[w.pod()]), w.NOW)
    patch = explain.end_patch(w.task(), "Denied", v.reason, v.message, w.NOW, v)
    assert patch["decision"]["allowed"] is False


@pytest.mark.parametrize(
    ("phase", "event"),
    [("Completed", "completed"), ("Expired", "expired"), ("Denied", "denied"),
     ("Revoked", "revoked"), ("Failed", "revoked")],
)  # fmt: skip
def test_audit_event_of_each_end(phase: str, event: str) -> None:
    assert explain.end_event(phase) == event


def test_audit_record_lists_scopes_requester_and_identity() -> None:
    body = w.task()
    rec = explain.audit_record(body, "issued", issuable(body))
    assert rec.scopes == ["github:read:repo:acme/widgets"]
    assert rec.requester == "bob"
    assert rec.spiffeID == f"spiffe://{w.TRUST_DOMAIN}/ns/{w.NS}/sa/{w.SA}"
    assert rec.pod == {"name": "agent-0", "uid": "uid-agent-0"}
    assert rec.policy == "research-agents" and rec.reason == "Issued"
    changed = explain.with_(rec, jti="j-9")
    assert changed.jti == "j-9" and changed.requester == "bob"


def test_audit_record_without_a_verdict_reads_the_status() -> None:
    body = w.task(
        phase="Active",
        status={
            "identity": {"spiffeID": "spiffe://x/ns/a/sa/b", "podName": "p", "podUID": "u"},
            "decision": {"policy": "pol", "rule": 2},
        },
    )
    rec = explain.audit_record(body, "revoked", None)
    assert (rec.spiffeID, rec.pod, rec.policy, rec.rule) == (
        "spiffe://x/ns/a/sa/b",
        {"name": "p", "uid": "u"},
        "pol",
        2,
    )
    assert rec.reason == "" and rec.approver == ""


def test_event_body_regards_the_task_and_is_bounded() -> None:
    ev = explain.event_body(
        w.task(), "Warning", "", "n" * 2000, "Revoked", now=w.NOW, instance="i" * 200, suffix="ab"
    )
    assert ev["metadata"] == {"name": "t.ab", "namespace": w.NS}
    assert ev["reason"] == "Unknown" and ev["type"] == "Warning" and ev["action"] == "Revoked"
    assert len(ev["note"]) == 1024 and len(ev["reportingInstance"]) == 128
    assert ev["regarding"] == {
        "apiVersion": names.API_VERSION,
        "kind": "AgentTask",
        "name": "t",
        "namespace": w.NS,
        "uid": "uid-t",
    }
