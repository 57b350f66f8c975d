"""Status builders: conditions, bounded history, terminal phases never go back to Active."""

from __future__ import annotations

import pytest

from taskwarden import names, status

NOW = 1_800_000_000.0


def test_transition_records_history_and_ready_condition() -> None:
    p = status.transition({}, "Active", "Issued", "ok", NOW, identity_ok=True)
    assert p["phase"] == "Active" and p["reason"] == "Issued"
    assert p["history"] == [{"time": "2027-01-15T08:00:00Z", "phase": "Active", "reason": "Issued"}]
    conds = {c["type"]: c for c in p["conditions"]}
    assert conds["Ready"]["status"] == "True"
    assert conds["IdentityVerified"]["status"] == "True"


def test_terminal_phase_never_goes_back_to_active() -> None:
    for phase in sorted(names.TERMINAL):
        with pytest.raises(status.IllegalTransition):
            status.transition({"phase": phase}, "Active", "Issued", "", NOW)


def test_history_is_bounded_to_twenty() -> None:
    st: dict = {}
    for i in range(50):
        st = {**st, **status.transition(st, "Pending", f"R{i}", "", NOW + i)}
    assert len(st["history"]) == status.HISTORY_LIMIT
    assert st["history"][-1]["reason"] == "R49"


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    c1 = status.condition([], "Ready", True, "Issued", "", NOW)
    c2 = status.condition(c1, "Ready", True, "Rotated", "", NOW + 60)
    assert c2[0]["lastTransitionTime"] == c1[0]["lastTransitionTime"]
    assert c2[0]["reason"] == "Rotated"
    c3 = status.condition(c2, "Ready", False, "Completed", "", NOW + 120)
    assert c3[0]["lastTransitionTime"] != c1[0]["lastTransitionTime"]


def test_same_phase_and_reason_adds_no_history() -> None:
    st = status.transition({}, "Pending", "PodNotFound", "", NOW)
    again = status.transition(st, "Pending", "PodNotFound", "", NOW + 5)
    assert len(again["history"]) == 1
