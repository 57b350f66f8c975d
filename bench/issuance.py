"""Issuance latency: AgentTask created -> Secret present and status Active, for 200 tasks at
concurrency 1 and 20, against the floor measured in the same run with the same client
(create an equivalent credential Secret + patch an AgentTask status of the same shape).
Repeated; medians reported.

Run: .venv/bin/python bench/issuance.py [--tasks 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client

from common import Observer, environment, h, machine, median, pct

FLOOR_NS = "floor"
FLOOR_TASKS = 32


def setup_namespace(api: client.ApiClient, ns: str) -> None:
    h.agent_namespace(api, ns)
    h.pod(api, ns, "agent-0", "agent")
    h.create(api, ns, "agentpolicies", h.policy_body())
    # The floor writes to real AgentTasks (same CRD, same validation), in a namespace without a
    # policy: the operator denies them once and then has nothing to do with them.
    h.agent_namespace(api, FLOOR_NS)
    for i in range(FLOOR_TASKS):
        h.create_task(api, FLOOR_NS, h.task_body(f"floor-{i}"))
    for i in range(FLOOR_TASKS):
        h.wait_phase(api, FLOOR_NS, f"floor-{i}", "Denied")


def _floor_status(i: int) -> dict:
    """A status of the same shape and size as an issued task's."""
    t = "2026-01-01T00:00:00Z"
    cond = {"status": "True", "reason": "Issued", "message": "x" * 120, "lastTransitionTime": t}
    return {
        "status": {
            "message": "credential issued under policy agents rule 0, valid until " + t,
            "identity": {
                "spiffeID": "spiffe://cluster.local/ns/bench/sa/agent",
                "podName": "agent-0",
                "podUID": "9b2d5c1e-0000-4000-8000-000000000000",
                "nodeName": None,
            },
            "decision": {
                "allowed": True,
                "needsApproval": False,
                "policy": "agents",
                "rule": 0,
                "reason": "Allowed: allowed by rule 0 of policy agents",
                "evaluatedAt": t,
            },
            "credential": {
                "secretName": f"floor-{i}-credential",
                "jti": secrets.token_urlsafe(16),
                "keyID": "k" * 43,
                "issuedAt": t,
                "expiresAt": t,
                "rotations": 0,
            },
            "expiresAt": t,
            "specHash": "sha256:" + "0" * 64,
            "conditions": [{"type": c, **cond} for c in ("Ready", "IdentityVerified")],
            "history": [{"time": t, "phase": "Active", "reason": "Issued"}],
            "observedGeneration": i,
        }
    }


def floor(api: client.ApiClient, ns: str, n: int, conc: int, run: int) -> tuple[list[float], float]:
    """The same two writes an issuance makes, from the same client: an equivalent credential
    Secret (owner reference, labels, annotations, same data sizes) and an AgentTask status."""
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    token = base64.b64encode(secrets.token_bytes(700)).decode()
    owners = {
        t["metadata"]["name"]: t["metadata"]["uid"]
        for t in custom.list_namespaced_custom_object(
            "taskwarden.dev", "v1alpha1", FLOOR_NS, "agenttasks"
        )["items"]
    }
    lat: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        task = f"floor-{i % FLOOR_TASKS}"
        body = {
            "metadata": {
                "name": f"floor-{run}-{conc}-{i}",
                "labels": {"taskwarden.dev/task": task, "app.kubernetes.io/managed-by": "bench"},
                "annotations": {
                    "taskwarden.dev/jti": secrets.token_urlsafe(16),
                    "taskwarden.dev/expires-at": "2026-01-01T00:00:00Z",
                },
                "ownerReferences": [
                    {
                        "apiVersion": "taskwarden.dev/v1alpha1",
                        "kind": "AgentTask",
                        "name": task,
                        "uid": owners[task],
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "type": "taskwarden.dev/credential",
            "data": {
                "token": token,
                "expires_at": token[:28],
                "spiffe_id": token[:60],
                "jwks.json": token[:300],
            },
        }
        t0 = time.monotonic()
        core.create_namespaced_secret(FLOOR_NS, body)
        custom.patch_namespaced_custom_object_status(
            "taskwarden.dev", "v1alpha1", FLOOR_NS, "agenttasks", task, _floor_status(i)
        )
        with lock:
            lat.append(time.monotonic() - t0)

    t0 = time.monotonic()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, range(n)))
    return lat, n / (time.monotonic() - t0)


def issuance(
    api: client.ApiClient,
    obs: Observer,
    ns: str,
    n: int,
    conc: int,
    run: int,
    creates: list[float] | None = None,
) -> tuple[list[float], float]:
    agent = h.as_user(api, f"system:serviceaccount:{ns}:agent")
    custom = client.CustomObjectsApi(agent)
    lat: list[float] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        name = f"c{conc}-r{run}-{i}"
        c0 = time.monotonic()
        custom.create_namespaced_custom_object(
            "taskwarden.dev", "v1alpha1", ns, "agenttasks", h.task_body(name)
        )
        t0 = time.monotonic()
        if creates is not None:
            with lock:
                creates.append(t0 - c0)
        deadline = t0 + 30
        while time.monotonic() < deadline:
            a, s = obs.active.get(name), obs.secret_added.get(f"{name}-credential")
            if a and s:
                with lock:
                    lat.append(max(a, s) - t0)
                return
            time.sleep(0.0005)
        raise RuntimeError(f"{name} not issued in 30s")

    t0 = time.monotonic()
    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, range(n)))
    return lat, n / (time.monotonic() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rows: dict[int, list[dict[str, float]]] = {1: [], 20: []}
    with environment() as (_cp, api, op):
        ns = "bench"
        setup_namespace(api, ns)
        obs = Observer(api, ns)
        # Warm-up: connections, caches, first key use.
        issuance(api, obs, ns, 20, 4, 99)
        floor(api, ns, 20, 4, 99)
        for run in range(args.repeat):
            for conc in (1, 20):
                fl, fl_tp = floor(api, ns, args.tasks, conc, run)
                creates: list[float] = []
                s0 = op.metric("taskwarden_issuance_duration_seconds_sum")
                c0 = op.metric("taskwarden_issuance_duration_seconds_count")
                il, il_tp = issuance(api, obs, ns, args.tasks, conc, run, creates)
                in_op_mean = (op.metric("taskwarden_issuance_duration_seconds_sum") - s0) / max(
                    1, op.metric("taskwarden_issuance_duration_seconds_count") - c0
                )
                rows[conc].append(
                    {
                        "create_p50": pct(creates, 50),
                        "in_operator_mean": in_op_mean,
                        "floor_p50": pct(fl, 50),
                        "floor_p99": pct(fl, 99),
                        "floor_tp": fl_tp,
                        "iss_p50": pct(il, 50),
                        "iss_p99": pct(il, 99),
                        "iss_tp": il_tp,
                    }
                )
                print(json.dumps({"run": run, "conc": conc, **rows[conc][-1]}), flush=True)
        obs.stop()
        in_op = op.metric("taskwarden_issuance_duration_seconds_sum") / max(
            1, op.metric("taskwarden_issuance_duration_seconds_count")
        )
    print(f"\nMachine: {machine()}")
    print(f"Tasks per run: {args.tasks}; runs: {args.repeat}; medians of runs.")
    print(f"In-operator issuance time (event -> Secret written), mean: {in_op * 1000:.1f} ms\n")
    print(
        "| concurrency | floor p50 | floor p99 | issuance p50 | issuance p99 | p50 ratio | "
        "p99 ratio | floor tput | issuance tput | tput ratio | task create p50 | in-operator mean |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for conc, rs in rows.items():
        m = {k: median([r[k] for r in rs]) for k in rs[0]}
        print(
            f"| {conc} | {m['floor_p50'] * 1000:.1f} ms | {m['floor_p99'] * 1000:.1f} ms | "
            f"{m['iss_p50'] * 1000:.1f} ms | {m['iss_p99'] * 1000:.1f} ms | "
            f"{m['iss_p50'] / m['floor_p50']:.2f}x | {m['iss_p99'] / m['floor_p99']:.2f}x | "
            f"{m['floor_tp']:.0f}/s | {m['iss_tp']:.0f}/s | {m['iss_tp'] / m['floor_tp']:.0%} | "
            f"{m['create_p50'] * 1000:.1f} ms | {m['in_operator_mean'] * 1000:.1f} ms |"
        )


if __name__ == "__main__":
    main()
