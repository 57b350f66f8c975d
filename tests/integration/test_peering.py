"""Active/standby with kopf peering: one replica works, the other takes over when it dies."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from kubernetes import client

from taskwarden import controlplane
from tests.integration import helpers as h


def _issued(op: h.OperatorProcess) -> set[str]:
    names = set()
    for line in op.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == "issued":
                names.add(rec["name"])
    return names


def test_only_the_active_replica_issues_and_the_standby_takes_over(
    cluster: controlplane.ControlPlane,
    api: client.ApiClient,
    namespace: str,
    operator: h.OperatorProcess,
    operator_namespace: str,
    tmp_path: Path,
    agent_env: Callable[..., h.AgentEnv],
) -> None:
    operator.stop()
    env = dict(os.environ, TASKWARDEN_PEERING="taskwarden-test", TASKWARDEN_PEERING_LIFETIME="6")
    replicas = []
    try:
        for i in range(2):
            d = tmp_path / f"r{i}"
            d.mkdir()
            op = h.OperatorProcess(
                kubeconfig=cluster.kubeconfig,
                workdir=d,
                operator_namespace=operator_namespace,
                env=env,
                name=f"r{i}",
            )
            op.start()
            replicas.append(op)
        env = agent_env()
        for i in range(5):
            env.create_task(f"peer-{i}")
        for i in range(5):
            h.wait_phase(api, namespace, f"peer-{i}", "Active", timeout=40)
        # The audit line follows the status write: wait for all five to be logged.
        want = [f"peer-{i}" for i in range(5)]
        h.wait_for(
            lambda: sorted(_issued(replicas[0]) | _issued(replicas[1])) == want, what="audit lines"
        )
        by = [_issued(op) for op in replicas]
        assert not (by[0] and by[1]), f"both replicas issued: {by}"
        active = replicas[0] if by[0] else replicas[1]
        standby = replicas[1] if by[0] else replicas[0]
        # `up` is 1 on both; taskwarden_replica_active tells them apart (TaskwardenNoActiveReplica).
        assert active.metric("taskwarden_replica_active") == 1
        assert standby.metric("taskwarden_replica_active") == 0
        active.kill()
        # In a cluster one Service fronts every replica's webhook server; locally each replica
        # has its own port, so point the webhook configurations at the survivor, as the
        # Service would.
        _route_webhooks_to(api, standby.webhook_port)
        env.create_task("after-failover")
        h.wait_phase(api, namespace, "after-failover", "Active", timeout=60)
        h.wait_for(lambda: "after-failover" in _issued(standby), what="standby issued")
        assert standby.metric("taskwarden_replica_active") == 1
    finally:
        for op in replicas:
            op.stop()
        operator.start()


def _route_webhooks_to(api: client.ApiClient, port: int) -> None:
    import re

    adm = client.AdmissionregistrationV1Api(api)
    for read, replace in (
        (adm.read_mutating_webhook_configuration, adm.replace_mutating_webhook_configuration),
        (adm.read_validating_webhook_configuration, adm.replace_validating_webhook_configuration),
    ):
        cfg = read("taskwarden")
        for wh in cfg.webhooks:
            if wh.client_config.url:
                wh.client_config.url = re.sub(r":\d+/", f":{port}/", wh.client_config.url)
        replace("taskwarden", cfg)
