"""The ledger's record format, shards and judgement (pure), and its store's merging of
concurrent writers (on the fake ConfigMap API of the reconciler tests)."""

from __future__ import annotations

import asyncio

import pytest

from taskwarden import timeutil
from taskwarden.credentials import ledger
from taskwarden.ledger import Ledger
from tests.unit.test_task_reconciler_acts_in_order import FakeKube

NOW = 1_800_000_000.0
E = ledger.Entry("jti-1", NOW + 300, NOW - 10, "uid-1", "agents", "t")


def task(uid: str = "uid-1", phase: str = "Active", jti: str = "jti-1", issued: float = NOW - 10):
    return {
        "metadata": {"uid": uid},
        "status": {
            "phase": phase,
            "credential": {"jti": jti, "issuedAt": timeutil.rfc3339(issued)},
        },
    }


def test_an_entry_round_trips_and_names_its_bad_field() -> None:
    assert ledger.decode(E.jti, ledger.encode(E)) == E
    with pytest.raises(ValueError, match="exp must be unix seconds"):
        ledger.decode("j", '{"exp":"soon","iat":1,"uid":"u","ns":"n","name":"t","backend":"jwt"}')
    with pytest.raises(ValueError, match="uid must be a non-empty string"):
        ledger.decode("j", '{"exp":1,"iat":1,"uid":"","ns":"n","name":"t","backend":"jwt"}')
    good, bad = ledger.entries({"jti-1": ledger.encode(E), "junk": "{"})
    assert (good, bad) == ([E], ["junk"])


def test_a_task_keeps_one_shard_and_shards_are_spread() -> None:
    assert ledger.shard_of("uid-1") == ledger.shard_of("uid-1")
    used = {ledger.shard_of(f"uid-{i}") for i in range(500)}
    assert used == set(ledger.shard_names()) and len(used) == ledger.SHARDS


@pytest.mark.parametrize(
    ("t", "now", "verdict"),
    [
        (task(), NOW, ledger.KEEP),  # the current token
        (task(), NOW + 300, ledger.DROP),  # expired: may go unlisted
        (None, NOW, ledger.REVOKE),  # task gone
        (task(uid="other"), NOW, ledger.REVOKE),  # task replaced under the same name
        (task(phase="Completed"), NOW, ledger.REVOKE),
        (task(phase="Pending"), NOW, ledger.REVOKE),
        (task(jti="jti-2", issued=NOW), NOW, ledger.KEEP),  # rotated out, still in overlap
        (task(jti="jti-2", issued=NOW - 20), NOW, ledger.REVOKE),  # written, never current
        (task(jti="jti-2", issued=NOW - 10), NOW, ledger.REVOKE),  # same second: not a rotation
    ],
)
def test_judge(t: dict | None, now: float, verdict: str) -> None:
    assert ledger.judge(E, t, now) == verdict


def test_two_writers_of_one_shard_merge_and_a_burst_is_one_write_per_shard() -> None:
    async def main() -> None:
        kube = FakeKube()
        a, b = Ledger(kube, "ns"), Ledger(kube, "ns")  # type: ignore[arg-type]
        same = [ledger.Entry(f"j{i}", NOW, NOW, "uid-1", "agents", "t") for i in range(20)]
        await asyncio.gather(*(a.add(e) for e in same[:10]))
        writes = sum(1 for c in kube.calls if c[0] == "ledger")
        assert writes <= 2  # group commit: the first goes at once, the rest together
        await b.add(same[10])  # b never read the shard: create conflicts, re-read, merge
        await a.add(same[11])  # a's resourceVersion is stale now: conflict, re-read, merge
        await b.remove("uid-1", ["j0"])
        assert kube.ledger() == {f"j{i}" for i in range(1, 12)}
        await a.load()
        assert {e.jti for e in a.entries_of("uid-1")} == kube.ledger()

    asyncio.run(main())


def test_one_namespace_spreads_over_its_group_and_never_leaves_it() -> None:
    """Tasks of one namespace (one task shard) spread over SUBSHARDS ConfigMaps of their
    group, so a busy namespace cannot fill one ConfigMap; a task always maps to the same."""
    names = {ledger.store_name(3, f"uid-{i}") for i in range(2000)}
    assert len(names) == ledger.SUBSHARDS
    assert all(n.startswith("taskwarden-ledger-03-") for n in names)
    assert ledger.store_name(19, "uid-1") == ledger.store_name(3, "uid-1")  # group mod 16
    every = ledger.all_names()
    assert len(every) == len(set(every)) == ledger.SHARDS * (ledger.SUBSHARDS + 1)
    assert names <= set(every) and set(ledger.shard_names()) <= set(every)


def test_a_load_finds_entries_where_earlier_versions_put_them() -> None:
    """Entries written by versions before SUBSHARDS (by namespace, by UID) are still found,
    revoked and removed from where they are."""

    async def main() -> None:
        kube = FakeKube()
        old = ledger.Entry("old-1", NOW, NOW, "uid-1", "agents", "t")
        legacy = Ledger(kube, "ns")  # type: ignore[arg-type]
        await legacy._change(ledger.shard_of("uid-1"), {old.jti: ledger.encode(old)})
        fresh = Ledger(kube, "ns")  # type: ignore[arg-type]
        await fresh.load()
        new = ledger.Entry("new-1", NOW, NOW, "uid-1", "agents", "t")
        await fresh.add(new)
        assert {e.jti for e in fresh.entries_of("uid-1", "agents")} == {"old-1", "new-1"}
        await fresh.remove("uid-1", ["old-1"], "agents")
        assert kube.ledger() == {"new-1"}
        assert kube.configmaps[ledger.shard_of("uid-1")]["data"] == {}

    asyncio.run(main())
