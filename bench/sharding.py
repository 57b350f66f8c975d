"""Sharding benchmarks on a real local control plane, three `taskwarden run` replicas of one
sharding group (sharding/; r0 also serves admission for all of them):

- issuance throughput with 1 and with 3 replicas, in one run, alternating (1, 3, 1, 3):
  a burst of tasks created by 16 agents at once -> every one Active;
- failover time: SIGKILL of r1 -> the tasks of r1's shards reconciled by the survivors (new
  tasks created and existing ones completed in r1's namespaces right after the kill), with the
  chart's Lease timings (15 s / 10 s / 2 s) unless --lease says otherwise;
- RSS per replica with N live tasks split three ways, and of one replica holding all of them.

Run: .venv/bin/python bench/sharding.py [--burst 300] [--live 6000] [--lease 15,10,2]
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client

from common import OP_NS, ROOT, h, machine, median, rss_mib
from taskwarden import controlplane

# After common, which puts the repository root on sys.path.
sh = importlib.import_module("tests.integration.shard_support")


def setup(workdir: Path) -> tuple[controlplane.ControlPlane, client.ApiClient]:
    cp = controlplane.start(workdir / "cp")
    api = cp.api_client()
    api.configuration.connection_pool_maxsize = 64
    controlplane.install_crds(api, ROOT / "crds")
    client.CoreV1Api(api).create_namespace({"metadata": {"name": OP_NS}})
    client.RbacAuthorizationV1Api(api).create_cluster_role(
        {
            "metadata": {"name": "taskwarden:agent"},
            "rules": [
                {
                    "apiGroups": ["taskwarden.dev"],
                    "resources": ["agenttasks"],
                    "verbs": ["create", "get", "list", "watch", "patch", "update"],
                }
            ],
        }
    )
    return cp, api


def create(api: client.ApiClient, keys: list[tuple[str, str]], conc: int = 16) -> None:
    def one(key: tuple[str, str]) -> None:
        for attempt in range(5):
            try:
                h.create(
                    sh.agent(api, key[0]),
                    key[0],
                    "agenttasks",
                    h.task_body(key[1]),
                )
                return
            except client.ApiException as e:
                if e.status == 409:
                    return
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not create {key}")

    with ThreadPoolExecutor(conc) as pool:
        list(pool.map(one, keys))


def wait(api: client.ApiClient, tasks: dict[tuple[str, str], bool], timeout: float) -> float:
    h.wait_for(lambda: sh.settled(api, tasks), timeout=timeout, interval=0.25, what="settled")
    return time.monotonic()


def burst(api: client.ApiClient, nss: list[str], tag: str, n: int) -> float:
    keys = [(nss[i % len(nss)], f"{tag}-{i:05d}") for i in range(n)]
    t0 = time.monotonic()
    create(api, keys)
    done = wait(api, dict.fromkeys(keys, False), timeout=600)
    return n / (done - t0)


def takeover(g: object, wall_kill: float) -> str:
    """From the survivors' logs: when they gained r1's shards, and how long the resync took."""
    import datetime as dt
    import re

    gained, resync = [], []
    for rid in ("r0", "r2"):
        log = g.replicas[rid].log  # type: ignore[attr-defined]
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"(\S+ \S+) INFO taskwarden\.(\S+): (.*)", line)
            if not m:
                continue
            t = dt.datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            if t < wall_kill:
                continue
            if m[3].startswith("shards gained"):
                gained.append(t - wall_kill)
            r = re.search(r"resynced in ([0-9.]+)s", m[3])
            if r:
                resync.append(float(r[1]))
    return (
        f"survivors gained r1's shards {', '.join(f'{x:.1f}' for x in gained)} s after the "
        f"kill; their resyncs took {', '.join(f'{x:.1f}' for x in resync)} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--burst", type=int, default=300)
    ap.add_argument("--live", type=int, default=6000)
    ap.add_argument("--lease", default="15,10,2")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--phases", default="throughput,failover,memory")
    args = ap.parse_args()
    dur, renew, retry = args.lease.split(",")
    sh.LEASE.update(
        TASKWARDEN_LEASE_DURATION_SECONDS=dur,
        TASKWARDEN_LEASE_RENEW_DEADLINE_SECONDS=renew,
        TASKWARDEN_LEASE_RETRY_SECONDS=retry,
    )
    print(machine(), "(2 cores shared with other agents' work)")
    workdir = Path(tempfile.mkdtemp(prefix="taskwarden-bench-sharding-"))
    cp, api = setup(workdir)
    g = sh.Group(cp, api, OP_NS, workdir)
    members = ("r0", "r1", "r2")
    try:
        g.start("r0")
        g.wait_balanced(["r0"], timeout=60)
        nss_by = sh.namespaces_for(api, members, per_member=2, role="taskwarden:agent")
        nss = [ns for ns, _ in sh.owners_by_namespace(nss_by)]

        # ---- throughput, 1 and 3 replicas alternating
        rates: dict[int, list[float]] = {1: [], 3: []}
        for rep in range(args.repeats if "throughput" in args.phases else 0):
            for n_rep in (1, 3):
                if n_rep == 3:
                    g.start("r1", "r2")
                    g.wait_balanced(members, timeout=90)
                else:
                    for rid in ("r1", "r2"):
                        if rid in g.live():
                            g.replicas[rid].stop()
                    g.wait_balanced(["r0"], timeout=90)
                r = burst(api, nss, f"tp{n_rep}-{rep}", args.burst)
                rates[n_rep].append(r)
                print(
                    f"throughput {n_rep} replica(s), run {rep}: {r:.1f} tasks/s "
                    f"({args.burst} tasks)",
                    flush=True,
                )
        if rates[1]:
            print(
                f"throughput median: 1 replica {median(rates[1]):.1f}/s, 3 replicas "
                f"{median(rates[3]):.1f}/s, ratio {median(rates[3]) / median(rates[1]):.2f}"
            )

        # ---- failover
        times: list[float] = []
        for rep in range(args.repeats if "failover" in args.phases else 0):
            g.start("r1", "r2")
            g.wait_balanced(members, timeout=90)
            r1_ns = nss_by["r1"]
            existing = [(ns, f"fo-live-{rep}-{i}") for ns in r1_ns for i in range(10)]
            create(api, existing)
            wait(api, dict.fromkeys(existing, False), timeout=120)
            fresh = [(ns, f"fo-new-{rep}-{i}") for ns in r1_ns for i in range(10)]
            g.replicas["r1"].kill()
            t_kill, wall_kill = time.monotonic(), time.time()
            with ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(
                        lambda k: h.patch(
                            sh.agent(api, k[0]),
                            k[0],
                            "agenttasks",
                            k[1],
                            {"spec": {"completed": True}},
                        ),
                        existing,
                    )
                )
            create(api, fresh)
            want = {**dict.fromkeys(existing, True), **dict.fromkeys(fresh, False)}
            done = wait(api, want, timeout=180)
            times.append(done - t_kill)
            print(
                f"failover run {rep}: {done - t_kill:.1f}s from SIGKILL to r1's shards' "
                f"{len(want)} tasks reconciled (lease {args.lease})",
                flush=True,
            )
            g.wait_balanced(("r0", "r2"), timeout=90)
            print("  " + takeover(g, wall_kill), flush=True)
        print(f"failover median {median(times):.1f}s")

        # ---- memory with N live tasks split three ways
        if "memory" not in args.phases:
            return
        g.start("r1", "r2")
        g.wait_balanced(members, timeout=90)
        live = [(nss[i % len(nss)], f"live-{i:05d}") for i in range(args.live)]
        for i in range(0, len(live), 1000):
            create(api, live[i : i + 1000], conc=16)
            print(f"created {i + 1000} live tasks", flush=True)
        wait(api, dict.fromkeys(live, False), timeout=1800)
        time.sleep(10)
        per = {rid: rss_mib(op.proc.pid) for rid, op in g.live().items() if op.proc}
        owned = g.owned()
        print(
            f"RSS with {args.live} live tasks over 3 replicas: "
            + ", ".join(f"{k} {v:.0f} MiB ({owned[k]:.0f} shards)" for k, v in per.items())
        )
        for rid in ("r1", "r2"):
            g.replicas[rid].stop()
        g.wait_balanced(["r0"], timeout=120)
        time.sleep(20)  # r0 resyncs the shards it took back
        print(
            f"RSS of r0 alone holding all {args.live}: {rss_mib(g.replicas['r0'].proc.pid):.0f} MiB"
        )  # type: ignore[union-attr]
    finally:
        g.stop_all()
        cp.stop()


if __name__ == "__main__":
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-up in main()
    main()
