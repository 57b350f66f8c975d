"""Pure builders for AgentTask status: phase transitions, conditions and history.

Called by tasks/explain.py; every function takes `now` and returns a dict to merge-patch into
status. Terminal phases never go back to Active: `transition` refuses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from taskwarden import names, timeutil

HISTORY_LIMIT = 20


class IllegalTransition(ValueError):
    pass


def condition(
    existing: Sequence[Mapping[str, Any]],
    type_: str,
    status: bool,
    reason: str,
    message: str,
    now: float,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    """Upsert one metav1.Condition; lastTransitionTime only moves when status flips."""
    out: list[dict[str, Any]] = []
    found = False
    value = "True" if status else "False"
    for c in existing:
        if c.get("type") != type_:
            out.append(dict(c))
            continue
        found = True
        ltt = c.get("lastTransitionTime") if c.get("status") == value else None
        out.append(
            _cond(type_, value, reason, message, ltt or timeutil.rfc3339(int(now)), generation)
        )
    if not found:
        out.append(_cond(type_, value, reason, message, timeutil.rfc3339(int(now)), generation))
    return out


def _cond(
    type_: str, value: str, reason: str, message: str, ltt: str, generation: int | None
) -> dict[str, Any]:
    c: dict[str, Any] = {
        "type": type_,
        "status": value,
        "reason": reason or "Unknown",
        "message": message[:1024],
        "lastTransitionTime": ltt,
    }
    if generation is not None:
        c["observedGeneration"] = generation
    return c


def transition(
    status: Mapping[str, Any],
    phase: str,
    reason: str,
    message: str,
    now: float,
    *,
    generation: int | None = None,
    identity_ok: bool | None = None,
    identity_reason: str = "",
    approved: bool | None = None,
    approval_reason: str = "",
) -> dict[str, Any]:
    """The status patch for a move to `phase`, with Ready/IdentityVerified/Approved conditions."""
    current = status.get("phase")
    if current in names.TERMINAL and phase != current:
        raise IllegalTransition(f"task is {current}; terminal phases never change (to {phase})")
    history = list(status.get("history") or [])
    if current != phase or status.get("reason") != reason:
        history.append({"time": timeutil.rfc3339(int(now)), "phase": phase, "reason": reason})
    conds: list[dict[str, Any]] = list(status.get("conditions") or [])
    conds = condition(conds, "Ready", phase == "Active", reason, message, now, generation)
    if identity_ok is not None:
        conds = condition(
            conds,
            "IdentityVerified",
            identity_ok,
            identity_reason or ("Attested" if identity_ok else "AttestationFailed"),
            message if not identity_ok else "pod identity attested",
            now,
            generation,
        )
    if approved is not None:
        conds = condition(
            conds,
            "Approved",
            approved,
            approval_reason or ("Approved" if approved else "Pending"),
            approval_reason or "",
            now,
            generation,
        )
    patch: dict[str, Any] = {
        "phase": phase,
        "reason": reason,
        "message": message[:1024],
        "conditions": conds,
        "history": history[-HISTORY_LIMIT:],
    }
    if generation is not None:
        patch["observedGeneration"] = generation
    return patch
