"""Support for the sharding tests: several `taskwarden run` replicas of one sharding group,
namespaces chosen by the ring so each replica owns some, and the no-leak checks."""

from __future__ import annotations

import itertools
import json
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from taskwarden import controlplane
from taskwarden.credentials import ledger, tokens
from taskwarden.names import TERMINAL
from taskwarden.sharding import ring
from tests.integration import helpers as h

SHARDS = 16
LEASE = {
    "TASKWARDEN_SHARDS": str(SHARDS),
    "TASKWARDEN_LEASE_DURATION_SECONDS": "6",
    "TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "TASKWARDEN_LEASE_RETRY_SECONDS": "1",
}
"""Short Lease timings, so a failover takes seconds (the chart's defaults: 15 / 10 / 2)."""


@dataclass
class Group:
    """Replicas r0, r1, ... of one sharding group; r0 serves admission for all of them."""

    cluster: controlplane.ControlPlane
    api: client.ApiClient
    operator_namespace: str
    workdir: Path
    name: str = field(default_factory=lambda: f"tw-{uuid.uuid4().hex[:8]}")
    replicas: dict[str, h.OperatorProcess] = field(default_factory=dict)
    admission_port: int = field(default_factory=controlplane.free_port)

    def start(self, *ids: str) -> None:
        ids = tuple(i for i in ids if i not in self.live())  # one process per identity
        for rid in ids:
            d = self.workdir / rid
            d.mkdir(exist_ok=True)
            env = dict(os.environ, TASKWARDEN_PEERING=self.name, TASKWARDEN_REPLICA_ID=rid, **LEASE)
            op = self.replicas.get(rid) or h.OperatorProcess(
                kubeconfig=self.cluster.kubeconfig,
                workdir=d,
                operator_namespace=self.operator_namespace,
                env=env,
                name=rid,
                webhook_url=f"https://127.0.0.1:{self.admission_port}",
            )
            if rid == "r0":
                op.webhook_port = self.admission_port
            self.replicas[rid] = op
            op.start(wait=False)
        for rid in ids:
            h.wait_for(self.replicas[rid].healthy, timeout=150, what=f"{rid} /healthz")

    def stop_all(self) -> None:
        for op in self.replicas.values():
            op.stop()

    def live(self) -> dict[str, h.OperatorProcess]:
        return {k: v for k, v in self.replicas.items() if v.proc and v.proc.poll() is None}

    def owned(self) -> dict[str, float]:
        return {k: op.metric("taskwarden_shards_owned") for k, op in self.live().items()}

    def wait_balanced(self, ids: Iterable[str], timeout: float = 40) -> dict[str, float]:
        """Until exactly `ids` own shards, each of them some, and all of them together."""
        want = set(ids)

        def check() -> dict[str, float] | None:
            got = self.owned()
            holders = {k for k, v in got.items() if v > 0}
            return got if holders == want and sum(got.values()) == SHARDS else None

        return h.wait_for(check, timeout=timeout, interval=0.5, what=f"shards over {want}")

    def holders(self) -> dict[str, str]:
        """Shard slot -> holderIdentity of its Lease, as the API server has it."""
        leases = client.CoordinationV1Api(self.api).list_namespaced_lease(
            self.operator_namespace, label_selector=f"taskwarden.dev/sharding-group={self.name}"
        )
        prefix = f"{self.name}-shard-"
        return {
            lease.metadata.name[len(prefix) :]: lease.spec.holder_identity or ""
            for lease in leases.items
            if lease.metadata.name.startswith(prefix)
        }

    def issued(self) -> dict[tuple[str, str], list[tuple[str, str]]]:
        """(namespace, task) -> [(replica, jti)] for every credential any replica issued."""
        out: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for rid, op in self.replicas.items():
            for line in op.log.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                rec = json.loads(line)
                if rec.get("event") in ("issued", "rotated", "reissued") and rec.get("jti"):
                    key = (rec["namespace"], rec["name"])
                    out.setdefault(key, []).append((rid, rec["jti"]))
        return out


def namespaces_for(
    api: client.ApiClient, members: Iterable[str], per_member: int, role: str
) -> dict[str, list[str]]:
    """Fresh agent namespaces, `per_member` of them desired-owned by each member (by the ring),
    each with a Running agent pod and the default AgentPolicy."""
    members = sorted(members)
    owners = ring.assignment(members, [ring.slot_name(i) for i in range(SHARDS)])
    out: dict[str, list[str]] = {m: [] for m in members}
    for _ in itertools.count():
        if all(len(v) >= per_member for v in out.values()):
            break
        ns = f"sh-{uuid.uuid4().hex[:8]}"
        m = owners[ring.slot_name(ring.shard_of(ns, SHARDS))]
        assert m is not None
        if len(out[m]) < per_member:
            out[m].append(ns)
    for nss in out.values():
        for ns in nss:
            h.agent_namespace(api, ns, role)
            h.agent_env(api, ns)
    return out


def delete_namespaces(api: client.ApiClient, nss: Iterable[str]) -> None:
    for ns in nss:
        try:
            client.CoreV1Api(api).delete_namespace(ns)
        except client.ApiException:
            pass


def agent(api: client.ApiClient, ns: str) -> client.ApiClient:
    return h.as_user(api, f"system:serviceaccount:{ns}:agent")


def settled(
    api: client.ApiClient, tasks: dict[tuple[str, str], bool]
) -> list[dict[str, Any]] | None:
    """All `tasks` ((ns, name) -> completed?) Completed or Active as asked, else None."""
    out = []
    for ns in sorted({k[0] for k in tasks}):
        items = h.custom(api).list_namespaced_custom_object(h.GROUP, h.VERSION, ns, "agenttasks")
        for t in items["items"]:
            key = (ns, t["metadata"]["name"])
            if key not in tasks:
                continue
            phase = (t.get("status") or {}).get("phase")
            if phase != ("Completed" if tasks[key] else "Active"):
                return None
            out.append(t)
    return out if len(out) == len(tasks) else None


def ledger_entries(api: client.ApiClient, operator_ns: str) -> list[ledger.Entry]:
    core = client.CoreV1Api(api)
    out: list[ledger.Entry] = []
    for cm in core.list_namespaced_config_map(
        operator_ns, label_selector="taskwarden.dev/ledger=true"
    ).items:
        good, _ = ledger.entries(cm.data or {})
        out += good
    return out


def assert_nothing_leaked(
    api: client.ApiClient, operator_ns: str, group: Group, tasks: list[dict[str, Any]]
) -> None:
    """No Secret or unlisted jti for a terminal task; no task with two live tokens (audit
    lines of every replica, the ledger, status and the Secret agree); Active ones verify."""
    issued = group.issued()
    revoked = h.revoked_jtis(api, operator_ns)
    jwks = h.jwks(api, operator_ns)
    core = client.CoreV1Api(api)
    by_uid: dict[str, list[ledger.Entry]] = {}
    for e in ledger_entries(api, operator_ns):
        by_uid.setdefault(e.uid, []).append(e)
    secrets: dict[tuple[str, str], Any] = {}
    for ns in {t["metadata"]["namespace"] for t in tasks}:
        for s in core.list_namespaced_secret(ns, label_selector="taskwarden.dev/task").items:
            secrets[(ns, s.metadata.name)] = s
    now = time.time()
    for t in tasks:
        ns, name, st = t["metadata"]["namespace"], t["metadata"]["name"], t["status"]
        jtis = {j for _, j in issued.get((ns, name), [])}
        in_ledger = {e.jti for e in by_uid.get(t["metadata"]["uid"], [])}
        secret = secrets.get((ns, f"{name}-credential"))
        if st["phase"] in TERMINAL:
            assert secret is None, f"{ns}/{name} is {st['phase']} but its Secret survived"
            assert (jtis | in_ledger) <= revoked, f"{ns}/{name}: unlisted jti after {st['phase']}"
            continue
        current = st["credential"]["jti"]
        assert secret is not None, f"{ns}/{name} Active without a Secret"
        assert secret.metadata.annotations["taskwarden.dev/jti"] == current
        claims = tokens.verify(h.token_of(secret), jwks, now=now, revoked=revoked)
        assert claims["jti"] == current
        live = (jtis | in_ledger) - revoked
        assert live == {current}, f"{ns}/{name} has live tokens {live}, current {current}"


def owners_by_namespace(nss: dict[str, list[str]]) -> Iterator[tuple[str, str]]:
    for m, lst in nss.items():
        for ns in lst:
            yield ns, m
