"""Sharding decisions (taskwarden.sharding.ring): shards, desired owners, Lease actions, fencing."""

from __future__ import annotations

import pytest

from taskwarden import config
from taskwarden.sharding import ring

SLOTS = [ring.slot_name(i) for i in range(16)]


def test_a_namespace_always_maps_to_the_same_shard() -> None:
    # Pinned: every replica (and every version) must agree, or two would act on one task.
    assert ring.shard_of("default", 16) == ring.shard_of("default", 16)
    assert [ring.shard_of(f"ns-{i}", 16) for i in range(5)] == [
        ring.shard_of(f"ns-{i}", 16) for i in range(5)
    ]
    assert all(0 <= ring.shard_of(f"ns-{i}", 16) < 16 for i in range(1000))


def test_namespaces_spread_over_all_shards() -> None:
    counts = [0] * 16
    for i in range(4000):
        counts[ring.shard_of(f"team-{i}", 16)] += 1
    assert min(counts) > 150 and max(counts) < 350, counts


def test_every_shard_has_exactly_one_desired_owner_among_live_members() -> None:
    members = {"a", "b", "c"}
    owners = ring.assignment(members, SLOTS)
    assert set(owners) == set(SLOTS)
    assert set(owners.values()) <= members
    assert ring.owner("00", []) is None


def test_the_assignment_does_not_depend_on_the_order_members_are_seen() -> None:
    assert ring.assignment(["a", "b", "c"], SLOTS) == ring.assignment(["c", "a", "b"], SLOTS)


def test_a_leaving_member_moves_only_its_own_shards() -> None:
    before = ring.assignment({"a", "b", "c"}, SLOTS)
    after = ring.assignment({"a", "b"}, SLOTS)
    moved = {s for s in SLOTS if before[s] != after[s]}
    assert moved == {s for s in SLOTS if before[s] == "c"}


def test_a_joining_member_takes_shards_only_for_itself() -> None:
    before = ring.assignment({"a", "b"}, SLOTS)
    after = ring.assignment({"a", "b", "c"}, SLOTS)
    assert all(after[s] in (before[s], "c") for s in SLOTS)
    assert any(after[s] == "c" for s in SLOTS)


def obs(holder: str, rv: str = "1", since: float = 0.0, duration: float = 15.0) -> ring.Observed:
    return ring.Observed(holder=holder, resource_version=rv, duration=duration, since=since)


def decide(**kw: object) -> str:
    args: dict[str, object] = {
        "me": "a",
        "desired": "a",
        "obs": None,
        "held_until": None,
        "last_renew": None,
        "renew_every": 5.0,
        "now": 100.0,
    }
    args.update(kw)
    return ring.decide(**args)  # type: ignore[arg-type]


def test_the_desired_owner_acquires_a_missing_released_or_expired_lease() -> None:
    assert decide(obs=None) == ring.ACQUIRE
    assert decide(obs=obs("")) == ring.ACQUIRE
    assert decide(obs=obs("b", since=84.0)) == ring.ACQUIRE  # unchanged for 16 s > 15 s


def test_a_lease_held_by_a_live_holder_is_never_taken() -> None:
    assert decide(obs=obs("b", since=90.0)) == ring.WAIT


def test_a_member_that_is_not_the_desired_owner_never_acquires() -> None:
    assert decide(desired="b", obs=None) == ring.WAIT
    assert decide(desired="b", obs=obs("")) == ring.WAIT


def test_the_holder_renews_when_due_and_releases_to_the_desired_owner() -> None:
    held = {"obs": obs("a"), "held_until": 105.0}
    assert decide(**held, last_renew=99.0) == ring.HOLD
    assert decide(**held, last_renew=94.0) == ring.RENEW
    assert decide(**held, last_renew=99.0, desired="b") == ring.RELEASE


def test_a_holder_past_its_renew_deadline_no_longer_acts_or_renews_as_holder() -> None:
    assert not ring.acting(100.0, 100.0)
    # Its own stale Lease is retaken with a conditioned write, like any acquisition.
    assert decide(obs=obs("a"), held_until=99.0) == ring.ACQUIRE
    assert decide(obs=obs("a"), held_until=99.0, desired="b") == ring.WAIT


def test_expiry_is_judged_by_our_own_observation_not_the_holders_clock() -> None:
    first = ring.observe(None, "b", "7", 15.0, now=10.0)
    assert ring.observe(first, "b", "7", 15.0, now=20.0).since == 10.0  # unchanged
    assert ring.observe(first, "b", "8", 15.0, now=20.0).since == 20.0  # renewed
    assert not ring.expired(first, 25.0) and ring.expired(first, 25.1)


@pytest.mark.parametrize("latency", [0.0, 0.5, 3.0])
def test_fencing_the_old_holder_stops_acting_before_another_can_acquire(latency: float) -> None:
    """Holder `a` starts a renewal at t, the write lands at t + latency; `b` sees that version
    at some time >= the write. `a` acts until t + renew_deadline; `b` may acquire only after
    seeing it unchanged for lease_duration. renew_deadline < lease_duration keeps them apart."""
    s = config.ShardingSettings()
    t = 1000.0
    a_until = t + s.renew_deadline
    seen_by_b = ring.observe(None, "a", "5", s.lease_duration, now=t + latency)
    first_acquire = next(
        t + latency + step / 10
        for step in range(0, 1000)
        if ring.expired(seen_by_b, t + latency + step / 10)
    )
    assert not ring.acting(a_until, first_acquire)
    assert first_acquire - a_until >= s.lease_duration - s.renew_deadline


def test_live_members_are_unexpired_member_leases_and_always_ourselves() -> None:
    members = {"m-b": obs("b", since=95.0), "m-c": obs("c", since=50.0), "m-x": obs("")}
    assert ring.live_members(members, "a", 100.0) == {"a", "b"}


def test_lease_timings_must_let_a_holder_stop_before_its_lease_expires() -> None:
    with pytest.raises(ValueError, match="TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS"):
        config.from_env({"TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS": "20"})
    with pytest.raises(ValueError, match="TASKWARDEN_SHARDS"):
        config.from_env({"TASKWARDEN_SHARDS": "0"})
    s = config.from_env(
        {
            "TASKWARDEN_SHARDS": "8",
            "TASKWARDEN_LEASE_DURATION_SECONDS": "6",
            "TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS": "4",
            "TASKWARDEN_LEASE_RETRY_SECONDS": "1",
        }
    ).sharding
    assert (s.shards, s.lease_duration, s.renew_deadline, s.retry_period) == (8, 6.0, 4.0, 1.0)
