"""Which action a verdict calls for, given the phase the task is in: one table.

Called by tasks/reconciler.py after the checks. Pure. The table is the whole state machine of
a live task; terminal phases never reach it (the reconciler settles those first), and
status.transition refuses to leave one in any case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from taskwarden import names
from taskwarden.tasks.facts import Verdict

# --- actions (what tasks/reconciler.py dispatches to) --------------------------------------------
ISSUE: Final = "issue"
"""Sign a first credential (tasks/issue.py)."""
KEEP: Final = "keep"
"""Keep the credential: check its Secret, reissue or rotate when due (tasks/issue.py)."""
WAIT: Final = "wait"
"""Pending or AwaitingApproval: take back any credential, say why (tasks/revoke.py)."""
END: Final = "end"
"""End the task in the verdict's own phase (bad spec, completed, revoked on request, expired)."""
DENY: Final = "terminate-as-Denied"
"""Never issued and never will be: end as Denied with the verdict's reason."""
REVOKE: Final = "terminate-as-Revoked"
"""Was issued and must stop: end as Revoked with the verdict's reason."""
WITHDRAW: Final = "terminate-as-Revoked-approval-lapsed"
"""Was issued on an approval that no longer holds: end as Revoked, ApprovalExpired/-Withdrawn."""

# --- states: the task's current phase, with "Active on an approval" told apart -----------------
NEW, PENDING, AWAITING, ACTIVE, APPROVED = (
    "New",
    "Pending",
    "AwaitingApproval",
    "Active",
    "Approved",
)
FINAL: Final = "Final"
"""The verdict kind of every `final` verdict, whatever its phase."""

_LIVE: Mapping[str, str] = {
    FINAL: END,
    "Active": ISSUE,
    "Pending": WAIT,
    "AwaitingApproval": WAIT,
    "Denied": DENY,
    "Revoked": DENY,
}
TABLE: Mapping[tuple[str, str], str] = {
    **{(NEW, k): a for k, a in _LIVE.items()},
    **{(PENDING, k): a for k, a in _LIVE.items()},
    **{(AWAITING, k): a for k, a in _LIVE.items()},
    (ACTIVE, FINAL): END,
    (ACTIVE, "Active"): KEEP,
    (ACTIVE, "Pending"): WAIT,
    (ACTIVE, "AwaitingApproval"): WAIT,  # approval newly required: the credential goes
    (ACTIVE, "Denied"): REVOKE,
    (ACTIVE, "Revoked"): REVOKE,
    (APPROVED, FINAL): END,
    (APPROVED, "Active"): KEEP,
    (APPROVED, "Pending"): WAIT,
    (APPROVED, "AwaitingApproval"): WITHDRAW,  # it was approved; the approval lapsed
    (APPROVED, "Denied"): REVOKE,
    (APPROVED, "Revoked"): REVOKE,
}
"""(state, verdict kind) -> action."""


def settled(phase: str | None) -> bool:
    """A terminal phase: the task is never reconsidered, only cleaned up after."""
    return phase in names.TERMINAL


def state(phase: str | None, needed_approval: bool) -> str:
    """The row of the table for a live task's phase (and whether its status records that its
    credential needed an approval)."""
    if phase == "Active":
        return APPROVED if needed_approval else ACTIVE
    if phase in (PENDING, AWAITING):
        return phase
    return NEW


def kind(verdict: Verdict) -> str:
    """The column of the table for a verdict."""
    return FINAL if verdict.final else verdict.phase


def action(phase: str | None, needed_approval: bool, verdict: Verdict) -> str:
    return TABLE[(state(phase, needed_approval), kind(verdict))]


def withdrawal_reason(approvals_left: bool) -> str:
    """Why an approved task lost its approval: it expired (approvals still exist) or was
    withdrawn (none left)."""
    return "ApprovalExpired" if approvals_left else "ApprovalWithdrawn"
