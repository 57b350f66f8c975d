"""The task state machine is one table: (current phase, verdict) -> action. Every cell is
listed here, and the table agrees with the elif ladder it replaced on every input."""

from __future__ import annotations

import itertools

import pytest

from taskwarden import names
from taskwarden.tasks import transitions as t
from taskwarden.tasks.facts import Verdict

VERDICT_PHASES = ("Active", "Pending", "AwaitingApproval", "Denied", "Revoked")
FINAL_PHASES = ("Failed", "Completed", "Revoked", "Expired")
CURRENT = (None, "Pending", "AwaitingApproval", "Active", "SomethingNew")


def verdict(phase: str, final: bool = False) -> Verdict:
    return Verdict(phase, "Because", "a sentence", final=final)


EXPECTED = [
    # (current phase, status records needsApproval, verdict phase, final?, action)
    (None, False, "Active", False, t.ISSUE),
    (None, False, "Pending", False, t.WAIT),
    (None, False, "AwaitingApproval", False, t.WAIT),
    (None, False, "Denied", False, t.DENY),
    (None, False, "Revoked", False, t.DENY),  # never issued: a revoked parent denies the child
    (None, False, "Completed", True, t.END),
    ("Pending", False, "Active", False, t.ISSUE),
    ("Pending", False, "Pending", False, t.WAIT),
    ("Pending", False, "Revoked", False, t.DENY),
    ("Pending", False, "Expired", True, t.END),
    ("AwaitingApproval", True, "Active", False, t.ISSUE),
    ("AwaitingApproval", True, "AwaitingApproval", False, t.WAIT),
    ("AwaitingApproval", True, "Denied", False, t.DENY),
    ("Active", False, "Active", False, t.KEEP),
    ("Active", False, "Pending", False, t.WAIT),
    ("Active", False, "AwaitingApproval", False, t.WAIT),  # approval newly required
    ("Active", False, "Denied", False, t.REVOKE),
    ("Active", False, "Revoked", False, t.REVOKE),
    ("Active", False, "Revoked", True, t.END),  # revoked on request
    ("Active", True, "Active", False, t.KEEP),
    ("Active", True, "Pending", False, t.WAIT),
    ("Active", True, "AwaitingApproval", False, t.WITHDRAW),  # the approval lapsed
    ("Active", True, "Denied", False, t.REVOKE),
    ("Active", True, "Revoked", False, t.REVOKE),
    ("Active", True, "Failed", True, t.END),
]


@pytest.mark.parametrize(("phase", "approved", "vphase", "final", "action"), EXPECTED)
def test_action_for_phase_and_verdict(
    phase: str | None, approved: bool, vphase: str, final: bool, action: str
) -> None:
    assert t.action(phase, approved, verdict(vphase, final)) == action


def _ladder(phase: str | None, needs_approval: bool, v: Verdict) -> str:
    """The elif ladder of the old reconciler, kept here as the reference."""
    if v.final:
        return t.END
    if v.phase == "Active" and phase == "Active":
        return t.KEEP
    if v.phase == "Active":
        return t.ISSUE
    if phase == "Active" and v.phase == "AwaitingApproval" and needs_approval:
        return t.WITHDRAW
    if phase == "Active" and v.phase in ("Revoked", "Denied"):
        return t.REVOKE
    if v.phase in ("Revoked", "Denied"):
        return t.DENY
    return t.WAIT


@pytest.mark.parametrize(
    ("phase", "approved", "vphase"),
    list(itertools.product(CURRENT, (False, True), VERDICT_PHASES)),
)
def test_table_agrees_with_the_ladder_it_replaced(
    phase: str | None, approved: bool, vphase: str
) -> None:
    v = verdict(vphase)
    assert t.action(phase, approved, v) == _ladder(phase, approved, v)


@pytest.mark.parametrize(
    ("phase", "approved", "vphase"),
    list(itertools.product(CURRENT, (False, True), FINAL_PHASES)),
)
def test_a_final_verdict_always_ends_the_task(
    phase: str | None, approved: bool, vphase: str
) -> None:
    assert t.action(phase, approved, verdict(vphase, final=True)) == t.END


def test_every_cell_of_the_table_is_filled() -> None:
    states = (t.NEW, t.PENDING, t.AWAITING, t.ACTIVE, t.APPROVED)
    kinds = (t.FINAL, *VERDICT_PHASES)
    assert set(t.TABLE) == set(itertools.product(states, kinds))


def test_only_an_active_task_remembers_its_approval() -> None:
    assert t.state("Active", True) == t.APPROVED
    assert t.state("Active", False) == t.ACTIVE
    assert t.state("AwaitingApproval", True) == t.AWAITING
    assert t.state(None, True) == t.NEW


@pytest.mark.parametrize("phase", sorted(names.TERMINAL))
def test_terminal_phases_are_settled_before_the_table(phase: str) -> None:
    assert t.settled(phase)


@pytest.mark.parametrize("phase", [None, "Pending", "AwaitingApproval", "Active"])
def test_live_phases_are_not_settled(phase: str | None) -> None:
    assert not t.settled(phase)


def test_a_lapsed_approval_says_whether_it_expired_or_was_withdrawn() -> None:
    assert t.withdrawal_reason(approvals_left=True) == "ApprovalExpired"
    assert t.withdrawal_reason(approvals_left=False) == "ApprovalWithdrawn"
