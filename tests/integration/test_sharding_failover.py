"""Sharded replicas losing and gaining members under load: a SIGKILLed replica's shards move
to the survivors, scaling 1 -> 3 -> 1 hands shards over and back, and through all of it no
credential leaks (no Secret or unlisted jti for a terminal task), no task has two live tokens
and no task is stuck."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client

from taskwarden import controlplane
from tests.integration import helpers as h
from tests.integration import shard_support as sh

N_TASKS = 198
"""The issue asks for 500; on 2 cores shared by several agents 198 (33 per namespace) keeps
the test under two minutes. bench/sharding.py runs larger bursts."""


@pytest.fixture
def group(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    operator: h.OperatorProcess,
    operator_namespace: str,
    tmp_path: Path,
) -> Iterator[sh.Group]:
    operator.stop()
    g = sh.Group(cluster, api, operator_namespace, tmp_path)
    try:
        yield g
    finally:
        g.stop_all()
        operator.start()


def test_sigkill_of_a_replica_moves_its_shards_and_leaks_nothing(
    api: client.ApiClient, group: sh.Group, agent_role: str, operator_namespace: str
) -> None:
    members = ("r0", "r1", "r2")
    group.start(*members)
    group.wait_balanced(members)
    nss = sh.namespaces_for(api, members, per_member=2, role=agent_role)
    all_ns = [ns for ns, _ in sh.owners_by_namespace(nss)]
    try:
        keys = [(all_ns[i % len(all_ns)], f"burst-{i:03d}") for i in range(N_TASKS)]
        completing = set(keys[::7])
        tasks = {k: k in completing for k in keys}

        def create(key: tuple[str, str]) -> None:
            h.create(sh.agent(api, key[0]), key[0], "agenttasks", h.task_body(key[1]))

        def complete(key: tuple[str, str]) -> None:
            h.patch(
                sh.agent(api, key[0]), key[0], "agenttasks", key[1], {"spec": {"completed": True}}
            )

        first, second = (
            sorted(completing)[: len(completing) // 2],
            sorted(completing)[len(completing) // 2 :],
        )
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, keys[: N_TASKS // 2]))
            burst = pool.map(create, keys[N_TASKS // 2 :])
            group.replicas["r1"].kill()  # mid-burst: issuances of its shards in flight
            killed_at = time.monotonic()
            list(burst)
            list(pool.map(complete, first))
            list(pool.map(complete, second))
        moved = {k: v for k, v in tasks.items() if k[0] in nss["r1"]}
        h.wait_for(lambda: sh.settled(api, moved), timeout=90, interval=0.5, what="moved settled")
        print(
            f"failover: the killed replica's tasks settled {time.monotonic() - killed_at:.1f}s "
            "after the kill (lease 6 s)"
        )
        done = h.wait_for(
            lambda: sh.settled(api, tasks), timeout=90, interval=0.5, what="all tasks settled"
        )
        group.wait_balanced(("r0", "r2"))
        holders = group.holders()
        assert set(holders.values()) <= {"r0", "r2"}, holders
        issued = group.issued()
        assert any(rid == "r1" for v in issued.values() for rid, _ in v), "r1 never worked"
        sh.assert_nothing_leaked(api, operator_namespace, group, done)
        assert sum(1 for t in done if t["status"]["phase"] == "Completed") == len(completing)
    finally:
        sh.delete_namespaces(api, all_ns)


class Load:
    """Creates tasks round-robin over namespaces (~`rate` a second), completing every 4th
    one a second after it was created, until stopped."""

    def __init__(self, api: client.ApiClient, nss: list[str], rate: float = 6.0) -> None:
        self.api, self.nss, self.rate = api, nss, rate
        self.tasks: dict[tuple[str, str], bool] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        pending: list[tuple[float, tuple[str, str]]] = []
        i = 0
        while not self.stop.is_set():
            ns = self.nss[i % len(self.nss)]
            key = (ns, f"load-{i:04d}")
            h.create(sh.agent(self.api, ns), ns, "agenttasks", h.task_body(key[1]))
            self.tasks[key] = False
            if i % 4 == 0:
                pending.append((time.monotonic() + 1.0, key))
            while pending and pending[0][0] <= time.monotonic():
                _, k = pending.pop(0)
                h.patch(
                    sh.agent(self.api, k[0]),
                    k[0],
                    "agenttasks",
                    k[1],
                    {"spec": {"completed": True}},
                )
                self.tasks[k] = True
            i += 1
            time.sleep(1 / self.rate)
        for _, k in pending:
            h.patch(
                sh.agent(self.api, k[0]), k[0], "agenttasks", k[1], {"spec": {"completed": True}}
            )
            self.tasks[k] = True


def test_scaling_one_to_three_to_one_under_load_hands_shards_over_and_back(
    api: client.ApiClient, group: sh.Group, agent_role: str, operator_namespace: str
) -> None:
    members = ("r0", "r1", "r2")
    group.start("r0")
    group.wait_balanced(["r0"])
    nss = sh.namespaces_for(api, members, per_member=2, role=agent_role)
    all_ns = [ns for ns, _ in sh.owners_by_namespace(nss)]
    load = Load(api, all_ns)
    try:
        load.thread.start()
        time.sleep(4)
        group.start("r1", "r2")  # scale up under load
        group.wait_balanced(members)
        time.sleep(6)
        for rid in ("r1", "r2"):  # scale down: SIGTERM, the Leases are handed back
            group.replicas[rid].stop()
        group.wait_balanced(["r0"])
        time.sleep(4)
        load.stop.set()
        load.thread.join(30)
        done = h.wait_for(
            lambda: sh.settled(api, load.tasks), timeout=90, interval=0.5, what="settled"
        )
        by = {rid for v in group.issued().values() for rid, _ in v}
        assert by == set(members), f"issued by {by}: every replica must have worked"
        assert set(group.holders().values()) <= {"r0", ""}
        sh.assert_nothing_leaked(api, operator_namespace, group, done)
        assert len(done) >= 60, f"only {len(done)} tasks: not much of a load"
    finally:
        load.stop.set()
        sh.delete_namespaces(api, all_ns)
