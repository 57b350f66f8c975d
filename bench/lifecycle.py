"""Lifecycle benchmarks on a real local control plane:
- revocation lag over 500 tasks: spec.completed=true -> Secret gone AND jti listed; and
  status.expiresAt -> Secret gone (expiry);
- operator RSS with 1,000 and 10,000 live tasks;
- start-up resync time with 10,000 live tasks (process start -> every task reconciled).

Run: .venv/bin/python bench/lifecycle.py [--lag-tasks 500] [--live 1000,10000]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client

from common import Observer, environment, h, machine, pct, rss_mib
from taskwarden import timeutil


def policy(api: client.ApiClient, ns: str) -> None:
    body = h.policy_body(max_ttl="2h")
    body["spec"]["maxCredentialTTL"] = "2h"
    h.create(api, ns, "agentpolicies", body)


def create_many(
    api: client.ApiClient, ns: str, names: list[str], conc: int = 16, **task: object
) -> float:
    agent = client.CustomObjectsApi(h.as_user(api, f"system:serviceaccount:{ns}:agent"))
    t0 = time.monotonic()

    def one(n: str) -> None:
        for attempt in range(5):
            try:
                agent.create_namespaced_custom_object(
                    "taskwarden.dev",
                    "v1alpha1",
                    ns,
                    "agenttasks",
                    h.task_body(n, **task),  # type: ignore[arg-type]
                )
                return
            except client.ApiException as e:
                if e.status == 409:
                    return
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not create {n}")

    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, names))
    return time.monotonic() - t0


def wait_all(obs: Observer, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(n in obs.active and f"{n}-credential" in obs.secret_added for n in names):
            return
        time.sleep(0.05)
    missing = [n for n in names if n not in obs.active]
    raise RuntimeError(f"{len(missing)} tasks not Active in {timeout}s")


def lag_completion(
    api: client.ApiClient, obs: Observer, ns: str, n: int, rate: float | None = None
) -> list[float]:
    """rate None: 20 agents complete at once, as fast as the apiserver accepts (a burst that
    saturates 2 shared cores); rate r: one completion every 1/r seconds (sustained load)."""
    prefix = "done" if rate is None else f"paced{int(rate)}"
    names = [f"{prefix}-{i}" for i in range(n)]
    create_many(api, ns, names, ttl="1h", credential_ttl="1h")
    wait_all(obs, names, 300)
    custom = client.CustomObjectsApi(api)
    jtis = {
        t["metadata"]["name"]: t["status"]["credential"]["jti"]
        for t in custom.list_namespaced_custom_object(
            "taskwarden.dev", "v1alpha1", ns, "agenttasks"
        )["items"]
        if t["metadata"]["name"] in set(names)
    }
    marks: dict[str, float] = {}
    patch_times: list[float] = []
    lock = threading.Lock()
    agent = client.CustomObjectsApi(h.as_user(api, f"system:serviceaccount:{ns}:agent"))

    def complete(name: str) -> None:
        t0 = time.monotonic()
        agent.patch_namespaced_custom_object(
            "taskwarden.dev", "v1alpha1", ns, "agenttasks", name, {"spec": {"completed": True}}
        )
        with lock:
            # Lag counts from when the change is persisted (the patch returned), not from
            # when the request left: admission and apiserver time are not the operator's.
            marks[name] = time.monotonic()
            patch_times.append(marks[name] - t0)

    if rate is None:
        with ThreadPoolExecutor(20) as pool:
            list(pool.map(complete, names))
    else:
        with ThreadPoolExecutor(8) as pool:
            start = time.monotonic()
            for i, name in enumerate(names):
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                pool.submit(complete, name)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not all(
        f"{n}-credential" in obs.secret_deleted and jtis[n] in obs.jti_listed for n in names
    ):
        time.sleep(0.05)
    done = [
        n for n in names if f"{n}-credential" in obs.secret_deleted and jtis[n] in obs.jti_listed
    ]
    print(
        json.dumps(
            {
                "secret_gone_p50_ms": pct(
                    [obs.secret_deleted[f"{n}-credential"] - marks[n] for n in done], 50
                )
                * 1000,
                "jti_listed_p50_ms": pct([obs.jti_listed[jtis[n]] - marks[n] for n in done], 50)
                * 1000,
                "patch_call_p50_ms": pct(patch_times, 50) * 1000,
                "completed_phase_p50_ms": pct(
                    [
                        obs.phase_at[(n, "Completed")] - marks[n]
                        for n in done
                        if (n, "Completed") in obs.phase_at
                    ],
                    50,
                )
                * 1000,
            }
        ),
        flush=True,
    )
    return [
        max(obs.secret_deleted[f"{n}-credential"], obs.jti_listed[jtis[n]]) - marks[n]
        for n in names
        if f"{n}-credential" in obs.secret_deleted and jtis[n] in obs.jti_listed
    ]


def lag_expiry(api: client.ApiClient, obs: Observer, ns: str, n: int) -> list[float]:
    """All n tasks expire within the same few seconds: the worst case for a scheduler."""
    names = [f"exp-{i}" for i in range(n)]
    create_many(api, ns, names, ttl="40s", credential_ttl="40s")
    wait_all(obs, names, 120)
    custom = client.CustomObjectsApi(api)
    expires = {}
    for t in custom.list_namespaced_custom_object("taskwarden.dev", "v1alpha1", ns, "agenttasks")[
        "items"
    ]:
        if t["metadata"]["name"] in set(names):
            expires[t["metadata"]["name"]] = timeutil.parse(t["status"]["expiresAt"])
    # Translate wall-clock expiry into the observer's monotonic clock.
    offset = time.time() - time.monotonic()
    deadline = time.monotonic() + max(expires.values()) - time.time() + 60
    while time.monotonic() < deadline and not all(
        f"{n}-credential" in obs.secret_deleted for n in names
    ):
        time.sleep(0.1)
    return [
        obs.secret_deleted[f"{n}-credential"] + offset - expires[n]
        for n in names
        if f"{n}-credential" in obs.secret_deleted
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lag-tasks", type=int, default=500)
    ap.add_argument("--live", default="1000,10000")
    ap.add_argument("--skip-lag", action="store_true")
    ap.add_argument("--paced", type=float, default=20.0, help="completions/s for the paced run")
    args = ap.parse_args()
    results: dict[str, object] = {"machine": machine()}
    with environment() as (_cp, api, op):
        ns = "bench"
        h.agent_namespace(api, ns)
        h.pod(api, ns, "agent-0", "agent")
        policy(api, ns)
        obs = Observer(api, ns)
        if not args.skip_lag:
            lags = lag_completion(api, obs, ns, args.lag_tasks)
            plags = lag_completion(api, obs, ns, args.lag_tasks, rate=args.paced)
            results[f"completion_lag_paced_{int(args.paced)}_per_s"] = {
                "n": len(plags),
                "p50_ms": pct(plags, 50) * 1000,
                "p99_ms": pct(plags, 99) * 1000,
                "max_ms": max(plags) * 1000,
            }
            results["completion_lag_burst"] = {
                "n": len(lags),
                "p50_ms": pct(lags, 50) * 1000,
                "p99_ms": pct(lags, 99) * 1000,
                "max_ms": max(lags) * 1000,
            }
            print(json.dumps(results), flush=True)
            elags = lag_expiry(api, obs, ns, args.lag_tasks)
            results["expiry_lag"] = {
                "n": len(elags),
                "p50_ms": pct(elags, 50) * 1000,
                "p99_ms": pct(elags, 99) * 1000,
                "max_ms": max(elags) * 1000,
                "min_ms": min(elags) * 1000,
            }
            print(json.dumps(results), flush=True)
        obs.stop()
        assert op.proc is not None
        live_total = 0
        for target in [int(x) for x in args.live.split(",")]:
            lns = f"live-{target}"
            h.agent_namespace(api, lns)
            h.pod(api, lns, "agent-0", "agent")
            policy(api, lns)
            names = [f"t-{i}" for i in range(target - live_total)]
            created_in = create_many(api, lns, names, conc=24, ttl="2h", credential_ttl="2h")
            live_total = target
            deadline = time.monotonic() + 900
            while (
                time.monotonic() < deadline and op.metric("taskwarden_active_credentials") < target
            ):
                time.sleep(1)
            time.sleep(5)
            results[f"rss_{target}_mib"] = rss_mib(op.proc.pid)
            results[f"create_{target}_s"] = created_in
            results[f"active_{target}"] = op.metric("taskwarden_active_credentials")
            print(json.dumps(results), flush=True)
        # Start-up resync: a fresh process must reconcile every live task.
        op.stop()
        t0 = time.monotonic()
        op.start(wait=False)
        deadline = time.monotonic() + 300
        seen = 0.0
        while time.monotonic() < deadline:
            try:
                seen = op.metric("taskwarden_live_tasks")
            except OSError:
                seen = 0
            if seen >= live_total:
                break
            time.sleep(0.2)
        results["resync_s"] = time.monotonic() - t0
        results["resync_tasks"] = seen
        time.sleep(3)
        results["rss_after_resync_mib"] = rss_mib(op.proc.pid)
        results["reissued_on_resync"] = op.metric(
            "taskwarden_credentials_issued_total", kind="reissue"
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
