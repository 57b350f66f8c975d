"""Revocation list: add, prune after exp, the cap (never truncated), the ConfigMap round trip."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskwarden.credentials import revocation, tokens

NOW = 1_700_000_000.0


def test_add_contains_and_len() -> None:
    rl = revocation.RevocationList()
    assert len(rl) == 0 and "a" not in rl
    rl.add("a", NOW + 60)
    rl.add("b", NOW + 30)
    assert "a" in rl and "b" in rl and "c" not in rl
    assert len(rl) == 2
    assert sorted(rl) == ["a", "b"]
    assert 42 not in rl  # any object may be asked about


def test_re_adding_keeps_the_later_exp() -> None:
    rl = revocation.RevocationList()
    rl.add("a", NOW + 60)
    rl.add("a", NOW + 10)
    assert rl.expiry("a") == NOW + 60
    rl.add("a", NOW + 90)
    assert rl.expiry("a") == NOW + 90
    assert len(rl) == 1


@pytest.mark.parametrize(
    ("jti", "exp"),
    [("", NOW), (None, NOW), ("a", "soon"), ("a", True), ("a", math.nan), ("a", math.inf)],
)
def test_add_refuses_bad_entries(jti: Any, exp: Any) -> None:
    with pytest.raises(ValueError):
        revocation.RevocationList().add(jti, exp)


def test_prune_drops_entries_once_their_token_expired() -> None:
    rl = revocation.RevocationList()
    rl.add("early", NOW + 10)
    rl.add("late", NOW + 20)
    assert rl.prune(NOW + 9) == 0
    assert rl.prune(NOW + 10) == 1  # a token is invalid from exp on (now >= exp)
    assert "early" not in rl and "late" in rl
    assert rl.prune(NOW + 100) == 1
    assert len(rl) == 0


def test_grace_keeps_entries_for_verifier_leeway() -> None:
    rl = revocation.RevocationList(grace=30)
    rl.add("a", NOW)
    assert rl.prune(NOW + 29) == 0
    assert rl.prune(NOW + 30) == 1


def test_over_the_cap_nothing_unexpired_is_dropped() -> None:
    rl = revocation.RevocationList(max_entries=3)
    for index in range(5):
        rl.add(f"j{index}", NOW + 100 + index)
    rl.add("dead", NOW - 1)
    assert rl.prune(NOW) == 1
    assert sorted(rl) == ["j0", "j1", "j2", "j3", "j4"]  # over the cap, all kept
    assert rl.live(NOW) == 5 and rl.live(NOW + 103) == 1


@pytest.mark.parametrize(
    ("live", "draining", "action"),
    [
        (3, False, revocation.KEEP),
        (3, True, revocation.KEEP),
        (4, False, revocation.ROTATE),
        (4, True, revocation.WAIT),
    ],
)
def test_overflow_action_rotates_once_over_the_cap(live: int, draining: bool, action: str) -> None:
    assert revocation.overflow_action(live, 3, draining=draining) == action


def test_forget_drops_only_the_named_entries() -> None:
    rl = revocation.RevocationList(entries={"old1": NOW + 50, "old2": NOW + 60, "new": NOW + 70})
    assert rl.forget(["old1", "old2", "never-listed"]) == 2
    assert list(rl) == ["new"]


def test_to_configmap_data_is_sorted_by_exp_and_skips_expired_entries() -> None:
    rl = revocation.RevocationList()
    rl.add("c", NOW + 30)
    rl.add("a", NOW + 10.5)
    rl.add("gone", NOW - 1)
    rl.add("b", NOW + 20)
    data = rl.to_configmap_data(NOW)
    assert set(data) == {"revocations.json"}
    document = json.loads(data["revocations.json"])
    assert document == {
        "revoked": [
            {"jti": "a", "exp": NOW + 10.5},
            {"jti": "b", "exp": int(NOW) + 20},
            {"jti": "c", "exp": int(NOW) + 30},
        ],
        "updatedAt": "2023-11-14T22:13:20Z",
    }
    assert len(rl) == 4  # serialising does not modify the list
    assert '{"exp":1700000020,"jti":"b"}' in data["revocations.json"]  # compact, whole seconds


def test_to_configmap_data_publishes_every_live_entry_past_the_cap() -> None:
    rl = revocation.RevocationList(max_entries=2)
    for index in range(4):
        rl.add(f"j{index}", NOW + index + 1)
    document = json.loads(rl.to_configmap_data(NOW)["revocations.json"])
    assert [e["jti"] for e in document["revoked"]] == ["j0", "j1", "j2", "j3"]


def test_a_list_too_big_for_a_configmap_is_refused_not_truncated() -> None:
    rl = revocation.RevocationList()
    for index in range(25_000):
        rl.add(tokens.new_jti(), NOW + 600 + index % 600)
    with pytest.raises(revocation.RevocationListTooLarge, match="refusing to drop any"):
        rl.to_configmap_data(NOW)
    assert len(rl) == 25_000


def test_configmap_round_trip() -> None:
    rl = revocation.RevocationList()
    for index in range(50):
        rl.add(tokens.new_jti(), NOW + 10 * (index + 1) + 0.5 * (index % 2))
    back = revocation.RevocationList.from_configmap_data(rl.to_configmap_data(NOW))
    assert back == rl
    assert back.to_configmap_data(NOW) == rl.to_configmap_data(NOW)


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=30),
        st.floats(min_value=NOW + 1, max_value=NOW + 1e7, allow_nan=False),
        max_size=40,
    )
)
def test_configmap_round_trip_for_any_live_entries(entries: dict[str, float]) -> None:
    rl = revocation.RevocationList(entries=dict(entries))
    back = revocation.RevocationList.from_configmap_data(rl.to_configmap_data(NOW))
    assert back.entries == rl.entries


MALFORMED: dict[str, dict[str, Any]] = {
    "missing entry": {},
    "not json": {"revocations.json": "{"},
    "not an object": {"revocations.json": "[]"},
    "revoked missing": {"revocations.json": "{}"},
    "revoked not a list": {"revocations.json": '{"revoked": {}}'},
    "entry not an object": {"revocations.json": '{"revoked": ["a"]}'},
    "jti missing": {"revocations.json": '{"revoked": [{"exp": 1}]}'},
    "jti empty": {"revocations.json": '{"revoked": [{"jti": "", "exp": 1}]}'},
    "exp a string": {"revocations.json": '{"revoked": [{"jti": "a", "exp": "1"}]}'},
    "exp NaN": {"revocations.json": '{"revoked": [{"jti": "a", "exp": NaN}]}'},
    "value not a string": {"revocations.json": b"{}"},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_configmap_data_is_a_clear_value_error(case: str) -> None:
    with pytest.raises(ValueError, match=r"revocations\.json"):
        revocation.RevocationList.from_configmap_data(MALFORMED[case])


def test_merge_adds_new_entries_and_keeps_the_later_exp() -> None:
    ours = revocation.RevocationList()
    ours.add("shared", NOW + 10)
    ours.add("mine", NOW + 10)
    theirs = revocation.RevocationList()
    theirs.add("shared", NOW + 50)
    theirs.add("yours", NOW + 20)
    assert ours.merge(theirs) == 1
    assert ours.entries == {"shared": NOW + 50, "mine": NOW + 10, "yours": NOW + 20}
    assert len(theirs) == 2


def test_twice_the_default_cap_of_real_jtis_fits_in_a_configmap() -> None:
    """The headroom an emergency rotation drains in: the list may double before it is forgotten."""
    rl = revocation.RevocationList()
    for index in range(2 * revocation.DEFAULT_MAX_ENTRIES):
        rl.add(tokens.new_jti(), NOW + 600 + index % 600)
    data = rl.to_configmap_data(NOW)
    size = sum(len(k) + len(v.encode()) for k, v in data.items())
    assert size < revocation.CONFIGMAP_LIMIT_BYTES


@pytest.mark.parametrize(
    "kwargs",
    [{"max_entries": 0}, {"max_entries": 1.5}, {"grace": -1}, {"entries": {"": NOW}}],
)
def test_constructor_refuses_nonsense(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        revocation.RevocationList(**kwargs)
