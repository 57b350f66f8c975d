"""Pure builders of what the task controller writes and says: status patches, the decision
recorded in status, audit records and Event bodies.

Called by the actors (tasks/issue.py, tasks/revoke.py). Every function takes `now` (and any
randomness) as an argument and returns plain data; status transitions go through status.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

from taskwarden import audit, policy, rotation, status, timeutil
from taskwarden.tasks.facts import Body, Verdict, meta, requester, task_expires_at

REASONS = {"issue": "Issued", "rotate": "Rotated", "reissue": "Reissued"}
"""Status reason of each kind of issue."""
ISSUE_EVENTS = {"issue": "issued", "rotate": "rotated", "reissue": "reissued"}
"""Audit event of each kind of issue."""


def end_event(phase: str) -> str:
    """Audit event of a move to a terminal phase."""
    return {"Completed": "completed", "Expired": "expired", "Denied": "denied"}.get(
        phase, "revoked"
    )


def decision_status(d: policy.Decision, now: float) -> dict[str, Any]:
    return {
        "allowed": d.allowed,
        "needsApproval": d.needs_approval,
        "policy": d.policy,
        "rule": d.rule,
        "reason": f"{d.reason}: {d.message}"[:1024],
        "candidates": list(d.candidates),
        "evaluatedAt": timeutil.rfc3339(int(now)),
    }


def issue_message(jti: str, decision: policy.Decision, exp: float) -> str:
    return (
        f"credential {jti} issued under policy {decision.policy} rule "
        f"{decision.rule}, valid until {timeutil.rfc3339(exp)}"
    )


def issue_patch(
    body: Body,
    verdict: Verdict,
    *,
    kind: str,
    claims: Mapping[str, Any],
    kid: str,
    secret_name: str,
    expires_at: float,
    now: float,
    rotation_late: float | None = None,
) -> dict[str, Any]:
    """The status of a task that now holds the credential `claims` describe. A rotation also
    sets `RotationOnTime`: False when it was `rotation_late` seconds late, back to True on the
    first rotation on time after that; never written while it stays True (no extra bytes per
    task, no change to compare)."""
    st = body.get("status") or {}
    att, decision = verdict.attestation, verdict.decision
    assert att is not None and decision is not None
    old = st.get("credential") or {}
    rotations = int(old.get("rotations", 0)) + 1 if kind == "rotate" else 0
    patch = status.transition(
        st,
        "Active",
        REASONS[kind],
        issue_message(claims["jti"], decision, claims["exp"]),
        now,
        generation=body["metadata"].get("generation"),
        identity_ok=True,
        approved=True if decision.needs_approval else None,
        approval_reason=(
            f"approved by {verdict.approval.approver}"
            if verdict.approval and verdict.approval.approved
            else ""
        ),
    )
    patch.update(
        {
            "identity": {
                "spiffeID": att.spiffe_id,
                "podName": att.pod_name,
                "podUID": att.pod_uid,
                "nodeName": att.node_name,
            },
            "decision": decision_status(decision, now),
            "credential": {
                "secretName": secret_name,
                "jti": claims["jti"],
                "keyID": kid,
                "issuedAt": timeutil.rfc3339(claims["iat"]),
                "expiresAt": timeutil.rfc3339(claims["exp"]),
                "rotations": rotations,
            },
            "expiresAt": timeutil.rfc3339(expires_at),
            "specHash": policy.spec_hash(body.get("spec") or {}),
        }
    )
    if kind == "rotate":
        patch["conditions"] = rotation_conditions(
            patch["conditions"], rotation_late, old.get("expiresAt"), now, body
        )
    return patch


def rotation_behind(st: Mapping[str, Any]) -> bool:
    """Does this status already say `RotationOnTime=False`?"""
    return any(
        c.get("type") == rotation.ON_TIME and c.get("status") == "False"
        for c in st.get("conditions") or []
    )


def rotation_late_message(late: float, old_expires_at: str | None) -> str:
    return (
        f"rotated {late:.1f}s after its rotation deadline (the previous credential expires at "
        f"{old_expires_at or 'an unknown time'}): more rotations are due than "
        "TASKWARDEN_ROTATION_CONCURRENCY lets run, the operator renews those that expire first"
    )


def rotation_conditions(
    conds: list[dict[str, Any]],
    late: float | None,
    old_expires_at: str | None,
    now: float,
    body: Body,
) -> list[dict[str, Any]]:
    """`RotationOnTime` after a rotation: False (RotationBehind) when it was late, True
    (RotatedOnTime) when it was on time after a late one; untouched otherwise."""
    current = next((c for c in conds if c.get("type") == rotation.ON_TIME), None)
    generation = body["metadata"].get("generation")
    if late is not None:
        msg = rotation_late_message(late, old_expires_at)
        return status.condition(
            conds, rotation.ON_TIME, False, rotation.BEHIND, msg, now, generation
        )
    if current is not None and current.get("status") != "True":
        msg = "rotated on time again"
        return status.condition(
            conds, rotation.ON_TIME, True, rotation.CAUGHT_UP, msg, now, generation
        )
    return conds


def wait_unchanged(st: Mapping[str, Any], verdict: Verdict) -> bool:
    """A waiting task whose status already says this: nothing to write."""
    return bool(
        st.get("phase") == verdict.phase
        and st.get("reason") == verdict.reason
        and st.get("expiresAt")
    )


def wait_patch(body: Body, verdict: Verdict, expires_at: float, now: float) -> dict[str, Any]:
    """The status of a task that waits (Pending, AwaitingApproval) and holds no credential."""
    st = body.get("status") or {}
    awaiting = verdict.phase == "AwaitingApproval"
    patch = status.transition(
        st,
        verdict.phase,
        verdict.reason,
        verdict.message,
        now,
        generation=body["metadata"].get("generation"),
        identity_ok=verdict.attestation.ok if verdict.attestation else None,
        identity_reason=verdict.attestation.reason if verdict.attestation else "",
        approved=False if awaiting else None,
        approval_reason=verdict.reason if awaiting else "",
    )
    patch["expiresAt"] = timeutil.rfc3339(expires_at)
    patch["specHash"] = policy.spec_hash(body.get("spec") or {})
    patch["credential"] = None
    if verdict.decision:
        patch["decision"] = decision_status(verdict.decision, now)
    return patch


def end_patch(
    body: Body, phase: str, reason: str, message: str, now: float, verdict: Verdict | None
) -> dict[str, Any]:
    """The status of a task that ends in terminal `phase`."""
    ns, name, _ = meta(body)
    st = body.get("status") or {}
    patch = status.transition(
        st, phase, reason, message, now, generation=body["metadata"].get("generation")
    )
    if verdict and verdict.decision:
        patch["decision"] = decision_status(verdict.decision, now)
    if not st.get("expiresAt"):
        with contextlib.suppress(Exception):  # an invalid spec has no ttl to count from
            req = policy.task_request(ns, name, body.get("spec") or {})
            patch["expiresAt"] = timeutil.rfc3339(task_expires_at(body, req))
    patch["specHash"] = policy.spec_hash(body.get("spec") or {})
    return patch


def audit_record(body: Body, event: str, verdict: Verdict | None) -> audit.AuditRecord:
    ns, name, uid = meta(body)
    st = body.get("status") or {}
    spec = body.get("spec") or {}
    att = verdict.attestation if verdict else None
    ident = st.get("identity") or {}
    d = verdict.decision if verdict else None
    scopes = []
    for s in spec.get("scopes") or []:
        for a in s.get("actions") or []:
            for r in s.get("resources") or []:
                scopes.append(f"{s.get('tool')}:{a}:{r}")
    return audit.AuditRecord(
        event=event,
        namespace=ns,
        name=name,
        uid=uid,
        spiffeID=(att.spiffe_id if att and att.spiffe_id else ident.get("spiffeID", "")) or "",
        pod={
            "name": (att.pod_name if att else ident.get("podName")) or "",
            "uid": (att.pod_uid if att else ident.get("podUID")) or "",
        },
        requester=requester(body),
        policy=d.policy if d else (st.get("decision") or {}).get("policy"),
        rule=d.rule if d else (st.get("decision") or {}).get("rule"),
        scopes=scopes,
        dataClass=str(spec.get("dataClass", "")),
        reason=verdict.reason if verdict else "",
        message=verdict.message if verdict else "",
        approver=(verdict.approval.approver if verdict and verdict.approval else "") or "",
    )


def with_(record: audit.AuditRecord, **changes: Any) -> audit.AuditRecord:
    return dataclasses.replace(record, **changes)


def event_body(
    body: Body,
    type_: str,
    reason: str,
    note: str,
    action: str,
    *,
    now: float,
    instance: str,
    suffix: str,
) -> dict[str, Any]:
    """An events.k8s.io/v1 Event about the task; `suffix` makes its name unique."""
    ns, name, uid = meta(body)
    return {
        "metadata": {"name": f"{name}.{suffix}", "namespace": ns},
        "eventTime": audit.now_rfc3339(now),
        "reportingController": "taskwarden.dev/operator",
        "reportingInstance": instance[:128],
        "action": action,
        "reason": reason or "Unknown",
        "type": type_,
        "note": note[:1024],
        "regarding": {
            "apiVersion": f"{body.get('apiVersion', 'taskwarden.dev/v1alpha1')}",
            "kind": "AgentTask",
            "name": name,
            "namespace": ns,
            "uid": uid,
        },
    }
