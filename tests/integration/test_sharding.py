"""Sharded active-active replicas: tasks spread over three replicas by namespace shard, as
each replica's taskwarden_shards_owned shows, and two replicas revoking at the same moment
both get their jtis onto the one revocation list."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from taskwarden import controlplane
from taskwarden.sharding import ring
from tests.integration import helpers as h
from tests.integration import shard_support as sh


@pytest.fixture
def group(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    tmp_path: Path,
) -> Iterator[sh.Group]:
    """A sharding group instead of the session's standalone operator (restarted after)."""
    operator.stop()
    g = sh.Group(cluster, api, operator_namespace, tmp_path)
    try:
        yield g
    finally:
        g.stop_all()
        operator.start()


def test_tasks_spread_over_three_replicas_each_acting_on_its_own_shards(
    api: client.ApiClient, group: sh.Group, agent_role: str, operator_namespace: str
) -> None:
    members = ("r0", "r1", "r2")
    group.start(*members)
    owned = group.wait_balanced(members)
    assert all(v > 0 for v in owned.values()) and sum(owned.values()) == sh.SHARDS
    nss = sh.namespaces_for(api, members, per_member=2, role=agent_role)
    try:
        tasks = {}
        for ns, _ in sh.owners_by_namespace(nss):
            for i in range(3):
                h.create(sh.agent(api, ns), ns, "agenttasks", h.task_body(f"spread-{i}"))
                tasks[(ns, f"spread-{i}")] = False
        done = h.wait_for(lambda: sh.settled(api, tasks), timeout=60, what="all Active")
        holders = group.holders()
        issued = group.issued()
        for ns, member in sh.owners_by_namespace(nss):
            shard = ring.slot_name(ring.shard_of(ns, sh.SHARDS))
            assert holders[shard] == member, f"shard {shard} of {ns} held by {holders[shard]}"
            for i in range(3):
                by = {rid for rid, _ in issued[(ns, f"spread-{i}")]}
                assert by == {member}, f"{ns}/spread-{i} issued by {by}, owner {member}"
        # Every replica issued, and each one's metric shows the shards it holds.
        assert {rid for v in issued.values() for rid, _ in v} >= set(members)
        for rid, op in group.live().items():
            assert op.metric("taskwarden_shards_owned") == sum(
                1 for holder in holders.values() if holder == rid
            )
            assert op.metric("taskwarden_shards_configured") == sh.SHARDS
        sh.assert_nothing_leaked(api, operator_namespace, group, done)
    finally:
        sh.delete_namespaces(api, [ns for v in nss.values() for ns in v])


def test_two_replicas_revoking_at_the_same_moment_both_get_listed(
    api: client.ApiClient, group: sh.Group, agent_role: str, operator_namespace: str
) -> None:
    members = ("r0", "r1")
    group.start(*members)
    group.wait_balanced(members)
    nss = sh.namespaces_for(api, members, per_member=1, role=agent_role)
    try:
        keys = [(ns, f"rev-{i}") for ns, _ in sh.owners_by_namespace(nss) for i in range(10)]
        for ns, name in keys:
            h.create(sh.agent(api, ns), ns, "agenttasks", h.task_body(name))
        tasks = h.wait_for(
            lambda: sh.settled(api, dict.fromkeys(keys, False)), timeout=60, what="Active"
        )
        jtis = {t["status"]["credential"]["jti"] for t in tasks}
        barrier = threading.Barrier(len(keys))

        def revoke(key: tuple[str, str]) -> None:
            barrier.wait()
            h.patch(
                api,
                key[0],
                "agenttasks",
                key[1],
                {"metadata": {"annotations": {"taskwarden.dev/revoke": "contention test"}}},
            )

        threads = [threading.Thread(target=revoke, args=(k,)) for k in keys]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for ns, name in keys:
            h.wait_phase(api, ns, name, "Revoked", timeout=30)
        h.wait_for(lambda: jtis <= h.revoked_jtis(api, operator_namespace), what="all listed")
        # Both replicas wrote the one ConfigMap; a later write by either must not drop the
        # other's entries: they keep rewriting it (heartbeat, sweeps), so look again.
        by = {rid for ns, name in keys for rid, _ in group.issued()[(ns, name)]}
        assert by == set(members), f"issued by {by}: the contention needs both replicas"
        time.sleep(3)
        assert jtis <= h.revoked_jtis(api, operator_namespace)
    finally:
        sh.delete_namespaces(api, [ns for v in nss.values() for ns in v])
