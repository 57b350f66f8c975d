"""Credential backends: issuance and revocation latency with the PostgreSQL backend next to the
JWT-only default, in the same run, against the real control plane and a real PostgreSQL 15 on
loopback (tests/integration/postgres_server.py).

- issuance: the create call returned -> the credential Secret seen by a watch (status Active
  is written before it). For postgres that includes CREATE ROLE, COMMENT and the GRANTs.
- revocation: the completion patch returned -> phase Completed seen by a watch. The operator
  writes Completed only after revocation: Secret deleted and jti listed, and for postgres the
  role's sessions terminated and the role dropped (tasks/revoke.py runs them concurrently).
- backend: the in-process time of the backend's own issue and revoke calls
  (taskwarden_backend_operation_duration_seconds, mean over the run).

Tasks go one at a time, alternating JWT and postgres so both see the same machine noise.
Repeated; medians of the per-run p50 and p99 are reported.

Run: .venv/bin/python bench/backends.py [--tasks 30] [--repeat 3]
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from typing import Any

from kubernetes import client

from common import OP_NS, Observer, environment, h, machine, median, pct

pg_server = importlib.import_module("tests.integration.postgres_server")  # after common's path

ORDERS = "db:sales/schema:public/table:orders"
AUD = "postgres://sales"


def setup(api: client.ApiClient, pg: Any, admin_pw: str) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        OP_NS,
        {
            "metadata": {"name": "pg-sales", "labels": {"taskwarden.dev/backend": "postgres"}},
            "stringData": {
                "host": "127.0.0.1",
                "port": str(pg.port),
                "user": pg_server.ADMIN,
                "password": admin_pw,
                "sslmode": "disable",
            },
        },
    )
    for ns in ("jwt", "pg"):
        h.agent_namespace(api, ns)
        h.pod(api, ns, "agent-0", "agent")
    h.create(api, "jwt", "agentpolicies", h.policy_body())
    pol = h.policy_body(tool="postgres", actions=("select",), resources=(ORDERS,), audiences=(AUD,))
    pol["spec"]["rules"][0]["backend"] = {"name": "postgres", "secretRef": "pg-sales"}
    h.create(api, "pg", "agentpolicies", pol)


def body(ns: str, name: str) -> dict:
    if ns == "jwt":
        return h.task_body(name, ttl="1h", credential_ttl="10m")
    return h.task_body(
        name,
        tool="postgres",
        actions=("select",),
        resources=(ORDERS,),
        audiences=(AUD,),
        ttl="1h",
        credential_ttl="10m",
    )


def wait(pred, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.002)


def one_run(api: client.ApiClient, obs: dict[str, Observer], run: int, n: int) -> dict:
    issue: dict[str, list[float]] = {"jwt": [], "pg": []}
    revoke: dict[str, list[float]] = {"jwt": [], "pg": []}
    for i in range(n):
        for ns in ("jwt", "pg") if i % 2 == 0 else ("pg", "jwt"):
            name = f"r{run}-{i}"
            h.create_task(api, ns, body(ns, name))
            t0 = time.monotonic()
            wait(lambda ns=ns, name=name: f"{name}-credential" in obs[ns].secret_added)
            issue[ns].append(obs[ns].secret_added[f"{name}-credential"] - t0)
            h.patch(api, ns, "agenttasks", name, {"spec": {"completed": True}})
            t1 = time.monotonic()
            wait(lambda ns=ns, name=name: (name, "Completed") in obs[ns].phase_at)
            revoke[ns].append(obs[ns].phase_at[(name, "Completed")] - t1)
    return {
        f"{kind}_{ns}_{p}": pct(vals[ns], p) * 1000
        for kind, vals in (("issue", issue), ("revoke", revoke))
        for ns in ("jwt", "pg")
        for p in (50, 99)
    }


def backend_means(op: h.OperatorProcess) -> dict[str, float]:
    out = {}
    for operation in ("issue", "revoke"):
        labels = {"backend": "postgres", "operation": operation}
        total = op.metric("taskwarden_backend_operation_duration_seconds_sum", **labels)
        count = op.metric("taskwarden_backend_operation_duration_seconds_count", **labels)
        out[f"backend_{operation}_mean_ms"] = total / count * 1000 if count else float("nan")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    pg = pg_server.PostgresServer()
    pg.start()
    try:
        admin_pw = pg_server.seed(pg)
        with environment() as (_cp, api, op):
            setup(api, pg, admin_pw)
            obs = {ns: Observer(api, ns) for ns in ("jwt", "pg")}
            # warm-up: first connections, first policy parse
            one_run(api, obs, 99, 2)
            runs = [one_run(api, obs, r, args.tasks) for r in range(args.repeat)]
            for o in obs.values():
                o.stop()
            result = {
                "machine": machine() + " (shared with ~6 agents' builds and tests)",
                "tasks_per_backend_per_run": args.tasks,
                "runs": args.repeat,
                **{k: round(median([r[k] for r in runs]), 1) for k in runs[0]},
                **{k: round(v, 1) for k, v in backend_means(op).items()},
            }
            for kind in ("issue", "revoke"):
                for p in (50, 99):
                    jwt = result[f"{kind}_jwt_{p}"]
                    result[f"{kind}_ratio_p{p}"] = round(result[f"{kind}_pg_{p}"] / jwt, 2)
            print(json.dumps(result, indent=1), flush=True)
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
